"""The staged pipeline, each stage a plain function from one IR to the next.

CPU:  lowbit --(lowbit passes)--> loops --(upstream lowering)--> llvm   (run by the ExecutionEngine)
"""
from __future__ import annotations

from typing import Callable

from mlir import ir, passmanager

from lowbit.passes import PASSES

CPU_STAGES = ("lowbit", "loops", "llvm")

LOOPS_PIPELINE = "builtin.module(inline, canonicalize, cse)"
CPU_LLVM_PIPELINE = (
    "builtin.module("
    "convert-vector-to-scf, convert-scf-to-cf, expand-strided-metadata, lower-affine, "
    "convert-vector-to-llvm, convert-math-to-llvm, convert-arith-to-llvm, "
    "finalize-memref-to-llvm, convert-func-to-llvm, convert-cf-to-llvm, "
    "reconcile-unrealized-casts, canonicalize)"
)


class CompileError(RuntimeError):
    """A pipeline stage failed; the message carries the stage, the error and the IR to reproduce it."""


def run_upstream(module: ir.Module, pipeline: str, stage: str) -> None:
    with module.context:
        try:
            passmanager.PassManager.parse(pipeline).run(module.operation)
        except Exception as err:  # MLIRError carries the diagnostics
            raise CompileError(
                f"stage {stage!r} failed: {err}\nreproduce with: lowbit-opt in.mlir --pass-pipeline='{pipeline}'"
            ) from err


def run_lowbit_passes(module: ir.Module, names) -> None:
    for name in names:
        PASSES[name]().run(module)
    try:
        module.operation.verify()
    except Exception as err:
        raise CompileError(f"lowbit passes {list(names)} produced invalid IR: {err}") from err


def to_loops(module: ir.Module) -> ir.Module:
    run_lowbit_passes(module, ["lowbit-lower-matmul-to-loops", "lowbit-lower-attention-to-loops"])
    run_upstream(module, LOOPS_PIPELINE, "loops")
    return module


def loops_to_llvm(module: ir.Module) -> ir.Module:
    run_upstream(module, CPU_LLVM_PIPELINE, "llvm")
    return module


CPU_LOWERINGS: dict[str, Callable[[ir.Module], ir.Module]] = {"loops": to_loops, "llvm": loops_to_llvm}


def lower_cpu(module: ir.Module, until: str = "llvm", dump: Callable[[str, str], None] = None) -> ir.Module:
    """Runs the CPU stages in order up to `until`; `dump(stage, ir_text)` sees each stage's IR."""
    if dump:
        dump("lowbit", str(module))
    for stage in CPU_STAGES[1 : CPU_STAGES.index(until) + 1]:
        module = CPU_LOWERINGS[stage](module)
        if dump:
            dump(stage, str(module))
    return module
