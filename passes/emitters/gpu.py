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


def host_pointers(e: Emitter, types: dict) -> list[str]:
    """In a host function: the aligned base pointer of each memref argument (name -> type) as the
    !llvm.ptr<1> a bare-pointer kernel takes."""
    ptrs = []
    for name, ty in types.items():
        raw = e.op(f"memref.extract_aligned_pointer_as_index %{name} : {ty} -> index")
        ptrs.append(e.op(f"llvm.inttoptr {e.op(f'arith.index_cast {raw} : index to i64')} : i64 to {GLOBAL}", "ptr"))
    return ptrs


def launch_func(e: Emitter, gpu_module: str, kernel: str, grid, threads: int, args, shared_bytes: int = 0) -> None:
    """In a host function: `gpu.launch_func` of `kernel` on an (x, y[, z]) grid (index values, or ints made
    constants here), `threads` threads a block, `args` as (value, type) pairs and `shared_bytes` of
    dynamic shared memory."""
    c1 = e.const(1, "index")
    smem = f" dynamic_shared_memory_size {e.const(shared_bytes, 'i32')}" if shared_bytes else ""
    grid = [e.const(g, "index") if isinstance(g, int) else g for g in (*grid, 1, 1)[:3]]
    operands = ", ".join(f"{v} : {ty}" for v, ty in args)
    e.line(f"gpu.launch_func @{gpu_module}::@{kernel} blocks in ({grid[0]}, {grid[1]}, {grid[2]}) "
           f"threads in ({e.const(threads, 'index')}, {c1}, {c1}){smem} args({operands})")


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


def load_aligned_word(e: Emitter, ptr: str) -> str:
    """The aligned 32-bit word holding the byte at `ptr` (a read-only load). For 8- and 16-bit values
    carried across loop iterations: ptxas packs narrow loads with other values, and the packing waits
    for the load that was meant to stay in flight. An aligned word never crosses a page, so reading
    its other bytes cannot fault."""
    down = e.op(f"arith.andi {e.op(f'llvm.ptrtoint {ptr} : {GLOBAL} to i64')}, {e.const(-4, 'i64')} : i64")
    aligned = e.op(f"llvm.inttoptr {down} : i64 to {GLOBAL}")
    return e.op(f'llvm.inline_asm asm_dialect = att "ld.global.nc.b32 $0, [$1];", "=r,l" {aligned} : '
                f'({GLOBAL}) -> i32', "ld")


def load_l2(e: Emitter, ptr: str) -> str:
    """An i32 read through L2 only (ld.global.cg): data other blocks wrote in this launch."""
    return e.op(f'llvm.inline_asm has_side_effects asm_dialect = att "ld.global.cg.b32 $0, [$1];", "=r,l" {ptr} : '
                f'({GLOBAL}) -> i32', "ld")


def add_from_l2(e: Emitter, acc: str, ptr: str, ty: str) -> str:
    """acc + the `ty` (f32 or i32) at `ptr`, read through L2 only (ld.global.cg): data other blocks wrote
    in this launch. Load and add are one asm statement with side effects, so LLVM keeps a chain of them
    in order and cannot hoist the loads ahead of the adds: a K-split tile summed this way holds one
    running sum a value instead of every split's partials at once (255 registers and spills at 64 rows
    with the loads and adds emitted apart; ptxas may still overlap a few loads)."""
    reg, add, con = ("b32", "add.s32", "r") if ty == "i32" else ("f32", "add.rn.f32", "f")
    return e.op(f'llvm.inline_asm has_side_effects asm_dialect = att "{{ .reg .{reg} t; ld.global.cg.{reg} t, [$2]; '
                f'{add} $0, $1, t; }}", "={con},{con},l" {acc}, {ptr} : ({ty}, {GLOBAL}) -> {ty}', "acc")


def fence_gpu(e: Emitter) -> None:
    """Orders this thread's global memory accesses before and after, device-wide (fence.acq_rel.gpu)."""
    e.line('llvm.inline_asm has_side_effects asm_dialect = att "fence.acq_rel.gpu;", "" : () -> ()')


def atomic_add(e: Emitter, ptr: str, value: str) -> str:
    """atomicAdd on an i32 in global memory; returns the old value."""
    return e.op(f"llvm.atomicrmw add {ptr}, {value} monotonic : {GLOBAL}, i32", "old")


def cp_async_16(e: Emitter, dst: str, src: str, src_bytes: str) -> None:
    """cp.async of 16 bytes; bytes past `src_bytes` (an i32, 0 or 16) are zero-filled."""
    e.line(f"nvvm.cp.async.shared.global {dst}, {src}, 16, cache = cg, {src_bytes} : {SHARED}, {GLOBAL}, i32")


