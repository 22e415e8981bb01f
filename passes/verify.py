"""Checks a lowbit op before it is lowered: its attributes form a valid config (the rules of SPEC.md)
and its operand types are the buffers that config needs. IRDL checks only attribute kinds, and a
lowering of a mismatched op would read out of bounds or build invalid IR."""
from __future__ import annotations

from dataclasses import fields

from lowbit.config import FlashAttenConfig, MatmulConfig
from lowbit.dialects.lowbit import matmul_operands, read_config_attrs
from lowbit.shapes import DYNAMIC, attention_shapes, matmul_shapes

ELEMENT = {"float16": "f16", "float32": "f32", "int8": "i8", "int32": "i32"}


class LoweringError(ValueError):
    """An op the lowering cannot take; the message starts with the op's location."""


def _memref(shape, dtype) -> str:
    dims = "x".join("?" if d is DYNAMIC else str(d) for d in shape)
    return f"memref<{dims}x{ELEMENT[dtype]}>"


def _check(op, cfg_cls, expected: dict, actual: dict) -> None:
    for name in sorted(set(expected) | set(actual)):
        want = _memref(*expected[name]) if name in expected else "no operand"
        got = str(actual[name].type) if name in actual else "no operand"
        if want != got:
            raise LoweringError(f"{op.location}: '{op.name}' operand '{name}' is {got}, but its attributes "
                                f"({cfg_cls.__name__}) need {want}")


def _config(op, cfg_cls):
    try:
        return cfg_cls(**read_config_attrs(op, [f.name for f in fields(cfg_cls)]))
    except (ValueError, TypeError, KeyError) as err:
        raise LoweringError(f"{op.location}: '{op.name}' has invalid attributes: {err}") from err


def verified_matmul(op) -> tuple[MatmulConfig, dict]:
    """(config, operand types by name) of a lowbit.matmul whose operands match its attributes."""
    cfg = _config(op, MatmulConfig)
    operands = {k: v for k, v in matmul_operands(op).items() if v is not None}
    _check(op, MatmulConfig, matmul_shapes(cfg), operands)
    return cfg, {k: str(v.type) for k, v in operands.items()}


def verified_attention(op) -> tuple[FlashAttenConfig, dict]:
    """(config, operand types by name) of a lowbit.attention whose operands match its attributes."""
    cfg = _config(op, FlashAttenConfig)
    operands = dict(zip(("q", "k", "v", "out"), op.operands))
    _check(op, FlashAttenConfig, attention_shapes(cfg), operands)
    return cfg, {k: str(v.type) for k, v in operands.items()}
