"""The one decode emitter: packed storage bits -> decoded value -> scaled / zeroed weight.

Both lowerings call these functions, so the semantics of every W_dtype and zeros mode live here.
`ty` is the compute type: f16 (float16 A) or i32 (int8 A, no scaling).
"""
from __future__ import annotations

from lowbit.formats import FP4_E2M1_TABLE, NF4_TABLE, format_of

from .ir import Emitter, is_float

TABLES = {"fp4": FP4_E2M1_TABLE, "nf4": NF4_TABLE}


def extract_code(e: Emitter, byte: str, slot: str, bits: int) -> str:
    """The `bits`-wide code at element slot `slot` (an i8 value) of an i8 storage byte, LSB first."""
    if bits == 8:
        return byte
    shift = e.op(f"arith.muli {slot}, {e.const(bits, 'i8')} : i8")
    shifted = e.op(f"arith.shrui {byte}, {shift} : i8")
    return e.op(f"arith.andi {shifted}, {e.const((1 << bits) - 1, 'i8')} : i8", "code")


def _int_to(e: Emitter, value_i8: str, ty: str, signed: bool) -> str:
    if is_float(ty):
        return e.op(f"arith.{'sitofp' if signed else 'uitofp'} {value_i8} : i8 to {ty}", "w")
    return e.op(f"arith.{'extsi' if signed else 'extui'} {value_i8} : i8 to {ty}", "w")


def decode(e: Emitter, code: str, W_dtype: str, ty: str) -> str:
    """Decoded value of an i8 `code` (the low `bits` bits, upper bits zero) as type `ty`."""
    fmt = format_of(W_dtype)
    if fmt.kind == "uint":
        return _int_to(e, code, ty, signed=False)
    if fmt.kind == "int":
        if fmt.bits == 1:  # code 0 -> -1, code 1 -> +1
            twice = e.op(f"arith.shli {code}, {e.const(1, 'i8')} : i8")
            return _int_to(e, e.op(f"arith.subi {twice}, {e.const(1, 'i8')} : i8"), ty, signed=True)
        if fmt.bits < 8:  # sign-extend the low bits
            up = e.const(8 - fmt.bits, "i8")
            value = e.op(f"arith.shrsi {e.op(f'arith.shli {code}, {up} : i8')}, {up} : i8")
            return _int_to(e, value, ty, signed=True)
        return _int_to(e, code, ty, signed=True)
    if fmt.kind in TABLES:
        values = ", ".join(repr(float(v)) for v in TABLES[fmt.kind])
        table = e.const(f"dense<[{values}]>", f"vector<16x{ty}>")
        index = e.op(f"arith.index_castui {code} : i8 to index")
        return e.op(f"vector.extract {table}[{index}] : {ty} from vector<16x{ty}>", "w")
    raise ValueError(f"W_dtype={W_dtype!r} has no packed decoding")


def dequantize(e: Emitter, w: str, ty: str, zeros_mode: str, scale: str = None, zero: str = None) -> str:
    """Applies scale and zeros to a decoded weight `w` (all of type `ty`, a float type).

    `zero` is the float zero point ('original', 'rescale') or the decoded zero code ('quantized').
    """
    if scale is None:
        return w
    if zero is None:
        return e.op(f"arith.mulf {w}, {scale} : {ty}", "deq")
    if zeros_mode == "rescale":
        return e.op(f"arith.subf {e.op(f'arith.mulf {w}, {scale} : {ty}')}, {zero} : {ty}", "deq")
    return e.op(f"arith.mulf {e.op(f'arith.subf {w}, {zero} : {ty}')}, {scale} : {ty}", "deq")
