"""NVVM building blocks for GPU kernels: pointers, loads, cp.async copies, ldmatrix, mma.sync and the
PTX-only bit operations (lop3, prmt) through llvm.inline_asm."""
from __future__ import annotations

from typing import Sequence

from .ir import Emitter

GLOBAL, SHARED = "!llvm.ptr<1>", "!llvm.ptr<3>"
F16X2 = "vector<2xf16>"
STRUCT4 = {"f32": "!llvm.struct<(f32, f32, f32, f32)>", "i32": "!llvm.struct<(i32, i32, i32, i32)>",
           "f16": "!llvm.struct<(vector<2xf16>, vector<2xf16>)>"}

# mma.sync flavours: (A/B register type, accumulator element, accumulator registers, attributes)
MMA = {
    "f16.f32": (F16X2, "f32", 4, "shape = #nvvm.shape<m = 16, n = 8, k = 16>"),
    "f16.f16": (F16X2, "f16", 2, "shape = #nvvm.shape<m = 16, n = 8, k = 16>"),
    "s8.s32": ("i32", "i32", 4, "multiplicandAPtxType = #nvvm.mma_type<s8>, multiplicandBPtxType = "
               "#nvvm.mma_type<s8>, intOverflowBehavior = #nvvm.mma_int_overflow<satfinite>, "
               "shape = #nvvm.shape<m = 16, n = 8, k = 32>"),
}


def special_reg(e: Emitter, op: str) -> str:
    """gpu.thread_id / gpu.block_id as i32."""
    return e.op(f"arith.index_cast {e.op(op)} : index to i32")


def i64(e: Emitter, v: str) -> str:
    return e.op(f"arith.extui {v} : i32 to i64")


def gep(e: Emitter, ptr: str, byte_offset: str, ptr_ty: str, offset_ty: str = "i64") -> str:
    return e.op(f"llvm.getelementptr {ptr}[{byte_offset}] : ({ptr_ty}, {offset_ty}) -> {ptr_ty}, i8", "p")


def load(e: Emitter, ptr: str, ty: str, ptr_ty: str = GLOBAL, align: int = 0) -> str:
    attr = f" {{alignment = {align} : i64}}" if align else ""
    return e.op(f"llvm.load {ptr}{attr} : {ptr_ty} -> {ty}", "ld")


def store(e: Emitter, value: str, ptr: str, ty: str, ptr_ty: str = GLOBAL) -> None:
    e.line(f"llvm.store {value}, {ptr} : {ty}, {ptr_ty}")


def evict_first_policy(e: Emitter) -> str:
    """An L2 cache policy (i64) that marks lines evict-first: for data read exactly once."""
    return e.op('llvm.inline_asm has_side_effects asm_dialect = att "createpolicy.fractional.L2::evict_first.b64 '
                '$0, 1.0;", "=l" : () -> i64', "policy")


def load_streaming_16(e: Emitter, ptr: str, policy: str) -> list[str]:
    """16 bytes read once, bypassing L1 and evict-first in L2 under `policy`; returns 4 i32 words."""
    s = e.op(f'llvm.inline_asm has_side_effects asm_dialect = att "ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 '
             f'{{$0, $1, $2, $3}}, [$4], $5;", "=r,=r,=r,=r,l,l" {ptr}, {policy} : ({GLOBAL}, i64) -> {STRUCT4["i32"]}', "w")
    return [e.op(f"llvm.extractvalue {s}[{i}] : {STRUCT4['i32']}", "word") for i in range(4)]


def cp_async_16(e: Emitter, dst: str, src: str, src_bytes: str) -> None:
    """cp.async of 16 bytes; bytes past `src_bytes` (an i32, 0 or 16) are zero-filled."""
    e.line(f"nvvm.cp.async.shared.global {dst}, {src}, 16, cache = cg, {src_bytes} : {SHARED}, {GLOBAL}, i32")


def cp_async_commit(e: Emitter) -> None:
    e.line("nvvm.cp.async.commit.group")


def cp_async_wait(e: Emitter, pending: int) -> None:
    e.line(f"nvvm.cp.async.wait.group {pending}")


def barrier(e: Emitter) -> None:
    e.line("nvvm.barrier0")


def ldmatrix_x4(e: Emitter, ptr: str) -> list[str]:
    """Four 8x8 b16 matrices from shared memory: the A fragment of one mma."""
    s = e.op(f"nvvm.ldmatrix {ptr} {{num = 4 : i32, layout = #nvvm.mma_layout<row>, shape = "
             f"#nvvm.ld_st_matrix_shape<m = 8, n = 8>, eltType = #nvvm.ld_st_matrix_elt_type<b16>}} : "
             f"({SHARED}) -> {STRUCT4['i32']}", "ldm")
    return [e.op(f"llvm.extractvalue {s}[{i}] : {STRUCT4['i32']}", "a") for i in range(4)]


def mma(e: Emitter, kind: str, a: Sequence[str], b: Sequence[str], c: Sequence[str]) -> list[str]:
    """One mma.sync (m16n8k16 f16 or m16n8k32 s8); returns the accumulator registers."""
    ab_ty, acc_ty, count, attrs = MMA[kind]
    c_ty = F16X2 if acc_ty == "f16" else acc_ty
    struct = STRUCT4[acc_ty]
    d = e.op(f"nvvm.mma.sync A[{', '.join(a)}] B[{', '.join(b)}] C[{', '.join(c)}] {{layoutA = "
             f"#nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, {attrs}}} : ({ab_ty}, {ab_ty}, {c_ty}) -> "
             f"{struct}", "mma")
    return [e.op(f"llvm.extractvalue {d}[{i}] : {struct}", "acc") for i in range(count)]


def lop3(e: Emitter, a: str, b: str, c: str, lut: int) -> str:
    """Any 3-input bitwise function in one instruction; `lut` is its truth table over (0xF0, 0xCC, 0xAA)."""
    return e.op(f'llvm.inline_asm asm_dialect = att "lop3.b32 $0, $1, $2, $3, {lut:#04x};", "=r,r,r,r" '
                f"{a}, {b}, {c} : (i32, i32, i32) -> i32", "lop")


def prmt(e: Emitter, a: str, b: str, selector: int) -> str:
    """Byte permute of the 8 bytes (b:a) by `selector`."""
    return e.op(f'llvm.inline_asm asm_dialect = att "prmt.b32 $0, $1, $2, {selector:#06x};", "=r,r,r" '
                f"{a}, {b} : (i32, i32) -> i32", "prmt")


LUT_AND_OR = 0xF0 & 0xCC | 0xAA  # (a & b) | c
LUT_AND_XOR = (0xF0 & 0xCC) ^ 0xAA  # (a & b) ^ c
