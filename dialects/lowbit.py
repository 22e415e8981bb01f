"""Loading the IRDL definition and building `lowbit.matmul` / `lowbit.attention` ops."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional, Sequence

from mlir import ir
from mlir.dialects import irdl

MATMUL_OP = "lowbit.matmul"
ATTENTION_OP = "lowbit.attention"
MATMUL_OPERANDS = ("a", "w", "scale", "zeros", "bias", "out")
IRDL_PATH = Path(__file__).with_name("lowbit.irdl.mlir")


@functools.lru_cache(maxsize=None)
def _irdl_source() -> str:
    return IRDL_PATH.read_text()


def load_dialect(ctx: ir.Context) -> None:
    """Registers the lowbit dialect (from its IRDL definition) in `ctx`."""
    with ctx, ir.Location.unknown():
        irdl.load_dialects(ir.Module.parse(_irdl_source()))


def make_context() -> ir.Context:
    """A context with every upstream dialect and lowbit loaded; unregistered dialects are errors."""
    ctx = ir.Context()
    ctx.allow_unregistered_dialects = False
    load_dialect(ctx)
    return ctx


def _attr(value) -> ir.Attribute:
    if isinstance(value, bool):
        return ir.BoolAttr.get(value)
    if isinstance(value, int):
        return ir.IntegerAttr.get(ir.IntegerType.get_signless(64), value)
    if isinstance(value, str):
        return ir.StringAttr.get(value)
    if isinstance(value, (tuple, list)):
        return ir.ArrayAttr.get([_attr(v) for v in value])
    raise TypeError(f"no attribute for {value!r}")


def _value(attr: ir.Attribute):
    if isinstance(attr, ir.BoolAttr):
        return attr.value
    if isinstance(attr, ir.IntegerAttr):
        return bool(attr.value) if ir.IntegerType(attr.type).width == 1 else attr.value
    if isinstance(attr, ir.StringAttr):
        return attr.value
    if isinstance(attr, ir.ArrayAttr):
        return tuple(_value(a) for a in attr)
    raise TypeError(f"unexpected attribute {attr}")


def config_attrs(fields: dict) -> dict:
    """Config fields as MLIR attributes (ints as i64, bools as i1, strings, lists as arrays)."""
    return {name: _attr(value) for name, value in fields.items()}


def read_config_attrs(op: ir.Operation, names: Sequence[str]) -> dict:
    """The config fields stored on a lowbit op, back as Python values."""
    return {name: _value(op.attributes[name]) for name in names}


def matmul(a, w, out, fields: dict, scale=None, zeros=None, bias=None, schedule: Optional[dict] = None) -> ir.Operation:
    """Builds `lowbit.matmul` at the current insertion point (operands are memref values)."""
    optional = [scale, zeros, bias]
    operands = [a, w] + [v for v in optional if v is not None] + [out]
    attrs = _op_attrs(fields, schedule)
    attrs["operandSegmentSizes"] = ir.DenseI32ArrayAttr.get([1, 1] + [int(v is not None) for v in optional] + [1])
    return ir.Operation.create(MATMUL_OP, results=[], operands=operands, attributes=attrs)


def attention(q, k, v, out, fields: dict, schedule: Optional[dict] = None) -> ir.Operation:
    """Builds `lowbit.attention` at the current insertion point."""
    return ir.Operation.create(ATTENTION_OP, results=[], operands=[q, k, v, out], attributes=_op_attrs(fields, schedule))


def _op_attrs(fields: dict, schedule: Optional[dict]) -> dict:
    """The config fields as attributes, plus the GPU schedule as `lowbit.schedule` when there is one."""
    attrs = config_attrs(fields)
    if schedule:
        attrs["lowbit.schedule"] = ir.DictAttr.get(config_attrs(schedule))
    return attrs


def matmul_operands(op: ir.Operation) -> dict:
    """Operands of a lowbit.matmul by name; absent optional ones are None."""
    sizes = list(ir.DenseI32ArrayAttr(op.attributes["operandSegmentSizes"]))
    values, it = {}, iter(op.operands)
    for name, size in zip(MATMUL_OPERANDS, sizes):
        values[name] = next(it) if size else None
    return values
