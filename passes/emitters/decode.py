"""The one decode emitter: packed storage bits -> decoded value -> scaled / zeroed weight.

Both lowerings call these functions, so the semantics of every W_dtype and zeros mode live here.
`ty` is the compute type: f16 (float16 A) or i32 (int8 A, no scaling).
"""
from __future__ import annotations

import struct

from lowbit.formats import FP4_E2M1_TABLE, NF4_TABLE, format_of

from .ir import Emitter, is_float

TABLES = {"fp4": FP4_E2M1_TABLE, "nf4": NF4_TABLE}
REGISTER_TABLES = ("nf4",)  # the GPU kernels look these up in registers (fp4 is decoded by its bits)


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


# -- register-level decoding for the GPU: one 32-bit word of packed codes -> mma B registers --------
# The register order is the one lowbit.layout assumes: element e of a word goes to register
# e % (EW / PR) at position e // (EW / PR).

def _i32(value: int) -> int:
    """A 32-bit pattern as the signed literal MLIR expects."""
    return value - (1 << 32) if value >= 1 << 31 else value


def _shift(e: Emitter, word: str, op: str, amount: int) -> str:
    return word if amount == 0 else e.op(f"arith.{op} {word}, {e.const(amount, 'i32')} : i32")


def _f16x2(e: Emitter, bits: str) -> str:
    return e.op(f"llvm.bitcast {bits} : i32 to vector<2xf16>", "h2")


def _sub_bias(e: Emitter, h2: str, bias: float) -> str:
    return e.op(f"arith.subf {h2}, {e.const(f'dense<{bias}>', 'vector<2xf16>')} : vector<2xf16>", "wdec")


def decode_word_f16(e: Emitter, word: str, W_dtype: str, table: list[tuple[str, str]] = None) -> list[str]:
    """Decodes the codes in an i32 `word` into vector<2xf16> registers (magic numbers / lop3 / prmt for
    integers and fp4, byte permutes of the 16-entry table held in registers for nf4: `table`, the
    words of table_constants, or those constants where it is None)."""
    from .gpu import LUT_AND_OR, LUT_AND_XOR, lop3, prmt

    fmt = format_of(W_dtype)
    if fmt.bits == 16:
        return [_f16x2(e, word)]
    if fmt.bits == 8:  # int8: bias to unsigned, place bytes 0/2 and 1/3 under the 0x64 exponent
        x = e.op(f"arith.xori {word}, {e.const(_i32(0x80808080), 'i32')} : i32")
        magic = e.const(0x64646464, "i32")
        return [_sub_bias(e, _f16x2(e, prmt(e, x, magic, sel)), 1152.0) for sel in (0x4240, 0x4341)]
    regs, per_word = [], 32 // fmt.bits // 2
    mask = (1 << fmt.bits) - 1
    if fmt.kind == "fp4":
        return [_decode_fp4_pair(e, word, i) for i in range(per_word)]
    if fmt.kind in REGISTER_TABLES:
        return _decode_table_word(e, word, table or table_constants(e, W_dtype))
    shift = 0  # the word is shifted only when the next code would leave the 10 mantissa bits
    for i in range(per_word):
        if fmt.kind == "int" and fmt.bits == 1:  # +-1 by flipping the sign bit of -1.0 (0xBC00)
            x = _shift(e, word, "shli", 15 - i)
            regs.append(_f16x2(e, lop3(e, x, e.const(_i32(0x80008000), "i32"), e.const(_i32(0xBC00BC00), "i32"), LUT_AND_XOR)))
            continue
        if fmt.bits * i - shift + fmt.bits > 10:
            shift = fmt.bits * i
        p = fmt.bits * i - shift  # the codes sit at bits p and 16 + p: 1024 + code * 2^p under the magic exponent
        x = _shift(e, word, "shrui", shift)
        pair_mask = e.const(_i32((mask | mask << 16) << p), "i32")
        # signed: (code ^ half) - half, with the xor folded into the magic constant
        half = 1 << (fmt.bits - 1) if fmt.kind == "int" else 0
        h = _f16x2(e, lop3(e, x, pair_mask, e.const(0x64006400 | (half | half << 16) << p, "i32"),
                           LUT_AND_XOR if half else LUT_AND_OR))
        if p == 0:
            regs.append(_sub_bias(e, h, 1024.0 + half))
        else:  # (1024 + c * 2^p) * 2^-p - (1024 * 2^-p + half), exact in one fma
            scale = e.const(f"dense<{2.0 ** -p}>", "vector<2xf16>")
            bias = e.const(f"dense<{-(1024.0 * 2.0 ** -p + half)}>", "vector<2xf16>")
            regs.append(e.op(f"llvm.intr.fma({h}, {scale}, {bias}) : (vector<2xf16>, vector<2xf16>, vector<2xf16>) "
                             f"-> vector<2xf16>", "wdec"))
    return regs


