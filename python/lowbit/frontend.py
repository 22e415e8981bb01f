"""Builds the entry IR of an operator: one `func.func` holding one lowbit op, from a config."""
from __future__ import annotations

from typing import Optional

from mlir import ir
from mlir.dialects import func

from lowbit import dialects
from lowbit.config import FlashAttenConfig, MatmulConfig
from lowbit.shapes import DYNAMIC, attention_shapes, matmul_shapes

MATMUL_FUNC = "lowbit_matmul"
ATTENTION_FUNC = "lowbit_attention"


def _elem(dtype: str) -> ir.Type:
    return {
        "float16": ir.F16Type.get,
        "float32": ir.F32Type.get,
        "int8": lambda: ir.IntegerType.get_signless(8),
        "int32": lambda: ir.IntegerType.get_signless(32),
    }[dtype]()


def _memref(shape, dtype: str) -> ir.MemRefType:
    dims = [ir.ShapedType.get_dynamic_size() if d is DYNAMIC else d for d in shape]
    return ir.MemRefType.get(dims, _elem(dtype))


def _single_op_module(ctx: ir.Context, name: str, shapes: dict, build) -> ir.Module:
    with ctx, ir.Location.unknown():
        module = ir.Module.create()
        with ir.InsertionPoint(module.body):
            types = [_memref(shape, dtype) for shape, dtype in shapes.values()]
            f = func.FuncOp(name, (types, []))
            f.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
            entry = f.add_entry_block()
            with ir.InsertionPoint(entry):
                build(dict(zip(shapes, entry.arguments)))
                func.ReturnOp([])
        module.operation.verify()
        return module


def matmul_module(cfg: MatmulConfig, ctx: ir.Context, schedule: Optional[dict] = None) -> ir.Module:
    """`func.func @lowbit_matmul(a, w, [scale], [zeros], [bias], out)` holding one lowbit.matmul."""

    def build(args):
        dialects.matmul(args["a"], args["w"], args["out"], cfg.as_dict(), scale=args.get("scale"),
                        zeros=args.get("zeros"), bias=args.get("bias"), schedule=schedule)

    return _single_op_module(ctx, MATMUL_FUNC, matmul_shapes(cfg), build)


def attention_module(cfg: FlashAttenConfig, ctx: ir.Context, schedule: Optional[dict] = None) -> ir.Module:
    """`func.func @lowbit_attention(q, k, v, out)` holding one lowbit.attention."""

    def build(args):
        dialects.attention(args["q"], args["k"], args["v"], args["out"], cfg.as_dict(), schedule=schedule)

    return _single_op_module(ctx, ATTENTION_FUNC, attention_shapes(cfg), build)