def cp_async_commit(e: Emitter) -> None:
    e.line("nvvm.cp.async.commit.group")


def cp_async_wait(e: Emitter, pending: int) -> None:
    e.line(f"nvvm.cp.async.wait.group {pending}")


def barrier(e: Emitter) -> None:
    e.line("nvvm.barrier0")


def ldmatrix(e: Emitter, ptr: str, num: int = 4) -> list[str]:
    """`num` (1, 2 or 4) 8x8 b16 matrices from shared memory; with 4, the A fragment of one mma."""
    struct = f"!llvm.struct<({', '.join(['i32'] * num)})>" if num > 1 else "i32"
    s = e.op(f"nvvm.ldmatrix {ptr} {{num = {num} : i32, layout = #nvvm.mma_layout<row>, shape = "
             f"#nvvm.ld_st_matrix_shape<m = 8, n = 8>, eltType = #nvvm.ld_st_matrix_elt_type<b16>}} : "
             f"({SHARED}) -> {struct}", "ldm")
    if num == 1:
        return [s]
    return [e.op(f"llvm.extractvalue {s}[{i}] : {struct}", "a") for i in range(num)]


def ldmatrix_x4(e: Emitter, ptr: str) -> list[str]:
    return ldmatrix(e, ptr, 4)


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


def prmt(e: Emitter, a: str, b: str, selector: int | str) -> str:
    """Byte permute of the 8 bytes (b:a) by `selector`, an immediate or an i32 value (its low 16 bits:
    per output byte a nibble, bits 0-2 the source byte, bit 3 to replicate that byte's sign bit)."""
    if isinstance(selector, int):
        return e.op(f'llvm.inline_asm asm_dialect = att "prmt.b32 $0, $1, $2, {selector:#06x};", "=r,r,r" '
                    f"{a}, {b} : (i32, i32) -> i32", "prmt")
    return e.op(f'llvm.inline_asm asm_dialect = att "prmt.b32 $0, $1, $2, $3;", "=r,r,r,r" '
                f"{a}, {b}, {selector} : (i32, i32, i32) -> i32", "prmt")


LUT_AND_OR = 0xF0 & 0xCC | 0xAA  # (a & b) | c
LUT_AND_XOR = (0xF0 & 0xCC) ^ 0xAA  # (a & b) ^ c
LUT_SELECT = 0xF0 & ~0xAA & 0xFF | 0xCC & 0xAA  # c ? b : a, bit by bit


# -- attention building blocks (added for lowbit-lower-attention-to-gpu) --

def ldmatrix_x4_trans(e: Emitter, ptr: str) -> list[str]:
    """Four transposed 8x8 b16 matrices from shared memory: lane 4*g + q gets rows 2q, 2q+1 of column g of
    each matrix, i.e. the B fragments of one mma from a [k][n] (row-major over k) tile."""
    s = e.op(f"nvvm.ldmatrix {ptr} {{num = 4 : i32, layout = #nvvm.mma_layout<col>, shape = "
             f"#nvvm.ld_st_matrix_shape<m = 8, n = 8>, eltType = #nvvm.ld_st_matrix_elt_type<b16>}} : "
             f"({SHARED}) -> {STRUCT4['i32']}", "ldt")
    return [e.op(f"llvm.extractvalue {s}[{i}] : {STRUCT4['i32']}", "b") for i in range(4)]


def shfl_xor(e: Emitter, value: str, lane_mask: int, ty: str = "f32") -> str:
    """The `value` of lane (lane ^ lane_mask) across the full warp (shfl.sync.bfly)."""
    return e.op(f"nvvm.shfl.sync bfly {e.const(-1, 'i32')}, {value}, {e.const(lane_mask, 'i32')}, "
                f"{e.const(31, 'i32')} : {ty} -> {ty}", "shfl")


def exp2_approx(e: Emitter, x: str) -> str:
    """2^x in f32 with the MUFU ex2.approx.ftz instruction (2^-inf = 0)."""
    return e.op(f'llvm.call_intrinsic "llvm.nvvm.ex2.approx.ftz.f"({x}) : (f32) -> f32', "ex2")


def fma_f32(e: Emitter, a: str, b: str, c: str) -> str:
    """a * b + c, fused (fma.rn.f32)."""
    return e.op(f"llvm.intr.fma({a}, {b}, {c}) : (f32, f32, f32) -> f32", "fma")


def fma_f16x2(e: Emitter, a: str, b: str, c: str) -> str:
    """a * b + c on two f16 lanes, fused (fma.rn.f16x2)."""
    return e.op(f"llvm.intr.fma({a}, {b}, {c}) : ({F16X2}, {F16X2}, {F16X2}) -> {F16X2}", "fma")


