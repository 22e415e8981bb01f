"""Pass and rewrite-pattern bases (xDSL style): a pass applies small named patterns to matching ops."""
from __future__ import annotations

import hashlib
from typing import ClassVar, Sequence

from mlir import ir
from mlir.dialects import func


class RewritePattern:
    """Rewrites one kind of op; `op_name` selects it, `rewrite` replaces it."""

    op_name: ClassVar[str]

    def rewrite(self, op: ir.Operation, module: ir.Module) -> None:
        raise NotImplementedError


class ModulePass:
    """A pass over a builtin.module, named like an mlir-opt pass for `lowbit-opt`."""

    name: ClassVar[str]
    description: ClassVar[str]
    patterns: ClassVar[Sequence[type]] = ()

    def run(self, module: ir.Module) -> None:
        patterns = {p.op_name: p() for p in self.patterns}
        matches: list[ir.Operation] = []

        def collect(op):
            if op.name in patterns:
                matches.append(op)
            return ir.WalkResult.ADVANCE

        module.operation.walk(collect)
        for op in matches:
            patterns[op.name].rewrite(op, module)


def symbol_suffix(text: str) -> str:
    """A short stable hash for naming generated functions after their contents."""
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def replace_with_call(op: ir.Operation, module: ir.Module, impl: str, impl_name: str, merge_symbols=()) -> None:
    """Adds the top-level ops of `impl` (MLIR text holding a func.func named `impl_name`) to `module`,
    skipping symbols it already has (ops of the symbols in `merge_symbols`, such as a gpu.module, are
    merged into the existing one), and replaces `op` by a call of `impl_name` on the same operands."""
    with op.context, op.location:
        existing = {o.attributes["sym_name"].value: o for o in module.body.operations if "sym_name" in o.attributes}
        if impl_name not in existing:
            parsed = ir.Module.parse(impl)  # must outlive the loop: it owns the ops until they move
            for new in list(parsed.body.operations):
                name = new.attributes["sym_name"].value
                if name not in existing:
                    new.detach_from_parent()
                    module.body.append(new)
                elif name in merge_symbols:
                    have = {o.attributes["sym_name"].value for o in existing[name].regions[0].blocks[0].operations
                            if "sym_name" in o.attributes}
                    for inner in list(new.regions[0].blocks[0].operations):
                        if inner.attributes["sym_name"].value not in have:
                            inner.detach_from_parent()
                            existing[name].regions[0].blocks[0].append(inner)
        with ir.InsertionPoint(op):
            func.CallOp([], ir.FlatSymbolRefAttr.get(impl_name), list(op.operands))
        op.erase()


def _signature(types: dict) -> str:
    return ", ".join(f"%{name}: {ty}" for name, ty in types.items())


def replace_with_func(op: ir.Operation, module: ir.Module, prefix: str, body: str, types: dict) -> None:
    """Replaces `op` by a call of a new private function `prefix_<hash>` whose arguments are `types`
    (operand name -> type, in operand order) and whose body is `body`."""
    name = prefix + symbol_suffix(body)
    replace_with_call(op, module, f"func.func private @{name}({_signature(types)}) {{\n{body}\n  return\n}}", name)


def replace_with_launch(op: ir.Operation, module: ir.Module, prefix: str, launch: str, kernel: str, types: dict,
                        gpu_module: str) -> None:
    """Replaces `op` by a call of a host function `prefix_<hash>` (body `launch`, which holds the
    gpu.launch_func) and adds `kernel` to `gpu.module @gpu_module`, merged with kernels already there."""
    name = prefix + symbol_suffix(launch)
    impl = (f"module attributes {{gpu.container_module}} {{\n"
            f"  func.func private @{name}({_signature(types)}) {{\n{launch}\n    return\n  }}\n"
            f"  gpu.module @{gpu_module} {{\n{kernel}\n  }}\n}}")
    with module.context:
        module.operation.attributes["gpu.container_module"] = ir.UnitAttr.get()
    replace_with_call(op, module, impl, name, merge_symbols=(gpu_module,))