def _decode_fp4_pair(e: Emitter, word: str, i: int) -> str:
    """fp4 e2m1 codes i and i + 4 of an i32 word (at bits 4 i and 16 + 4 i) as vector<2xf16>, without a
    table: exponent and mantissa (code bits 0-2) go to bits 9-11 of each half and the sign (bit 3) to
    bit 15, which is the code's value times 2^-14 in float16 (code 1 a subnormal); one multiply by
    2^14 (exact) restores it."""
    from .gpu import LUT_AND_OR, lop3

    move = 9 - 4 * i  # to bit 9 from bit 4 i; the sign moves 3 bits further
    magnitude = _shift(e, word, "shli", move) if move > 0 else _shift(e, word, "shrui", -move)
    sign = e.op(f"arith.andi {_shift(e, word, 'shli', move + 3)}, {e.const(_i32(0x80008000), 'i32')} : i32")
    bits = lop3(e, magnitude, e.const(_i32(0x0E000E00), "i32"), sign, LUT_AND_OR)
    return e.op(f"arith.mulf {_f16x2(e, bits)}, {e.const('dense<16384.0>', 'vector<2xf16>')} : vector<2xf16>", "wdec")


def table_words(values) -> list[tuple[int, int]]:
    """The (low, high) i32 words of the four 8-byte prmt sources of _decode_table_word: the low bytes of
    the float16 entries 0-7, of entries 8-15, then their high bytes."""
    bits = [struct.unpack("<H", struct.pack("<e", v))[0] for v in values]
    words = []
    for byte in (0, 1):
        for first in (0, 8):
            row = bytes((bits[first + j] >> 8 * byte) & 0xFF for j in range(8))
            words.append((int.from_bytes(row[:4], "little"), int.from_bytes(row[4:], "little")))
    return words


def table_constants(e: Emitter, W_dtype: str) -> list[tuple[str, str]]:
    """The prmt sources of a table format's decode (table_words) as i32 constants."""
    return [tuple(e.const(_i32(w), "i32") for w in pair) for pair in table_words(TABLES[format_of(W_dtype).kind])]


def _decode_table_word(e: Emitter, word: str, sources: list[tuple[str, str]]) -> list[str]:
    """The eight 4-bit codes of an i32 `word` as their float16 table entries, in decode_word_f16's
    register order, from `sources` (table_words' four pairs) with no memory access. A prmt with a
    register selector looks up 4 codes at once in 8 bytes, so each code's low 3 bits index the low and
    high bytes of entries 0-7 and of entries 8-15, and its bit 3, spread to a byte mask by prmt's sign
    mode, picks between the two (22 instructions a word)."""
    from .gpu import LUT_SELECT, lop3, prmt

    low3 = e.op(f"arith.andi {word}, {e.const(_i32(0x77777777), 'i32')} : i32")
    up4 = _shift(e, word, "shli", 4)  # bit 3 of codes 0, 2, 4, 6 to bit 7 of a byte (codes 1, 3, 5, 7 are there)
    regs = []
    # selector bytes 0-1 hold codes (0, 1, 4, 5), then (2, 3, 6, 7); the mask's byte k is the sign of
    # the byte holding bit 3 of the code in selector nibble k
    for codes_sel, sign_sel in ((0x0020, 0xEAC8), (0x0031, 0xFBD9)):
        selector = prmt(e, low3, low3, codes_sel)
        high = prmt(e, up4, word, sign_sel)
        low_bytes, high_bytes = (lop3(e, prmt(e, *sources[2 * b], selector), prmt(e, *sources[2 * b + 1], selector),
                                      high, LUT_SELECT) for b in (0, 1))
        # codes (0, 4) and (1, 5), or (2, 6) and (3, 7): low and high byte of each half
        regs += [_f16x2(e, prmt(e, low_bytes, high_bytes, sel)) for sel in (0x6240, 0x7351)]
    return regs


def _offset(W_dtype: str) -> int:
    """What decode_word_f16_offset adds to a decoded 4-bit weight: 16 (the exponent's unit-1 base), plus 8
    for signed codes, which enter biased (w + 8)."""
    return 16 + (8 if format_of(W_dtype).kind == "int" else 0)