def pack_f16x2(e: Emitter, lo: str, hi: str) -> str:
    """Two f32 rounded to nearest into one vector<2xf16> (cvt.rn.f16x2.f32); `lo` is element 0."""
    return e.op(f"nvvm.convert.f32x2.to.f16x2 {hi}, {lo} {{rnd = #nvvm.fp_rnd_mode<rn>}} : {F16X2}", "h2")


def dynamic_shared_global(name: str) -> str:
    """The declaration of a kernel's dynamic shared memory (`.extern .shared .b8 name[]`); its size is
    given at launch (and above 48 KB opted into with cuFuncSetAttribute)."""
    return f"llvm.mlir.global external @{name}() {{addr_space = 3 : i32, alignment = 16 : i64}} : !llvm.array<0 x i8>"


# -- warpgroup mma (sm_90a) --

SWIZZLE_BYTES = 128  # the 128-byte swizzle of wgmma operand tiles: rows of 128 bytes, 8-row atoms of 1 KB
SWIZZLE_ATOM = 8 * SWIZZLE_BYTES


def smem_descriptor(e: Emitter, address: str) -> str:
    """The wgmma shared-memory matrix descriptor (i64) of a K-major tile of 128-byte rows at shared
    `address` (an i32, inside a 1 KB-aligned swizzle atom): start address >> 4 in bits 0-13, leading
    byte offset 16 (unused by the swizzled K-major layout) in bits 16-29, 1 KB between 8-row groups in
    bits 32-45, the 128-byte swizzle in bits 62-63."""
    fixed = (1 << 16) | ((SWIZZLE_ATOM >> 4) << 32) | (1 << 62)
    start = e.op(f"arith.shrui {e.op(f'arith.andi {address}, {e.i32(0x3FFFF)} : i32')}, {e.i32(4)} : i32")
    return e.op(f"arith.ori {e.op(f'arith.extui {start} : i32 to i64')}, {e.i64(fixed)} : i64", "desc")


def fence_proxy_async_shared(e: Emitter) -> None:
    """Makes this thread's shared-memory writes (cp.async included, once waited for) visible to the
    async proxy that wgmma reads shared memory through."""
    e.line('llvm.inline_asm has_side_effects asm_dialect = att "fence.proxy.async.shared::cta;", "" : () -> ()')


def wgmma_fence(e: Emitter) -> None:
    """Orders register writes before the wgmmas that read them (A fragments, accumulators)."""
    e.line("nvvm.wgmma.fence.aligned")


def wgmma_commit(e: Emitter) -> None:
    e.line("nvvm.wgmma.commit.group.sync.aligned")


def wgmma_wait(e: Emitter, pending: int) -> None:
    """Waits until at most `pending` committed wgmma groups of this warp are in flight."""
    e.line(f"nvvm.wgmma.wait.group.sync.aligned {pending}")


def wgmma_f16_rs(e: Emitter, n: int, acc: Sequence[str], a: Sequence[str], b_desc: str) -> list[str]:
    """One wgmma.mma_async m64 n`n` k16, f16 inputs and f32 accumulators: A (the warp's 16 rows of the
    warpgroup's 64) from 4 registers in the mma.sync A-fragment order, B (n rows x 16 k, K-major) from
    shared memory by descriptor. Returns the n / 2 accumulators (register 4 j + 2 h + c: row g + 8 h of the
    warp's 16, column 8 j + 2 q + c). Asynchronous: fence before, commit and wait after (see wgmma_*)."""
    count = n // 2
    assert len(acc) == count and len(a) == 4
    d = ", ".join(f"${i}" for i in range(count))
    a_ops = ", ".join(f"${2 * count + i}" for i in range(4))
    asm = (f"{{ .reg .pred p; setp.ne.b32 p, ${2 * count + 5}, 0; wgmma.mma_async.sync.aligned.m64n{n}k16.f32.f16.f16 "
           f"{{{d}}}, {{{a_ops}}}, ${2 * count + 4}, p, 1, 1, 0; }}")
    constraints = ",".join(["=f"] * count + [str(i) for i in range(count)] + ["r"] * 4 + ["l", "r"])
    struct = f"!llvm.struct<({', '.join(['f32'] * count)})>"
    operands = ", ".join([*acc, *a, b_desc, e.i32(1)])
    types = ", ".join(["f32"] * count + ["i32"] * 4 + ["i64", "i32"])
    s = e.op(f'llvm.inline_asm has_side_effects asm_dialect = att "{asm}", "{constraints}" {operands} : '
             f"({types}) -> {struct}", "wg")
    return [e.op(f"llvm.extractvalue {s}[{i}] : {struct}", "acc") for i in range(count)]
