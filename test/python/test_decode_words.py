"""The GPU word decoders (passes/emitters/decode.py) run on the CPU: a small interpreter of the ops
they emit (i32 arith, prmt and lop3 inline asm, float16 pair arithmetic) evaluates their registers for
random words and every code in every position, against lowbit.formats.decode_codes (rounded to float16
for the float decoders: the kernels' nf4 table holds the float16 nearest each level)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from lowbit.formats import decode_codes, format_of
from lowbit.passes.emitters.decode import decode_word_f16, decode_word_f16_offset, decode_word_s8, s8_scale_bits
from lowbit.passes.emitters.ir import Emitter

MASK = 0xFFFFFFFF
ASM = re.compile(r'llvm\.inline_asm asm_dialect = att "(\w+)\.b32 \$0, \$1, \$2, (\$3|0x\w+)(?:, (0x\w+))?;", '
                 r'"[=r,]+" ([^:]+) :')


def _prmt(a: int, b: int, selector: int) -> int:
    source, out = b << 32 | a, 0
    for k in range(4):
        nibble = selector >> 4 * k & 0xF
        byte = source >> 8 * (nibble & 7) & 0xFF
        if nibble & 8:  # sign mode: the byte's bit 7 everywhere
            byte = 0xFF if byte & 0x80 else 0
        out |= byte << 8 * k
    return out


def _lop3(a: int, b: int, c: int, lut: int) -> int:
    return sum(1 << i for i in range(32) if lut >> ((a >> i & 1) << 2 | (b >> i & 1) << 1 | c >> i & 1) & 1)


def _f16x2(bits: int) -> np.ndarray:
    return np.array([bits & 0xFFFF, bits >> 16], dtype=np.uint16).view(np.float16)


def _run(text: str, word: int) -> dict:
    """Every value the emitted lines define, given %word: ints for i32, float16 pairs for vectors."""
    env = {"%word": word}
    for line in text.splitlines():
        name, rhs = (part.strip() for part in line.split("=", 1))
        args = [env[a] for a in re.findall(r"%\w+", rhs)]
        if rhs.startswith("arith.constant dense<"):
            env[name] = np.full(2, float(re.search(r"dense<([^>]+)>", rhs).group(1)), dtype=np.float16)
        elif rhs.startswith("arith.constant"):
            env[name] = int(rhs.split()[1]) & MASK
        elif (m := ASM.match(rhs)):
            op, third, lut, _ = m.groups()
            if op == "prmt":
                env[name] = _prmt(args[0], args[1], args[2] if third == "$3" else int(third, 16))
            else:
                env[name] = _lop3(*args, int(lut, 16))
        elif rhs.startswith("llvm.bitcast"):
            env[name] = _f16x2(args[0])
        elif rhs.startswith("llvm.intr.fma"):
            env[name] = (args[0].astype(np.float64) * args[1] + args[2]).astype(np.float16)
        else:
            op = rhs.split()[0]
            f = {"arith.andi": lambda a, b: a & b, "arith.ori": lambda a, b: a | b, "arith.xori": lambda a, b: a ^ b,
                 "arith.shli": lambda a, b: a << b & MASK, "arith.shrui": lambda a, b: a >> b,
                 "arith.addi": lambda a, b: (a + b) & MASK, "arith.muli": lambda a, b: a * b & MASK,
                 "arith.subf": lambda a, b: a - b, "arith.mulf": lambda a, b: a * b}[op]
            env[name] = f(*args)
    return env


def _codes(word: int, bits: int) -> list[int]:
    return [word >> bits * i & (1 << bits) - 1 for i in range(32 // bits)]


def _words(bits: int, rng: np.random.Generator) -> list[int]:
    """Random words plus, for every code, a word holding it in every position."""
    return [int(w) for w in rng.integers(0, 1 << 32, 64, dtype=np.uint64)] + [
        sum(c << bits * i for i in range(32 // bits)) for c in range(1 << bits)]


@pytest.mark.parametrize("W_dtype", ["nf4", "fp4_e2m1", "int4", "uint4", "int2", "uint2", "int1", "uint1", "int8"])
def test_word_decoders_give_every_code_its_value(W_dtype):
    bits = format_of(W_dtype).bits
    values = decode_codes(torch.arange(1 << bits, dtype=torch.uint8), W_dtype).numpy().astype(np.float16)
    e = Emitter(indent=0)
    regs = decode_word_f16(e, "%word", W_dtype)
    per_reg = 32 // bits // len(regs)
    for word in _words(bits, np.random.default_rng()):
        env = _run(e.text(), word)
        got = np.concatenate([env[r] for r in regs]).reshape(len(regs), per_reg).T.reshape(-1)
        np.testing.assert_array_equal(got, values[_codes(word, bits)], err_msg=f"word {word:#010x}")


@pytest.mark.parametrize("W_dtype,offset", [("int4", 24), ("uint4", 16)])
def test_offset_decoder_gives_offset_plus_value(W_dtype, offset):
    values = decode_codes(torch.arange(16, dtype=torch.uint8), W_dtype).numpy() + offset
    e = Emitter(indent=0)
    regs = decode_word_f16_offset(e, "%word", W_dtype)
    for word in _words(4, np.random.default_rng()):
        env = _run(e.text(), word)
        got = np.stack([env[r] for r in regs]).T.reshape(-1)
        np.testing.assert_array_equal(got.astype(np.float64), values[_codes(word, 4)], err_msg=f"word {word:#010x}")


@pytest.mark.parametrize("W_dtype,K", [("int4", 4096), ("int4", 1 << 17), ("int2", 4096), ("int2", 1 << 17), ("uint4", 4096),
                                       ("uint2", 4096), ("int1", 4096), ("uint1", 4096), ("int8", 4096)])
def test_s8_decoder_gives_every_code_its_value(W_dtype, K):
    """decode_word_s8's int8 lanes: the code's value, times 2**s8_scale_bits where K lets signed 2- and
    4-bit codes be scaled (K = 2**17 does not)."""
    bits, scale_bits = format_of(W_dtype).bits, s8_scale_bits(W_dtype, K)
    values = decode_codes(torch.arange(1 << bits, dtype=torch.uint8), W_dtype).numpy().astype(np.int64) << scale_bits
    e = Emitter(indent=0)
    regs = decode_word_s8(e, "%word", W_dtype, scale_bits)
    for word in _words(bits, np.random.default_rng()):
        env = _run(e.text(), word)
        lanes = np.array([env[r] for r in regs], dtype=np.uint32).view(np.int8).reshape(len(regs), 4)
        np.testing.assert_array_equal(lanes.T.reshape(-1), values[_codes(word, bits)], err_msg=f"word {word:#010x}")