def decode_word_f16_offset(e: Emitter, word: str, W_dtype: str) -> list[str]:
    """The eight 4-bit codes of an i32 `word` as vector<2xf16> registers holding B + w (B = 16, 24 for int4)
    (exact), in decode_word_f16's register order: each code shifted to mantissa bits 6-9 of its half
    (where the exponent of 16 makes a unit of 1), one lop3 under that exponent (for signed codes the
    lop3 also flips the sign bit: w + 8), no float operation. An fma with the scale and offset_addend
    finishes dequantization."""
    from .gpu import LUT_AND_OR, LUT_AND_XOR, lop3

    signed = format_of(W_dtype).kind == "int"
    mask = e.const(_i32(0x03C003C0), "i32")  # bits 6-9 of each half
    magic = e.const(0x4E004E00 if signed else 0x4C004C00, "i32")  # 16.0, with bit 9 (the code's bit 3) to flip
    regs = []
    for i in range(4):  # register i: codes i and i + 4, at bits 4 i and 16 + 4 i of the word
        move = 6 - 4 * i
        x = _shift(e, word, "shli", move) if move > 0 else _shift(e, word, "shrui", -move)
        regs.append(_f16x2(e, lop3(e, x, mask, magic, LUT_AND_XOR if signed else LUT_AND_OR)))
    return regs


def offset_addend(e: Emitter, W_dtype: str, scale: str, zero: str = None) -> str:
    """The addend that dequantizes decode_word_f16_offset's registers B + w in one fma with the scale
    (vector<2xf16> splats): -(B + z) s computed as fma(z, -s, -B s), or -B s without a zero (B s is
    exact for B = 16: one rounding at most)."""
    from .gpu import F16X2, fma_f16x2

    minus_bs = e.op(f"arith.mulf {scale}, {e.const(f'dense<{-float(_offset(W_dtype))}>', F16X2)} : {F16X2}")
    if zero is None:
        return minus_bs
    return fma_f16x2(e, zero, e.op(f"arith.negf {scale} : {F16X2}"), minus_bs)


def s8_scale_bits(W_dtype: str, K: int) -> int:
    """log2 of the factor `decode_word_s8` scales signed 2- and 4-bit codes by: a code decoded to the
    top bits of its int8 lane costs one shift and one and; the int32 sum is shifted back exactly
    (every product is a multiple of the factor). 0 where that could overflow int32 (|sum| < 128 * 128 * K)."""
    fmt = format_of(W_dtype)
    if fmt.kind != "int" or fmt.bits not in (2, 4) or 128 * 128 * K >= 1 << 31:
        return 0
    return 8 - fmt.bits


def decode_word_s8(e: Emitter, word: str, W_dtype: str, scale_bits: int = 0) -> list[str]:
    """Decodes the codes in an i32 `word` into i32 registers of four int8 lanes (s8 mma operands);
    with `scale_bits` (see s8_scale_bits) signed codes come out times 2**scale_bits."""
    fmt = format_of(W_dtype)
    if fmt.bits == 8:
        return [word]
    per_word = 32 // fmt.bits // 4
    mask = (1 << fmt.bits) - 1
    if scale_bits:  # code i of each byte moved to the byte's top bits: the lane is code * 2**scale_bits
        top = e.const(_i32((mask << scale_bits) * 0x01010101), "i32")
        return [e.op(f"arith.andi {_shift(e, word, 'shli', scale_bits - fmt.bits * i)}, {top} : i32")
                for i in range(per_word)]
    lanes = e.const(_i32(mask * 0x01010101), "i32")
    regs = []
    for i in range(per_word):
        x = e.op(f"arith.andi {_shift(e, word, 'shrui', fmt.bits * i)}, {lanes} : i32")
        if fmt.kind == "int" and fmt.bits == 1:  # 0 -> -1 (0xFF), 1 -> +1: ~(x * 0xFE), no carries
            x = e.op(f"arith.muli {x}, {e.const(0xFE, 'i32')} : i32")
            x = e.op(f"arith.xori {x}, {e.const(-1, 'i32')} : i32")
        elif fmt.kind == "int":  # per-lane sign extension: ((x ^ half) + (128 - half)) ^ 0x80, carry-free
            half = 1 << (fmt.bits - 1)
            x = e.op(f"arith.xori {x}, {e.const(_i32(half * 0x01010101), 'i32')} : i32")
            x = e.op(f"arith.addi {x}, {e.const(_i32((128 - half) * 0x01010101), 'i32')} : i32")
            x = e.op(f"arith.xori {x}, {e.const(_i32(0x80808080), 'i32')} : i32")
        regs.append(x)
    return regs
