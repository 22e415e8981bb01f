"""lowbit-lower-matmul-to-gpu: `lowbit.matmul` -> a tensor-core kernel in a gpu.module plus its launch.

Kernel design (see docs/design.md): a block of 4 warps computes a block_m x block_n tile of the
output, marching over K one weight superblock at a time.
- A: each superblock's block_m x SB tile is copied into shared memory with `stages`-deep cp.async
  (zero-filled past m and K) and read as mma fragments with ldmatrix.
- W: every thread reads its 16 bytes per n8 tile straight from global memory (streaming loads,
  w_prefetch iterations ahead of use) and decodes them in registers with the shared decode emitter
  into mma B registers (the stored layout puts them in fragment order).
- mma.sync m16n8k16 (f16 A) or m16n8k32 (int8 A). Prefill blocks (32+ rows) apply scale and zeros in
  f16 before the mma. Decode blocks (8 or 16 rows) swap the operands, two weight tiles as A and 8 rows
  of activations as B, and apply scale and zeros to f32 group sums after the mma.
- The epilogue adds the bias and converts.
WgmmaKernel, the sm_90a kernel above 64 rows with float A, keeps the swapped operands on the warpgroup
mma: decoded weights as wgmma's register A, activations as its shared-memory B (see its docstring).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import MISSING, fields
from typing import Iterator

from lowbit.compiler.schedule import (THREADS, MatmulSchedule, matmul_smem_bytes, offset_decode_problem, split_words,
                                      stage_a_bytes, stage_bytes, wgmma_out_row_bytes)
from lowbit.dialects.lowbit import MATMUL_OP
from lowbit.formats import format_of
from lowbit.layout import CHUNK_BYTES, TILE_ROWS, layout_of
from mlir import ir

from .base import ModulePass, RewritePattern, replace_with_launch, symbol_suffix
from .emitters import gpu
from .emitters.decode import (REGISTER_TABLES, decode_word_f16, decode_word_f16_offset, decode_word_s8, dequantize,
                               offset_addend, s8_scale_bits, table_constants)
from .emitters.ir import Emitter, mlir_type, saturate_to_i8
from .verify import verified_matmul

GPU_MODULE = "lowbit_kernels"
RASTER_ROWS = 16  # wgmma kernel: row tiles of a group of blocks taken together (see WgmmaKernel._block_tile)
SPLIT_OPERANDS = ("ws", "locks")  # a K-split kernel's workspace and tile locks, after the tensors
ELEM_BYTES = {"f16": 2, "f32": 4, "i8": 1, "i32": 4}


class MatmulKernel:
    """Emits the text of one kernel for a matmul config and schedule."""

    def __init__(self, cfg: dict, sched: MatmulSchedule, operands: list[str]):
        self.cfg, self.s, self.operands = cfg, sched, operands
        self.N, self.K = cfg["N"], cfg["K"]
        self.fmt = format_of(cfg["W_dtype"])
        self.int8 = cfg["A_dtype"] == "int8"
        self.layout = layout_of(self.fmt.bits, cfg["A_dtype"])
        self.SB = self.layout.superblock
        self.abytes = 1 if self.int8 else 2
        self.U = sched.k_unroll  # superblocks a warp computes per iteration
        self.KB = sched.warps_k * self.U * self.SB  # k per block iteration: U superblocks per K-split warp
        self.row_bytes = self.KB * self.abytes + 16  # padded: ldmatrix rows hit distinct banks
        config = _Cfg(cfg)
        self.a_bytes, self.stage_bytes = stage_a_bytes(config, sched), stage_bytes(config, sched)
        self.groups = cfg["K"] // (cfg["K"] if cfg["group_size"] == -1 else cfg["group_size"])
        self.G = cfg["K"] // self.groups
        self.tiles = self.layout.padded(cfg["K"]) // self.SB  # superblocks
        self.steps = -(-self.tiles // (sched.warps_k * self.U))  # block iterations over all of K
        # block iterations of each K split, a whole number of prefetch rounds: the splits cover disjoint
        # superblocks (those past K read zero A and add nothing)
        self.rounds = -(-self.steps // (sched.split_k * sched.w_prefetch)) * sched.w_prefetch
        self.half = sched.block_m == 8  # one m8 row group
        self.m_tiles = max(sched.block_m // 16, 1)
        # decode blocks (up to 16 rows) swap the mma operands: two n8 weight tiles form the 16-row A
        # operand and 8 rows of activations the n8 B operand (half the mmas of an m8 tile, and each
        # thread's accumulators lie on the weight columns whose group parameters it loaded)
        self.swapped = sched.block_m <= 16
        self.row_groups = sched.block_m // 8 if self.swapped else 0
        self.pairs = -(-sched.warp_n_tiles // 2)
        self.smem_bytes = matmul_smem_bytes(config, sched)
        self.kind = "s8.s32" if self.int8 else ("f16.f16" if cfg["accum_dtype"] == "float16" else "f16.f32")
        # swapped with float A and scaling: f32 accumulators whatever accum_dtype says (as fast as f16 on
        # sm_80+, more accurate). With the schedule's scale_after the mma sums decoded codes of one group
        # and the scale (and zero) apply to the f32 sum, 1-2 fmas per group instead of an f16 multiply per
        # weight pair; without it the decoded weights are scaled in f16 before the mma (fewer registers)
        decode_scaled = self.swapped and not self.int8 and cfg["with_scaling"]
        self.scale_after = decode_scaled and bool(sched.scale_after)
        self.acc_kind = "f16.f32" if decode_scaled else self.kind
        self.a_vector = cfg["K"] % (16 // self.abytes) == 0  # rows of A are 16-byte aligned
        self.s8_scale = s8_scale_bits(cfg["W_dtype"], cfg["K"]) if self.int8 else 0  # undone in the epilogue
        if cfg["with_scaling"] and self.N * self.groups * 2 >= 1 << 31:
            raise ValueError(f"the GPU kernel addresses scale/zeros with 32-bit offsets: N * K / group_size = "
                             f"{self.N * self.groups} must stay below 2**30")
        problem = offset_decode_problem(config, sched)
        if problem:
            raise ValueError(problem)
        self.name = None
        self.split_words = split_words(sched)  # workspace words of one output tile

    # -- the whole kernel --
    def emit(self) -> str:
        e = self.e = Emitter(indent=6)
        s = self.s
        self._prologue()
        for st in range(s.stages - 1 if s.a_smem else 0):
            self._copy_stage(self._iteration(st), e.i32(st * self.stage_bytes))
            gpu.cp_async_commit(e)
        zero = {"f16.f32": e.const(0.0, "f32"), "s8.s32": e.const(0, "i32"),
                "f16.f16": e.const("dense<0.0>", gpu.F16X2)}[self.acc_kind]
        acc_ty = {"f16.f32": "f32", "s8.s32": "i32", "f16.f16": gpu.F16X2}[self.acc_kind]
        n_acc = gpu.MMA[self.acc_kind][2]
        n_tiles = self.row_groups * self.pairs if self.swapped else self.m_tiles * s.warp_n_tiles

        def iteration(kt, read_base, write_base, loads, accs):
            """Refills the stage read in the previous iteration (S - 1 ahead), computes on this one, and
            moves on: the stage written next is the one read now."""
            if s.a_smem:
                self._copy_stage(e.op(f"arith.addi {kt}, {e.const(s.stages - 1, 'i32')} : i32"), write_base)
                gpu.cp_async_commit(e)
            refill = self._load_stage(e.op(f"arith.addi {kt}, {e.i32(s.w_prefetch)} : i32"))
            if s.a_smem:
                gpu.cp_async_wait(e, s.stages - 1)
                gpu.barrier(e)
            accs = self._compute(kt, read_base, loads, accs, n_acc)
            if s.a_smem:
                gpu.barrier(e)
            return accs, refill, self._next_stage(read_base), read_base

        last = (s.stages - 1) * self.stage_bytes
        results = self._main_loop(last, zero, acc_ty, n_tiles * n_acc, iteration)
        if s.a_smem:  # the last iterations' copies (zero fills past K) land before the reductions reuse shared memory
            gpu.cp_async_wait(e, 0)
        values = self._acc_values(results)
        if self.swapped and s.warp_n_tiles == 1:  # a lone n8 tile: rows 8-15 of the mma repeat rows 0-7
            values = [v for i, v in enumerate(values) if i % 4 < 2]
        values = self._reduce_k(values)
        if s.split_k == 1:
            self._epilogue(values)
        else:
            self._reduce_splits(values)
        return self._wrap(e.text())

    def _prologue(self) -> None:
        """What both kernels set up before their stages: the thread's ids, the decode table's registers
        (nf4 with float A), the weight rows' pointers and, for weights loaded to registers, the L2 policy."""
        self._ids()
        self.table = self._table() if self.fmt.kind in REGISTER_TABLES and not self.int8 else None
        self.w_rows = [self._w_row(nt) for nt in range(self.s.warp_n_tiles)]
        if not self.s.w_smem:
            self.policy = gpu.evict_first_policy(self.e)

    def _iteration(self, i: int) -> str:
        """Block iteration i of this block's K split."""
        return self.e.op(f"arith.addi {self.k_first}, {self.e.i32(i)} : i32")

    def _main_loop(self, first_write: int, acc_init: str, acc_ty: str, n_acc: int, iteration) -> list[str]:
        """The K loop of both kernels; returns the accumulators after it.

        A ring of w_prefetch register sets holds the loads (weights and group parameters) of the next
        iterations, in flight while one decodes: memory-bound decode needs many bytes in flight per
        thread, and a parameter loaded where it is used would expose a memory latency every iteration.
        The loop is unrolled by the ring depth, so that set u always serves iteration kt + u and no
        registers rotate; iterations past the last superblock add zero (A is zero-filled there). It
        carries the byte offsets of the A stage read and of the one written (from 0 and `first_write`),
        so that no iteration divides by `stages`. `iteration(kt, read, write, loads, accs)` emits one
        iteration and returns (accs, its loads for iteration kt + w_prefetch, the next read and write)."""
        e, depth = self.e, self.s.w_prefetch
        ring = [self._load_stage(self._iteration(i)) for i in range(depth)]
        stage_types = [ty for _, ty in ring[0]]
        per_set = len(stage_types)
        carried = [(e.i32(0), "i32"), (e.i32(first_write), "i32")] + [v for stage in ring for v in stage] + \
            [(acc_init, acc_ty)] * n_acc
        with e.for_loop(self.k_first, self._iteration(self.rounds), e.i32(depth), carried, hint="kt", ty="i32") as loop:
            read_base, write_base = loop.args[:2]
            sets = [loop.args[2 + i * per_set:2 + (i + 1) * per_set] for i in range(depth)]
            accs = loop.args[2 + depth * per_set:]
            refilled = []
            for u in range(depth):
                kt = e.op(f"arith.addi {loop.iv}, {e.i32(u)} : i32")
                accs, loads, read_base, write_base = iteration(kt, read_base, write_base, sets[u], accs)
                refilled += [v for v, _ in loads]
            types = ["i32", "i32"] + stage_types * depth + [acc_ty] * len(accs)
            e.line(f"scf.yield {', '.join([read_base, write_base] + refilled + accs)} : {', '.join(types)}")
        return loop.results[2 + depth * per_set:]

    def _next_stage(self, base: str) -> str:
        """The byte offset of the A stage after the one at `base`, wrapping after the last."""
        e = self.e
        bumped = e.op(f"arith.addi {base}, {e.i32(self.stage_bytes)} : i32")
        wrapped = e.op(f"arith.cmpi ugt, {bumped}, {e.i32((self.s.stages - 1) * self.stage_bytes)} : i32")
        return e.op(f"arith.select {wrapped}, {e.i32(0)}, {bumped} : i32")

    def _wrap(self, body: str) -> str:
        self.name = "lowbit_matmul_" + symbol_suffix(body)
        body = body.replace("@SMEM_A", f"@{self.name}_smem")
        split = list(SPLIT_OPERANDS) if self.s.split_k > 1 else []
        params = ", ".join(f"%{name}: {gpu.GLOBAL}" for name in self.operands + split) + ", %m: i32"
        return (
            f"    {gpu.dynamic_shared_global(self.name + '_smem')}\n"
            f"    gpu.func @{self.name}({params}) kernel attributes {{known_block_size = array<i32: {self.s.threads}, 1, 1>"
            f"{f', nvvm.minctasm = {self.s.min_blocks} : i32' if self.s.min_blocks else ''}}} {{\n"
            f"{body}\n      gpu.return\n    }}"
        )

    # -- pieces --
    def _ids(self):
        e, s = self.e, self.s
        self.tid = gpu.special_reg(e, "gpu.thread_id x")
        bx, by = self._block_tile()
        self.k_first = e.i32(0)  # the first block iteration of this block's K split
        if s.split_k > 1:
            grid_x = gpu.special_reg(e, "gpu.grid_dim x")
            self.tile = e.op(f"arith.addi {e.op(f'arith.muli {by}, {grid_x} : i32')}, {bx} : i32", "tile")
            self.split = gpu.special_reg(e, "gpu.block_id z")
            self.k_first = e.op(f"arith.muli {self.split}, {e.i32(self.rounds)} : i32", "k0")
        self.lane = e.op(f"arith.andi {self.tid}, {e.const(31, 'i32')} : i32", "lane")
        self.warp = e.op(f"arith.shrui {self.tid}, {e.const(5, 'i32')} : i32", "warp")
        self.g = e.op(f"arith.shrui {self.lane}, {e.const(2, 'i32')} : i32", "g")
        self.q = e.op(f"arith.andi {self.lane}, {e.const(3, 'i32')} : i32", "q")
        self.n_block = e.op(f"arith.muli {bx}, {e.const(s.block_n, 'i32')} : i32", "n0")
        self.m_block = e.op(f"arith.muli {by}, {e.const(s.block_m, 'i32')} : i32", "m0")
        self.kw = e.op(f"arith.divui {self.warp}, {e.i32(s.warps_n)} : i32", "kw")
        self.wn = e.op(f"arith.remui {self.warp}, {e.i32(s.warps_n)} : i32", "wn")
        warp_n = e.op(f"arith.muli {self.wn}, {e.const(8 * s.warp_n_tiles, 'i32')} : i32")
        self.n_warp = e.op(f"arith.addi {self.n_block}, {warp_n} : i32", "nw")
        self.smem = e.op("llvm.mlir.addressof @SMEM_A : !llvm.ptr<3>", "smem")
        self.param_base_bits = {name: e.op(f"arith.trunci {e.op(f'llvm.ptrtoint %{name} : {gpu.GLOBAL} to i64')} : i64 to i32")
                                for name in ("scale", "zeros") if name in self.operands}
        # ldmatrix.x4: lanes 8j..8j+7 address the rows of matrix j. Classic mmas: matrices (rows 0-7,
        # k-low), (rows 8-15, k-low), (rows 0-7, k-high), (rows 8-15, k-high), the A fragment. Swapped
        # mmas take each row group's two matrices as adjacent registers (no moves before the mma):
        # (rows 0-7, k-low), (rows 0-7, k-high), then rows 8-15 or, with 8 rows (block_m 8), the next
        # mma step (32 bytes on), so that one ldmatrix.x4 reads two steps
        bit3, bit4 = (e.op(f"arith.andi {e.op(f'arith.shrui {self.lane}, {e.i32(b)} : i32')}, {e.i32(1)} : i32")
                      for b in (3, 4))
        k_high, second = (bit3, bit4) if self.swapped else (bit4, bit3)
        row = e.op(f"arith.andi {self.lane}, {e.i32(7)} : i32")
        if not self.half:
            row = e.op(f"arith.addi {row}, {e.op(f'arith.shli {second}, {e.i32(3)} : i32')} : i32")
        ldm = e.op(f"arith.addi {e.op(f'arith.muli {row}, {e.i32(self.row_bytes)} : i32')}, "
                   f"{e.op(f'arith.shli {k_high}, {e.i32(4)} : i32')} : i32")
        if self.half:
            ldm = e.op(f"arith.addi {ldm}, {e.op(f'arith.shli {second}, {e.i32(5)} : i32')} : i32")
        # each K-split warp reads its own superblock of the stage
        self.ldm_offset = e.op(f"arith.addi {ldm}, {e.op(f'arith.muli {self.kw}, {e.i32(self.U * self.SB * self.abytes)} : i32')} : i32")

    def _table(self) -> list[tuple[str, str]]:
        """The decode table's words (decode.table_constants) in ordinary registers. As constants ptxas
        keeps them in uniform registers and copies one into an ordinary register before most prmts that
        read it (158 copies a loop iteration at m = 1); xored with tid & (m >> 31), zero for every row
        count below 2^31 but not provably so, they stay in registers."""
        e = self.e
        zero = e.op(f"arith.andi {self.tid}, {e.op(f'arith.shrui %m, {e.i32(31)} : i32')} : i32")
        return [tuple(e.op(f"arith.xori {c}, {zero} : i32") for c in pair) for pair in table_constants(e, self.cfg["W_dtype"])]

    def _block_tile(self) -> tuple[str, str]:
        """(column tile, row tile) of this block: the grid's x and y."""
        return gpu.special_reg(self.e, "gpu.block_id x"), gpu.special_reg(self.e, "gpu.block_id y")

    def _n_col(self, nt: int) -> str:
        """The B column of this thread in n8 tile `nt`, clamped inside N for loads."""
        e = self.e
        n = e.op(f"arith.addi {self.n_warp}, {e.const(8 * nt, 'i32')} : i32")
        n = e.op(f"arith.addi {n}, {self.g} : i32", "n")
        return e.op(f"arith.minui {n}, {e.const(self.cfg['N'] - 1, 'i32')} : i32", "nc")

    def _w_row(self, nt: int):
        """(column, pointer to its first superblock chunk plus this thread's 16 bytes, bytes from one
        superblock's chunk to the next) of tile `nt` in the tiled layout of lowbit.layout."""
        e, N = self.e, self.cfg["N"]
        n = self._n_col(nt)
        chunks_per_row = self.layout.padded(self.cfg["K"]) // self.SB
        t = e.op(f"arith.divui {n}, {e.i32(TILE_ROWS)} : i32")
        i = e.op(f"arith.remui {n}, {e.i32(TILE_ROWS)} : i32")
        chunk = e.op(f"arith.addi {e.op(f'arith.muli {gpu.i64(e, t)}, {e.i64(TILE_ROWS * chunks_per_row)} : i64')}, "
                     f"{gpu.i64(e, i)} : i64")
        off = e.op(f"arith.addi {e.op(f'arith.muli {chunk}, {e.i64(CHUNK_BYTES)} : i64')}, "
                   f"{gpu.i64(e, e.op(f'arith.shli {self.q}, {e.i32(4)} : i32'))} : i64")
        stride = None  # N a multiple of the tile: TILE_ROWS chunks from superblock to superblock
        if N % TILE_ROWS:  # rows of the last, partial tile have N % TILE_ROWS chunks per superblock
            full = e.op(f"arith.cmpi ult, {n}, {e.i32(N // TILE_ROWS * TILE_ROWS)} : i32")
            stride = e.op(f"arith.select {full}, {e.i64(TILE_ROWS * CHUNK_BYTES)}, "
                          f"{e.i64(N % TILE_ROWS * CHUNK_BYTES)} : i64")
        return n, gpu.gep(e, "%w", off, gpu.GLOBAL), stride

    def _superblocks(self, kt: str) -> list[str]:
        """The k_unroll superblocks this warp computes in block iteration `kt` (may be past the last one)."""
        e = self.e
        first = e.op(f"arith.addi {e.op(f'arith.muli {kt}, {e.i32(self.s.warps_k)} : i32')}, {self.kw} : i32")
        first = e.op(f"arith.muli {first}, {e.i32(self.U)} : i32", "sb")
        return [first] + [e.op(f"arith.addi {first}, {e.i32(j)} : i32", "sb") for j in range(1, self.U)]

    def _load_stage(self, kt: str) -> list[tuple[str, str]]:
        """Issues the loads of iteration `kt`: per superblock, this warp's weights (unless they travel
        through the shared-memory stages, w_smem) then its raw group parameters, as (value, type) pairs;
        nothing here waits for them."""
        return [v for sb in self._superblocks(kt)
                for v in ([] if self.s.w_smem else [(w, "i32") for w in self._load_w(sb)]) + self._load_params(sb)]

    def _w_pointers(self, sb: str) -> Iterator[str]:
        """Per n8 tile, the address of this thread's 16 bytes of superblock `sb` (a 64-byte chunk per
        row); past the last superblock, the last one's (A is zero there). Each is emitted when the
        caller asks for it, next to its use."""
        e = self.e
        sb = gpu.i64(e, e.op(f"arith.minui {sb}, {e.i32(self.tiles - 1)} : i32"))
        for _, row, stride in self.w_rows:
            off = e.op(f"arith.muli {sb}, {stride or e.i64(TILE_ROWS * CHUNK_BYTES)} : i64")
            yield gpu.gep(e, row, off, gpu.GLOBAL)

    def _load_w(self, sb: str) -> list[str]:
        """The 16 bytes of this thread's superblock `sb` for each of its n8 tiles."""
        return [w for ptr in self._w_pointers(sb) for w in gpu.load_streaming_16(self.e, ptr, self.policy)]

    def _w_slot(self, j: int, nt: int) -> int:
        """Byte offset, from a stage's weight part, of thread 0's 16 bytes of n8 tile `nt` in superblock `j`
        of the iteration (a warp's 32 slots are contiguous: conflict-free copies and reads)."""
        return ((j * self.s.warp_n_tiles + nt) * self.s.threads) * 16

    def _w_slots(self, stage_base: str) -> str:
        """Byte offset of this thread's first weight slot in the stage at `stage_base` (after its A tile)."""
        e = self.e
        return e.op(f"arith.addi {e.op(f'arith.addi {stage_base}, {e.i32(self.a_bytes)} : i32')}, "
                    f"{e.op(f'arith.shli {self.tid}, {e.i32(4)} : i32')} : i32")

    def _copy_w(self, kt: str, stage_base: str):
        """Issues the copies of this thread's weights of iteration `kt` into its slots of the stage."""
        e = self.e
        mine = self._w_slots(stage_base)
        for j, sb in enumerate(self._superblocks(kt)):
            for nt, src in enumerate(self._w_pointers(sb)):
                dst = e.op(f"arith.addi {mine}, {e.i32(self._w_slot(j, nt))} : i32")
                gpu.cp_async_16(e, gpu.gep(e, self.smem, dst, gpu.SHARED, "i32"), src, e.i32(16))

    def _read_w(self, read_base: str, j: int) -> list[str]:
        """This thread's weight words of superblock `j` of the iteration in the stage at `read_base`."""
        e = self.e
        mine = self._w_slots(read_base)
        words = []
        for nt in range(self.s.warp_n_tiles):
            at = gpu.gep(e, self.smem, e.op(f"arith.addi {mine}, {e.i32(self._w_slot(j, nt))} : i32"), gpu.SHARED, "i32")
            v = e.op(f"llvm.load {at} {{alignment = 16 : i64}} : {gpu.SHARED} -> vector<4xi32>", "ws")
            words += [e.op(f"llvm.extractelement {v}[{e.i32(i)} : i32] : vector<4xi32>", "word") for i in range(4)]
        return words

    def _copy_stage(self, kt: str, stage_base: str):
        """Issues the copies of iteration `kt` into the stage at byte `stage_base`: with w_smem this
        thread's weights, then A."""
        if self.s.w_smem:
            self._copy_w(kt, stage_base)
        self._copy_a(kt, stage_base)

    def _copy_a(self, kt: str, stage_base: str):
        """Issues the copy of A's superblock `kt` into the stage at byte `stage_base` of shared memory
        (rows m0.., zero past K and the last tile). A round of chunks whose rows all lie past m is
        skipped (a block-uniform branch): those rows keep stale values, which only reach output rows
        that are never stored, since each mma row depends on its own A row alone."""
        e, s = self.e, self.s
        per_chunk = 16 // self.abytes if self.a_vector else 1
        per_row = self.KB // per_chunk
        total = s.block_m * per_row
        k_tile = e.op(f"arith.muli {kt}, {e.const(self.KB, 'i32')} : i32")
        for it in range(math.ceil(total / THREADS)):
            c = e.op(f"arith.addi {self.tid}, {e.const(it * THREADS, 'i32')} : i32", "chunk")
            first_row = it * THREADS // per_row
            needed = first_row > 0 and e.op(
                f"arith.cmpi ult, {e.op(f'arith.addi {self.m_block}, {e.i32(first_row)} : i32')}, %m : i32")
            idle = total % THREADS and it == total // THREADS and e.op(f"arith.cmpi ult, {c}, {e.i32(total)} : i32")
            conditions = [x for x in (needed, idle) if x]
            if not conditions:
                self._copy_a_chunk(c, per_row, per_chunk, k_tile, stage_base)
                continue
            cond = conditions[0] if len(conditions) == 1 else e.op(f"arith.andi {needed}, {idle} : i1")
            with e.region(f"scf.if {cond} {{"):
                self._copy_a_chunk(c, per_row, per_chunk, k_tile, stage_base)

    def _copy_a_chunk(self, c, per_row, per_chunk, k_tile, stage_base):
        """One chunk of the A copy; zero past m and K (which covers iterations past the last one)."""
        e = self.e
        row = e.op(f"arith.divui {c}, {e.const(per_row, 'i32')} : i32")
        col = e.op(f"arith.muli {e.op(f'arith.remui {c}, {e.i32(per_row)} : i32')}, {e.const(per_chunk, 'i32')} : i32")
        grow = e.op(f"arith.addi {self.m_block}, {row} : i32")
        gk = e.op(f"arith.addi {k_tile}, {col} : i32")
        valid = e.op(f"arith.andi {e.op(f'arith.cmpi ult, {grow}, %m : i32')}, {e.op(f'arith.cmpi ult, {gk}, {e.i32(self.K)} : i32')} : i1")
        elem = e.op(f"arith.addi {e.op(f'arith.muli {gpu.i64(e, grow)}, {e.i64(self.K)} : i64')}, {gpu.i64(e, gk)} : i64")
        src_off = e.op(f"arith.muli {elem}, {e.const(self.abytes, 'i64')} : i64")
        src_off = e.op(f"arith.select {valid}, {src_off}, {e.const(0, 'i64')} : i64")
        src = gpu.gep(e, "%a", src_off, gpu.GLOBAL)
        dst = gpu.gep(e, self.smem, e.op(f"arith.addi {stage_base}, {self._a_offset(row, col)} : i32"), gpu.SHARED, "i32")
        if self.a_vector:
            size = e.op(f"arith.select {valid}, {e.const(16, 'i32')}, {e.const(0, 'i32')} : i32")
            gpu.cp_async_16(e, dst, src, size)
        else:  # K not a multiple of the 16-byte chunk: element copies
            a_ty = "i8" if self.int8 else "f16"
            v = gpu.load(e, src, a_ty)
            v = e.op(f"arith.select {valid}, {v}, {e.const(0 if self.int8 else 0.0, a_ty)} : {a_ty}")
            gpu.store(e, v, dst, a_ty, gpu.SHARED)

    def _a_offset(self, row: str, col: str) -> str:
        """Byte offset of A element (row, col) inside a stage: rows padded for conflict-free ldmatrix."""
        e = self.e
        return e.op(f"arith.addi {e.op(f'arith.muli {row}, {e.i32(self.row_bytes)} : i32')}, "
                    f"{e.op(f'arith.muli {col}, {e.i32(self.abytes)} : i32')} : i32")

    def _load_params(self, sb: str) -> list[tuple[str, str]]:
        """Issues the loads of the scale and zero of each n8 tile and group of superblock `sb`: the
        aligned words holding them (per tile, per group, scale then zero)."""
        if not self.cfg["with_scaling"] or self.int8:
            return []
        e = self.e
        return [(gpu.load_aligned_word(e, gpu.gep(e, f"%{name}", gpu.i64(e, off), gpu.GLOBAL)), "i32")
                for nt in range(self.s.warp_n_tiles) for step in self._group_steps()
                for name, off in self._param_offsets(sb, step, nt)]

    def _group_scalars(self, sb: str, words: list[str], nt: int) -> list[tuple]:
        """Per quantization group of superblock `sb` (numbered as group_keys numbers them): the f16 scale
        and zero (None without zeros; a quantized zero as its code) of this thread's column in tile
        `nt`, taken from the words `_load_params` loaded."""
        cfg, e = self.cfg, self.e
        per_group = 2 if cfg["with_zeros"] else 1
        firsts = self._group_steps()
        scalars = []
        for gi, step in enumerate(firsts):
            offsets = self._param_offsets(sb, step, nt)
            at = (nt * len(firsts) + gi) * per_group
            scale = _as_f16(e, _bits_at(e, words[at], self._bit_offset(*offsets[0]), 16))
            zero = self._zero_value(words[at + 1], self._bit_offset(*offsets[1]), nt) if cfg["with_zeros"] else None
            scalars.append((scale, zero))
        return scalars

    def _group_params(self, sb: str, words: list[str], nt: int) -> list:
        """Per mma step of tile `nt` in superblock `sb`: (scale, zero) splatted to vector<2xf16>, or None
        without scaling."""
        e = self.e
        keys = self.layout.group_keys(self.G)
        if not self.cfg["with_scaling"]:
            return [None] * len(keys)
        splats = [(_splat(e, scale), None if zero is None else _splat(e, zero))
                  for scale, zero in self._group_scalars(sb, words, nt)]
        return [splats[k] for k in keys]

    def _fold_factors(self, scale: str, zero) -> tuple:
        """f32 (scale, -zero term) that fold a group's sums into the accumulators: acc += scale * sum(a w)
        + nz * sum(a), as the zeros mode's formula expands ((w - z) s = w s - z s; w s - z)."""
        e = self.e
        s32 = e.op(f"arith.extf {scale} : f16 to f32", "s32")
        if zero is None:
            return s32, None
        z32 = e.op(f"arith.extf {zero} : f16 to f32")
        term = z32 if self.cfg["zeros_mode"] == "rescale" else e.op(f"arith.mulf {z32}, {s32} : f32")
        return s32, e.op(f"arith.negf {term} : f32", "nz")

    def _group_steps(self) -> list[int]:
        """The first mma step of each group of a superblock."""
        keys = self.layout.group_keys(self.G)
        return [keys.index(k) for k in sorted(set(keys))]

    def _param_offsets(self, sb: str, step: int, nt: int) -> list[tuple[str, str]]:
        """(operand, byte offset as i32) of the scale (and zero) of this thread's column in tile `nt`
        at mma step `step` of superblock `sb` (a quantized zero: the byte holding it)."""
        cfg, e = self.cfg, self.e
        k = e.op(f"arith.addi {e.op(f'arith.muli {sb}, {e.i32(self.SB)} : i32')}, {e.const(self.layout.mma_k * step, 'i32')} : i32")
        gidx = e.op(f"arith.divui {k}, {e.const(self.G, 'i32')} : i32")
        gidx = e.op(f"arith.minui {gidx}, {e.const(self.groups - 1, 'i32')} : i32", "gidx")
        n = self.w_rows[nt][0]
        idx = e.op(f"arith.addi {e.op(f'arith.muli {n}, {e.i32(self.groups)} : i32')}, {gidx} : i32")
        out = [("scale", e.op(f"arith.shli {idx}, {e.i32(1)} : i32"))]
        if cfg["with_zeros"] and cfg["zeros_mode"] == "quantized":
            row = e.op(f"arith.muli {gidx}, {e.i32(cfg['N'] * self.fmt.bits // 8)} : i32")
            out.append(("zeros", e.op(f"arith.addi {row}, {e.op(f'arith.divui {n}, {e.i32(8 // self.fmt.bits)} : i32')} : i32")))
        elif cfg["with_zeros"]:
            out.append(("zeros", out[0][1]))
        return out

    def _bit_offset(self, name: str, offset: str) -> str:
        """The bit offset of byte `offset` of operand `name` inside its aligned 32-bit word (only the
        low two bits of the address matter, so i32 offsets are exact)."""
        e = self.e
        base = self.param_base_bits[name]
        low = e.op(f"arith.andi {e.op(f'arith.addi {base}, {offset} : i32')}, {e.i32(3)} : i32")
        return e.op(f"arith.shli {low}, {e.i32(3)} : i32", "shift")

    def _zero_value(self, word: str, shift: str, nt: int) -> str:
        """The zero point as f16: the f16 at bit `shift` of `word`, or the code of this thread's column
        in the quantized zero byte there."""
        cfg, e = self.cfg, self.e
        if cfg["zeros_mode"] != "quantized":
            return _as_f16(e, _bits_at(e, word, shift, 16))
        bits, per_byte = self.fmt.bits, 8 // self.fmt.bits
        n = self.w_rows[nt][0]
        slot = e.op(f"arith.muli {e.op(f'arith.remui {n}, {e.i32(per_byte)} : i32')}, {e.const(bits, 'i32')} : i32")
        code = _bits_at(e, word, e.op(f"arith.addi {shift}, {slot} : i32"), bits)
        return e.op(f"arith.uitofp {code} : i32 to f16")

    def _compute(self, kt: str, read_base: str, stage: list[str], accs: list[str], n_acc: int) -> list[str]:
        """Runs this iteration's superblocks on the loaded stage and the A stage at byte `read_base` of
        shared memory."""
        per_unit = len(stage) // self.U
        base = self.e.op(f"arith.addi {read_base}, {self.ldm_offset} : i32") if self.s.a_smem else None
        for j, sb in enumerate(self._superblocks(kt)):
            a_base = base and self.e.op(f"arith.addi {base}, {self.e.i32(j * self.SB * self.abytes)} : i32")
            unit = stage[j * per_unit:(j + 1) * per_unit]
            if self.s.w_smem:
                unit = self._read_w(read_base, j) + unit
            accs = self._compute_superblock(sb, a_base, unit, accs, n_acc)
        return accs

    def _compute_superblock(self, sb: str, stage_base: str, stage: list[str], accs: list[str], n_acc: int) -> list[str]:
        """Decodes one superblock's loads (weights, then raw group parameters) and runs its mmas on the
        A superblock at byte `stage_base` of shared memory."""
        e, s, cfg = self.e, self.s, self.cfg
        n_words = 4 * s.warp_n_tiles
        w_words, raw_params = stage[:n_words], stage[n_words:]
        w_regs = []  # per n8 tile: every decoded weight register of the superblock, in step order
        for nt in range(s.warp_n_tiles):
            regs = []
            for word in w_words[4 * nt: 4 * nt + 4]:
                if self.int8:
                    regs += decode_word_s8(e, word, cfg["W_dtype"], self.s8_scale)
                elif s.offset_decode:
                    regs += decode_word_f16_offset(e, word, cfg["W_dtype"])
                else:
                    regs += decode_word_f16(e, word, cfg["W_dtype"], self.table)
            if not self.int8 and cfg["with_scaling"] and not self.scale_after:
                regs = self._scaled_weights(regs, self._group_params(sb, raw_params, nt))
            w_regs.append(regs)
        if self.swapped:
            return self._swapped_mmas(sb, stage_base, w_regs, raw_params, accs, n_acc)
        accs = list(accs)
        for step in range(self.SB // self.layout.mma_k):
            a_frags = [self._a_fragment(sb, stage_base, step, mt) for mt in range(self.m_tiles)]
            for nt in range(s.warp_n_tiles):
                b = w_regs[nt][2 * step: 2 * step + 2]
                for mt in range(self.m_tiles):
                    i = (mt * s.warp_n_tiles + nt) * n_acc
                    accs[i:i + n_acc] = gpu.mma(e, self.kind, a_frags[mt], b, accs[i:i + n_acc])
        return accs

    def _scaled_weights(self, regs: list[str], params: list) -> list[str]:
        """Decoded weight registers (two per mma step) with their group's scale and zero applied in f16.
        Decode blocks apply an 'original' zero as one fma a register, w s + (-z s), with -z s once per
        group (measured as fast as or faster than subtract-then-multiply, docs/perf-notes.md variant 32);
        with the schedule's offset_decode the registers hold B + w and the fma adds -(B + z) s, or -B s
        without zeros (decode.offset_addend)."""
        e, cfg = self.e, self.cfg
        original = cfg["with_zeros"] and cfg["zeros_mode"] == "original"
        if not (self.s.offset_decode or (self.swapped and original)):
            return [dequantize(e, r, gpu.F16X2, cfg["zeros_mode"], *params[i // 2]) for i, r in enumerate(regs)]
        addends, out = {}, []  # (scale, zero) splats -> the group's addend
        for i, r in enumerate(regs):
            scale, zero = params[i // 2]
            if (scale, zero) not in addends:
                addends[scale, zero] = self._addend(scale, zero)
            out.append(gpu.fma_f16x2(e, r, scale, addends[scale, zero]))
        return out

    def _addend(self, scale: str, zero) -> str:
        """The addend of a group's dequantizing fma: -z s, or with offset_decode the decoder's own
        (decode.offset_addend)."""
        e = self.e
        if self.s.offset_decode:
            return offset_addend(e, self.cfg["W_dtype"], scale, zero)
        return e.op(f"arith.negf {e.op(f'arith.mulf {zero}, {scale} : {gpu.F16X2}')} : {gpu.F16X2}", "nzs")

    def _swapped_mmas(self, sb: str, stage_base: str, w_regs: list, raw_params: list[str], accs: list[str],
                      n_acc: int) -> list[str]:
        """The mmas of a decode block: per step, n8 tiles 2p and 2p + 1 are rows 0-7 and 8-15 of the A
        operand (a lone tile fills both) and each row group's activations the B operand, so that
        accumulator (rg, p) holds out[8 rg + 2q + j][16 p + 8 i + g] in register 2 i + j. With
        scale_after, each run of steps inside one group sums into fresh f32 registers, which the
        group's scale (and zero, through the activations' sums) then fold into the accumulators."""
        e, s = self.e, self.s
        acts = self._activation_operands(sb, stage_base)
        last = s.warp_n_tiles - 1
        a_ops = [[_tile_pair_fragment(lambda nt, r: w_regs[nt][r], 2 * p, min(2 * p + 1, last), step)
                  for p in range(self.pairs)] for step in range(len(acts))]
        slots = [(rg, p, (rg * self.pairs + p) * n_acc) for rg in range(self.row_groups) for p in range(self.pairs)]
        accs = list(accs)
        if not self.scale_after:
            for step in range(len(acts)):
                for rg, p, i in slots:
                    accs[i:i + n_acc] = gpu.mma(e, self.acc_kind, a_ops[step][p], acts[step][rg], accs[i:i + n_acc])
            return accs
        keys = self.layout.group_keys(self.G)
        params = [self._group_scalars(sb, raw_params, nt) for nt in range(s.warp_n_tiles)]
        factors = {}  # (tile, group) -> f32 (scale, -zero term)
        zero = [e.const(0.0, "f32")] * 4
        ones = [e.const("dense<1.0>", gpu.F16X2)] * 4
        for key, run in itertools.groupby(range(len(acts)), key=keys.__getitem__):
            run = list(run)
            sums = {}
            for step in run:
                for rg, p, _ in slots:
                    sums[rg, p] = gpu.mma(e, "f16.f32", a_ops[step][p], acts[step][rg], sums.get((rg, p), zero))
            act_sums = {}  # with zeros: the row sums of each row group's activations over the run
            if self.cfg["with_zeros"]:
                for step in run:
                    for rg in range(self.row_groups):
                        act_sums[rg] = gpu.mma(e, "f16.f32", ones, acts[step][rg], act_sums.get(rg, zero))
            for rg, p, i in slots:
                for c in range(4):
                    tile = min(2 * p + c // 2, last)
                    if (tile, key) not in factors:
                        factors[tile, key] = self._fold_factors(*params[tile][key])
                    scale, neg_zero = factors[tile, key]
                    acc = gpu.fma_f32(e, sums[rg, p][c], scale, accs[i + c])
                    accs[i + c] = acc if neg_zero is None else gpu.fma_f32(e, act_sums[rg][c], neg_zero, acc)
        return accs

    def _activation_operands(self, sb: str, stage_base: str) -> list[list[list[str]]]:
        """Swapped mmas: per mma step of superblock `sb`, per row group, the two B registers of the
        activations (the A fragment's registers of those rows)."""
        steps = self.SB // self.layout.mma_k
        if self.half and self.s.a_smem:  # one ldmatrix.x4 reads two steps (see _ids)
            operands = []
            for step in range(0, steps, 2):
                r = self._ldmatrix(stage_base, step, 0)
                operands += [[r[0:2]], [r[2:4]]]
            return operands
        if self.s.a_smem:  # (rows 0-7, rows 8-15) x (k-low, k-high)
            return [[r[0:2], r[2:4]] for r in (self._ldmatrix(stage_base, step, 0) for step in range(steps))]
        operands = []
        for step in range(steps):
            a = self._a_fragment(sb, stage_base, step, 0)
            operands.append([[a[rg], a[rg + 2]] for rg in range(self.row_groups)])
        return operands

    def _a_fragment(self, sb: str, stage_base: str, step: int, mt: int) -> list[str]:
        """The 4 A registers of m16 tile `mt` at mma step `step`, typed for the mma."""
        return self._ldmatrix(stage_base, step, mt) if self.s.a_smem else \
            self._mma_operands(self._a_fragment_global(sb, step, mt))

    def _ldmatrix(self, stage_base: str, step: int, mt: int) -> list[str]:
        e = self.e
        off = e.op(f"arith.addi {stage_base}, {e.const(mt * 16 * self.row_bytes + step * 32, 'i32')} : i32")
        return self._mma_operands(gpu.ldmatrix_x4(e, gpu.gep(e, self.smem, off, gpu.SHARED, "i32")))

    def _mma_operands(self, regs: list[str]) -> list[str]:
        return regs if self.int8 else [self.e.op(f"llvm.bitcast {x} : i32 to vector<2xf16>") for x in regs]

    def _a_fragment_global(self, sb: str, step: int, mt: int) -> list[str]:
        """The A fragment of one mma straight from global memory (L1-cached): rows g and g + 8 at the
        4 bytes of k = KS * step + PR * q and KS / 2 further; zero past m and K."""
        e = self.e
        KS, PR = self.layout.mma_k, self.layout.per_reg
        k_lo = e.op(f"arith.addi {e.op(f'arith.muli {sb}, {e.i32(self.SB)} : i32')}, {e.i32(KS * step)} : i32")
        k_lo = e.op(f"arith.addi {k_lo}, {e.op(f'arith.muli {self.q}, {e.i32(PR)} : i32')} : i32")
        regs = []
        for row_off, k_off in ((0, 0), (8, 0), (0, KS // 2), (8, KS // 2)):
            if self.half and row_off:
                regs.append(e.i32(0))
                continue
            row = e.op(f"arith.addi {self.m_block}, {e.i32(16 * mt + row_off)} : i32")
            row = e.op(f"arith.addi {row}, {self.g} : i32")
            k = e.op(f"arith.addi {k_lo}, {e.i32(k_off)} : i32")
            valid = e.op(f"arith.andi {e.op(f'arith.cmpi ult, {row}, %m : i32')}, "
                         f"{e.op(f'arith.cmpi ult, {k}, {e.i32(self.K)} : i32')} : i1")
            elem = e.op(f"arith.addi {e.op(f'arith.muli {gpu.i64(e, row)}, {e.i64(self.K)} : i64')}, {gpu.i64(e, k)} : i64")
            off = e.op(f"arith.select {valid}, {e.op(f'arith.muli {elem}, {e.i64(self.abytes)} : i64')}, {e.i64(0)} : i64")
            word = gpu.load(e, gpu.gep(e, "%a", off, gpu.GLOBAL), "i32")
            regs.append(e.op(f"arith.select {valid}, {word}, {e.i32(0)} : i32"))
        return regs

    def _reduce_k(self, values: list[str]) -> list[str]:
        """Sums the partial results of the K-split warps through shared memory (into warp kw = 0)."""
        e, s = self.e, self.s
        if s.warps_k == 1:
            return values
        ty, n = ("i32" if self.int8 else "f32"), len(values)
        gpu.barrier(e)  # every warp is done reading A: reuse its shared memory

        def slot(kw_minus_1: str, i: int) -> str:  # [kw - 1][wn][value][lane] words: conflict-free
            row = e.op(f"arith.addi {e.op(f'arith.muli {kw_minus_1}, {e.i32(s.warps_n)} : i32')}, {self.wn} : i32")
            word = e.op(f"arith.addi {e.op(f'arith.muli {row}, {e.i32(n * 32)} : i32')}, {self.lane} : i32")
            word = e.op(f"arith.addi {word}, {e.i32(i * 32)} : i32")
            return gpu.gep(e, self.smem, e.op(f"arith.shli {word}, {e.i32(2)} : i32"), gpu.SHARED, "i32")

        with e.region(f"scf.if {e.op(f'arith.cmpi ugt, {self.kw}, {e.i32(0)} : i32')} {{"):
            mine = e.op(f"arith.subi {self.kw}, {e.i32(1)} : i32")
            for i, v in enumerate(values):
                gpu.store(e, v, slot(mine, i), ty, gpu.SHARED)
        gpu.barrier(e)
        add = "arith.addf" if ty == "f32" else "arith.addi"
        total = list(values)
        for other in range(s.warps_k - 1):
            for i in range(n):
                total[i] = e.op(f"{add} {total[i]}, {gpu.load(e, slot(e.i32(other), i), ty, gpu.SHARED)} : {ty}")
        return total

    def _reduce_splits(self, values: list[str]):
        """Sums the K splits of this tile: every block leaves its partial sums in the workspace, counts
        itself done on the tile's lock, and the last one adds all partials in split order (the same
        result whichever block finishes last), resets the lock for the next launch and stores."""
        e, s = self.e, self.s
        ty, n = ("i32" if self.int8 else "f32"), len(values)
        words = self.split_words  # per tile: [split][wn][value][lane], coalesced (split_k * warps_n * n * 32)

        def slot(split: str, i: int) -> str:
            w = e.op(f"arith.addi {e.op(f'arith.muli {split}, {e.i32(s.warps_n)} : i32')}, {self.wn} : i32")
            w = e.op(f"arith.addi {e.op(f'arith.muli {w}, {e.i32(n * 32)} : i32')}, {e.i32(i * 32)} : i32")
            w = e.op(f"arith.addi {e.op(f'arith.muli {self.tile}, {e.i32(words)} : i32')}, {w} : i32")
            w = e.op(f"arith.addi {w}, {self.lane} : i32")
            return gpu.gep(e, "%ws", e.op(f"arith.shli {gpu.i64(e, w)}, {e.i64(2)} : i64"), gpu.GLOBAL)

        first = e.op(f"arith.cmpi eq, {self.kw}, {e.i32(0)} : i32")
        with e.region(f"scf.if {first} {{"):
            for i, v in enumerate(values):
                gpu.store(e, v, slot(self.split, i), ty)
        gpu.fence_gpu(e)
        gpu.barrier(e)
        lock = gpu.gep(e, "%locks", e.op(f"arith.shli {gpu.i64(e, self.tile)}, {e.i64(2)} : i64"), gpu.GLOBAL)
        flag = gpu.gep(e, self.smem, e.i32(0), gpu.SHARED, "i32")
        with e.region(f"scf.if {e.op(f'arith.cmpi eq, {self.tid}, {e.i32(0)} : i32')} {{"):
            done = gpu.atomic_add(e, lock, e.i32(1))
            gpu.store(e, done, flag, "i32", gpu.SHARED)
        gpu.barrier(e)
        done = gpu.load(e, flag, "i32", gpu.SHARED)
        with e.region(f"scf.if {e.op(f'arith.cmpi eq, {done}, {e.i32(s.split_k - 1)} : i32')} {{"):
            gpu.fence_gpu(e)
            total = []
            for i in range(n):
                word = gpu.load_l2(e, slot(e.i32(0), i))
                acc = word if self.int8 else e.op(f"llvm.bitcast {word} : i32 to f32")
                for z in range(1, s.split_k):
                    acc = gpu.add_from_l2(e, acc, slot(e.i32(z), i), ty)
                total.append(acc)
            with e.region(f"scf.if {e.op(f'arith.cmpi eq, {self.tid}, {e.i32(0)} : i32')} {{"):
                gpu.store(e, e.i32(0), lock, "i32")
            self._epilogue(total)

    def _epilogue(self, values: list[str]):
        """acc (+ bias) -> out_dtype, stored by the kw = 0 warps where row < m and col < N."""
        e, cfg = self.e, self.cfg
        out_ty = mlir_type(cfg["out_dtype"])
        first = e.op(f"arith.cmpi eq, {self.kw}, {e.i32(0)} : i32")
        row0, col0, places = self._output_places()
        for v, (drow, dcol) in zip(values, places, strict=True):
            row = e.op(f"arith.addi {row0}, {e.const(drow, 'i32')} : i32")
            col = e.op(f"arith.addi {col0}, {e.const(dcol, 'i32')} : i32")
            ok = e.op(f"arith.andi {e.op(f'arith.cmpi ult, {row}, %m : i32')}, "
                      f"{e.op(f'arith.cmpi ult, {col}, {e.i32(self.N)} : i32')} : i1")
            ok = e.op(f"arith.andi {ok}, {first} : i1")
            with e.region(f"scf.if {ok} {{"):
                result = self._convert_out(v, col, out_ty)
                idx64 = e.op(f"arith.addi {e.op(f'arith.muli {gpu.i64(e, row)}, {e.i64(self.N)} : i64')}, {gpu.i64(e, col)} : i64")
                off = e.op(f"arith.muli {idx64}, {e.const(ELEM_BYTES[out_ty], 'i64')} : i64")
                gpu.store(e, result, gpu.gep(e, "%out", off, gpu.GLOBAL), out_ty)

    def _output_places(self) -> tuple:
        """(row base, column base, per output value its (row, column) offset from them), in the order
        of the values the main loop leaves."""
        e, s = self.e, self.s
        two_q = e.op(f"arith.shli {self.q}, {e.i32(1)} : i32")
        if self.swapped:  # value 2 i + j of slot (rg, p): row 8 rg + 2q + j, column 16 p + 8 i + g
            per_slot = 2 if s.warp_n_tiles == 1 else 4
            places = [(8 * rg + c % 2, 16 * p + 8 * (c // 2)) for rg in range(self.row_groups)
                      for p in range(self.pairs) for c in range(per_slot)]
            return (e.op(f"arith.addi {self.m_block}, {two_q} : i32"),
                    e.op(f"arith.addi {self.n_warp}, {self.g} : i32"), places)
        places = [(16 * mt + 8 * (c // 2), 8 * nt + c % 2) for mt in range(self.m_tiles)
                  for nt in range(s.warp_n_tiles) for c in range(4)]  # (row g | g+8) x (col 2q | 2q+1)
        return (e.op(f"arith.addi {self.m_block}, {self.g} : i32"),
                e.op(f"arith.addi {self.n_warp}, {two_q} : i32"), places)

    def _acc_values(self, acc: list[str]) -> list[str]:
        """Accumulators as f32 (float A) or i32 scalars, 4 per mma tile in (g, 2q), (g, 2q+1), (g+8, 2q),
        (g+8, 2q+1) order."""
        e = self.e
        if self.acc_kind != "f16.f16":
            return list(acc)
        halves = [e.op(f"llvm.extractelement {reg}[{e.i32(j)} : i32] : vector<2xf16>") for reg in acc for j in (0, 1)]
        return [e.op(f"arith.extf {h} : f16 to f32") for h in halves]

    def _convert_out(self, v: str, col: str, out_ty: str) -> str:
        e, cfg = self.e, self.cfg
        if self.s8_scale:  # exact: every product carried the factor
            v = e.op(f"arith.shrsi {v}, {e.i32(self.s8_scale)} : i32")
        bias_ptr = None
        if cfg["with_bias"]:
            bias_ty = "i32" if out_ty in ("i8", "i32") else out_ty
            off = e.op(f"arith.muli {gpu.i64(e, col)}, {e.const(ELEM_BYTES[bias_ty], 'i64')} : i64")
            bias_ptr = (gpu.gep(e, "%bias", off, gpu.GLOBAL), bias_ty)
        if out_ty in ("i8", "i32"):
            if bias_ptr:
                v = e.op(f"arith.addi {v}, {gpu.load(e, *bias_ptr)} : i32")
            return saturate_to_i8(e, v) if out_ty == "i8" else v
        f = e.op(f"arith.sitofp {v} : i32 to f32") if self.int8 else v
        if bias_ptr:
            b = gpu.load(e, *bias_ptr)
            b = b if bias_ptr[1] == "f32" else e.op(f"arith.extf {b} : f16 to f32")
            f = e.op(f"arith.addf {f}, {b} : f32")
        return f if out_ty == "f32" else e.op(f"arith.truncf {f} : f32 to f16")


class WgmmaKernel(MatmulKernel):
    """The sm_90a prefill kernel: each warpgroup (4 warps; `warpgroups` of them a block) computes
    64 * m64_tiles weight rows x block_m activation rows with wgmma.mma_async m64 n(block_m) k16.

    The operands are swapped as in the decode blocks: the weights are wgmma's A, decoded (and scaled) in
    registers straight into its fragments (warp w holds rows 16 w .. 16 w + 15 of each 64-row tile, which
    are two n8 tiles of the stored layout), loaded from global memory or, with w_smem, from the stages;
    the activations are its B, copied with cp.async into shared-memory stages of 128-byte rows under the
    128-byte swizzle and read by descriptor. Per iteration: wait for the stage and make it visible to the
    async proxy, sync, refill the stage two iterations back, then per k16 step decode, fence, issue one
    wgmma per 64-row tile and commit, keeping one group in flight. At an iteration's barrier every warp
    is past the first group of the iteration before, so the wgmmas that read the refilled stage are done
    and the tensor cores never drain. Accumulates in f32."""

    def __init__(self, cfg: dict, sched: MatmulSchedule, operands: list[str]):
        super().__init__(cfg, sched, operands)
        self.acc_kind = "f16.f32"
        self.scale_after = False
        self.column_block = sched.block_m * gpu.SWIZZLE_BYTES  # one 64-k column of the stage's rows

    def emit(self) -> str:
        e = self.e = Emitter(indent=6)
        s = self.s
        self._prologue()
        self._aligned_stages()
        self._a_copier()
        for st in range(s.stages - 2):
            self._copy_stage(self._iteration(st), e.i32(st * self.stage_bytes))
            gpu.cp_async_commit(e)

        def iteration(kt, read_base, write_base, loads, accs):
            gpu.cp_async_wait(e, s.stages - 3)  # this iteration's stage has landed
            gpu.fence_proxy_async_shared(e)
            # ... for every thread; and every warp is past the first wgmma group of the previous
            # iteration, so the wgmmas of the one before it, which read the stage refilled now, are done
            gpu.barrier(e)
            self._copy_stage(e.op(f"arith.addi {kt}, {e.const(s.stages - 2, 'i32')} : i32"), write_base)
            gpu.cp_async_commit(e)
            refill = self._load_stage(e.op(f"arith.addi {kt}, {e.i32(s.w_prefetch)} : i32"))
            accs = self._wgmma_iteration(kt, read_base, loads, accs)
            return accs, refill, self._next_stage(read_base), self._next_stage(write_base)

        # the stage refilled first is that of iteration stages - 2 (then always kt + stages - 2 = kt - 2)
        results = self._main_loop((s.stages - 2) * self.stage_bytes, e.const(0.0, "f32"), "f32",
                                  s.m64_tiles * s.block_m // 2, iteration)
        # first after the loop: with another wait between, ptxas hoisted the epilogue's accumulator
        # reads above this one (reading in-flight wgmma results; docs/design.md)
        gpu.wgmma_wait(e, 0)
        gpu.cp_async_wait(e, 0)  # the last iterations' copies (zero fills past K) land before the epilogue reuses the stages
        self._epilogue(results)
        return self._wrap(e.text())

    def _aligned_stages(self):
        """Moves self.smem to the first 1 KB boundary of the dynamic shared memory (the launch adds 1 KB):
        the swizzle pattern is a function of address bits 4-9."""
        e = self.e
        address = e.op(f"arith.trunci {e.op(f'llvm.ptrtoint {self.smem} : {gpu.SHARED} to i64')} : i64 to i32")
        pad = e.op(f"arith.andi {e.op(f'arith.subi {e.i32(0)}, {address} : i32')}, {e.i32(gpu.SWIZZLE_ATOM - 1)} : i32")
        self.smem = gpu.gep(e, self.smem, pad, gpu.SHARED, "i32")
        self.smem_address = e.op(f"arith.addi {address}, {pad} : i32", "smem_at")

    def _block_tile(self) -> tuple[str, str]:
        """(column tile, row tile) of this block, the grid's blocks taken in groups of RASTER_ROWS row
        tiles, row tile fastest: the blocks running at one time cover a squarish region of the output,
        so that the weight and activation tiles they share are read from memory once and then from L2
        (in grid order a wave would sweep all of W for a few row tiles)."""
        e = self.e
        grid_x, grid_y = (gpu.special_reg(e, f"gpu.grid_dim {d}") for d in ("x", "y"))
        bx, by = super()._block_tile()
        linear = e.op(f"arith.addi {e.op(f'arith.muli {by}, {grid_x} : i32')}, {bx} : i32")
        per_group = e.op(f"arith.muli {grid_x}, {e.i32(RASTER_ROWS)} : i32")
        group = e.op(f"arith.divui {linear}, {per_group} : i32")
        first = e.op(f"arith.muli {group}, {e.i32(RASTER_ROWS)} : i32")
        rows = e.op(f"arith.minui {e.op(f'arith.subi {grid_y}, {first} : i32')}, {e.i32(RASTER_ROWS)} : i32")
        within = e.op(f"arith.remui {linear}, {per_group} : i32")
        return (e.op(f"arith.divui {within}, {rows} : i32", "tn"),
                e.op(f"arith.addi {first}, {e.op(f'arith.remui {within}, {rows} : i32')} : i32", "tm"))

    def _ids(self):
        super()._ids()
        e = self.e
        self.kw = e.i32(0)  # no K-split warps: every warp stores
        # the first weight row of this warp: its warpgroup's 64 * m64_tiles rows, then 16 rows a warp
        group = e.op(f"arith.shrui {self.warp}, {e.i32(2)} : i32", "wg")
        in_group = e.op(f"arith.andi {self.warp}, {e.i32(3)} : i32")
        first = e.op(f"arith.addi {e.op(f'arith.muli {group}, {e.i32(64 * self.s.m64_tiles)} : i32')}, "
                     f"{e.op(f'arith.muli {in_group}, {e.i32(16)} : i32')} : i32")
        self.n_in_block = first
        self.n_warp = e.op(f"arith.addi {self.n_block}, {first} : i32", "nw")

    def _n_col(self, nt: int) -> str:
        """Row of W (output column) of this thread in n8 tile `nt`: tiles 2 j and 2 j + 1 are rows 0-7 and
        8-15 of this warp's 16 in its warpgroup's 64-row tile j. Clamped inside N for loads."""
        e = self.e
        n = e.op(f"arith.addi {self.n_warp}, {e.i32(64 * (nt // 2) + 8 * (nt % 2))} : i32")
        n = e.op(f"arith.addi {n}, {self.g} : i32", "n")
        return e.op(f"arith.minui {n}, {e.const(self.N - 1, 'i32')} : i32", "nc")

    def _a_copier(self):
        """The per-thread constants of the A copy. Thread t copies 16-byte chunk t % C of rows t // C +
        R i (C chunks a row, R = 128 / C rows a round, round i): one source pointer and one destination
        offset serve every round (an immediate apart), so that no per-round address stays live across
        the loop. With R < 8 the rows' swizzle differs by round: row % 8 = t // C | (R i % 8), so the
        chunk's swizzle is (chunk ^ t // C) ^ (R i % 8)."""
        e = self.e
        per_row = self.KB // 8
        self.a_rows_per_round = self.s.threads // per_row
        row = e.op(f"arith.divui {self.tid}, {e.i32(per_row)} : i32")
        chunk = e.op(f"arith.remui {self.tid}, {e.i32(per_row)} : i32")
        self.a_k = e.op(f"arith.muli {chunk}, {e.i32(8)} : i32", "ak")  # the chunk's first k within the iteration
        grow = e.op(f"arith.addi {self.m_block}, {row} : i32")
        elem = e.op(f"arith.addi {e.op(f'arith.muli {gpu.i64(e, grow)}, {e.i64(self.K)} : i64')}, {gpu.i64(e, self.a_k)} : i64")
        self.a_src = gpu.gep(e, "%a", e.op(f"arith.shli {elem}, {e.i64(1)} : i64"), gpu.GLOBAL)
        # rows of this thread's chunks that lie below m, in rounds (negative: none)
        left = e.op(f"arith.subi %m, {grow} : i32")
        self.a_rounds = e.op(f"arith.divsi {e.op(f'arith.addi {left}, {e.i32(self.a_rows_per_round - 1)} : i32')}, "
                             f"{e.i32(self.a_rows_per_round)} : i32", "rounds")
        column = e.op(f"arith.muli {e.op(f'arith.shrui {chunk}, {e.i32(3)} : i32')}, {e.i32(self.column_block)} : i32")
        self.a_row_at = e.op(f"arith.addi {column}, {e.op(f'arith.muli {row}, {e.i32(gpu.SWIZZLE_BYTES)} : i32')} : i32")
        self.a_chunk = e.op(f"arith.xori {e.op(f'arith.andi {chunk}, {e.i32(7)} : i32')}, "
                            f"{e.op(f'arith.andi {row}, {e.i32(7)} : i32')} : i32", "swz")

    def _copy_a(self, kt: str, stage_base: str):
        """Issues the copy of iteration `kt`'s block_m x KB tile of A into the swizzled stage at byte
        `stage_base`; chunks past m or K are zero-filled (iterations past the last one copy zeros)."""
        e, R = self.e, self.a_rows_per_round
        k = e.op(f"arith.addi {e.op(f'arith.muli {kt}, {e.i32(self.KB)} : i32')}, {self.a_k} : i32")
        k_ok = e.op(f"arith.cmpi ult, {k}, {e.i32(self.K)} : i32")
        src = gpu.gep(e, self.a_src, e.op(f"arith.muli {gpu.i64(e, kt)}, {e.i64(2 * self.KB)} : i64"), gpu.GLOBAL)
        dst_row = e.op(f"arith.addi {stage_base}, {self.a_row_at} : i32")
        for i in range(self.s.block_m // R):
            ok = e.op(f"arith.andi {k_ok}, {e.op(f'arith.cmpi sgt, {self.a_rounds}, {e.i32(i)} : i32')} : i1")
            size = e.op(f"arith.select {ok}, {e.i32(16)}, {e.i32(0)} : i32")
            chunk = e.op(f"arith.xori {self.a_chunk}, {e.i32(R * i % 8)} : i32") if R * i % 8 else self.a_chunk
            dst = e.op(f"arith.addi {dst_row}, {e.i32(R * i * gpu.SWIZZLE_BYTES)} : i32")
            dst = e.op(f"arith.addi {dst}, {e.op(f'arith.shli {chunk}, {e.i32(4)} : i32')} : i32")
            gpu.cp_async_16(e, gpu.gep(e, self.smem, dst, gpu.SHARED, "i32"),
                            gpu.gep(e, src, e.i64(2 * R * i * self.K), gpu.GLOBAL), size)

    def _wgmma_iteration(self, kt: str, read_base: str, stage: list[str], accs: list[str]) -> list[str]:
        """Decodes this iteration's weights step by step and issues the wgmmas on the A stage at byte
        `read_base` of the aligned shared memory."""
        e, s, cfg = self.e, self.s, self.cfg
        per_unit = len(stage) // self.U
        n_words = 0 if s.w_smem else 4 * s.warp_n_tiles
        steps = self.SB // self.layout.mma_k
        per_tile = len(accs) // s.m64_tiles
        accs = [list(accs[j * per_tile:(j + 1) * per_tile]) for j in range(s.m64_tiles)]
        desc = gpu.smem_descriptor(e, e.op(f"arith.addi {self.smem_address}, {read_base} : i32"))
        for j, sb in enumerate(self._superblocks(kt)):
            unit = stage[j * per_unit:(j + 1) * per_unit]
            words, raw_params = unit[:n_words], unit[n_words:]
            if s.w_smem:
                words = self._read_w(read_base, j)
            params = [self._group_params(sb, raw_params, nt) if cfg["with_scaling"] else None
                      for nt in range(s.warp_n_tiles)]
            decoded = {}  # (tile, word) -> that word's registers, decoded where first needed
            per_word = max(self.layout.word_elems // self.layout.per_reg, 1)

            def reg(nt: int, r: int) -> str:
                key = (nt, r // per_word)
                if key not in decoded:
                    decoded[key] = decode_word_f16(e, words[4 * nt + key[1]], cfg["W_dtype"], self.table)
                x = decoded[key][r % per_word]
                if params[nt] is not None:
                    x = dequantize(e, x, gpu.F16X2, cfg["zeros_mode"], *params[nt][r // 2])
                return e.op(f"llvm.bitcast {x} : vector<2xf16> to i32")

            for step in range(steps):
                k_step = j * steps + step  # k16 step within the iteration's KB columns
                offset = (k_step // 4) * self.column_block + (k_step % 4) * 32
                b = e.op(f"arith.addi {desc}, {e.i64(offset >> 4)} : i64")
                a_frags = [_tile_pair_fragment(reg, 2 * t, 2 * t + 1, step) for t in range(s.m64_tiles)]
                gpu.wgmma_fence(e)
                for t in range(s.m64_tiles):
                    accs[t] = gpu.wgmma_f16_rs(e, s.block_m, accs[t], a_frags[t], b)
                gpu.wgmma_commit(e)
                gpu.wgmma_wait(e, 1)  # the previous step's fragments are free again
        return [v for tile in accs for v in tile]

    def _epilogue(self, values: list[str]):
        """acc (+ bias) -> out_dtype, staged through shared memory as the block's [block_m][block_n] output
        tile, then stored row by row in 16-byte pieces where m, N and the output's alignment allow
        (element by element otherwise): coalesced stores, and no address per accumulator."""
        e, s, cfg = self.e, self.s, self.cfg
        out_ty = mlir_type(cfg["out_dtype"])
        size = ELEM_BYTES[out_ty]
        row_bytes = wgmma_out_row_bytes(_Cfg(cfg), s)
        gpu.barrier(e)  # every warp's wgmmas are done: the stages are free
        places = self._tile_places()
        two_q = e.op(f"arith.shli {self.q}, {e.i32(1)} : i32")
        col = e.op(f"arith.addi {self.n_in_block}, {self.g} : i32")
        mine = e.op(f"arith.addi {e.op(f'arith.muli {two_q}, {e.i32(row_bytes)} : i32')}, "
                    f"{e.op(f'arith.muli {col}, {e.i32(size)} : i32')} : i32")
        n_first = e.op(f"arith.addi {self.n_block}, {col} : i32")
        for v, (drow, dcol) in zip(values, places, strict=True):
            n = e.op(f"arith.minui {e.op(f'arith.addi {n_first}, {e.i32(dcol)} : i32')}, {e.i32(self.N - 1)} : i32")
            at = e.op(f"arith.addi {mine}, {e.i32(drow * row_bytes + dcol * size)} : i32")
            gpu.store(e, self._convert_out(v, n, out_ty), gpu.gep(e, self.smem, at, gpu.SHARED, "i32"), out_ty, gpu.SHARED)
        gpu.barrier(e)
        per_piece = 16 // size
        pieces = s.block_n // per_piece  # of a row
        rows = s.threads // pieces  # a round
        piece = e.op(f"arith.remui {self.tid}, {e.i32(pieces)} : i32")
        row = e.op(f"arith.divui {self.tid}, {e.i32(pieces)} : i32")
        n0 = e.op(f"arith.addi {self.n_block}, {e.op(f'arith.muli {piece}, {e.i32(per_piece)} : i32')} : i32")
        m0 = e.op(f"arith.addi {self.m_block}, {row} : i32")
        src0 = e.op(f"arith.addi {e.op(f'arith.muli {row}, {e.i32(row_bytes)} : i32')}, "
                    f"{e.op(f'arith.shli {piece}, {e.i32(4)} : i32')} : i32")
        elem0 = e.op(f"arith.addi {e.op(f'arith.muli {gpu.i64(e, m0)}, {e.i64(self.N)} : i64')}, {gpu.i64(e, n0)} : i64")
        dst0 = gpu.gep(e, "%out", e.op(f"arith.muli {elem0}, {e.i64(size)} : i64"), gpu.GLOBAL)
        address = e.op(f"llvm.ptrtoint %out : {gpu.GLOBAL} to i64")
        aligned = e.op(f"arith.cmpi eq, {e.op(f'arith.andi {address}, {e.i64(15)} : i64')}, {e.i64(0)} : i64")
        whole = self.N % per_piece == 0 and aligned
        with e.region(f"scf.if {whole or e.const(0, 'i1')} {{", "} else {"):
            for i in range(s.block_m // rows):
                m_ok = e.op(f"arith.cmpi ult, {e.op(f'arith.addi {m0}, {e.i32(rows * i)} : i32')}, %m : i32")
                ok = e.op(f"arith.andi {m_ok}, {e.op(f'arith.cmpi ult, {n0}, {e.i32(self.N)} : i32')} : i1")
                with e.region(f"scf.if {ok} {{"):
                    src = gpu.gep(e, self.smem, e.op(f"arith.addi {src0}, {e.i32(rows * i * row_bytes)} : i32"), gpu.SHARED, "i32")
                    v = e.op(f"llvm.load {src} {{alignment = 16 : i64}} : {gpu.SHARED} -> vector<4xi32>")
                    dst = gpu.gep(e, dst0, e.i64(rows * i * self.N * size), gpu.GLOBAL)
                    e.line(f"llvm.store {v}, {dst} {{alignment = 16 : i64}} : vector<4xi32>, {gpu.GLOBAL}")
        with e.region(None):  # else: element by element
            for i in range(s.block_m // rows):
                for j in range(per_piece):
                    m_ok = e.op(f"arith.cmpi ult, {e.op(f'arith.addi {m0}, {e.i32(rows * i)} : i32')}, %m : i32")
                    n_ok = e.op(f"arith.cmpi ult, {e.op(f'arith.addi {n0}, {e.i32(j)} : i32')}, {e.i32(self.N)} : i32")
                    ok = e.op(f"arith.andi {m_ok}, {n_ok} : i1")
                    with e.region(f"scf.if {ok} {{"):
                        src = gpu.gep(e, self.smem, e.op(f"arith.addi {src0}, {e.i32(rows * i * row_bytes + j * size)} : i32"),
                                      gpu.SHARED, "i32")
                        dst = gpu.gep(e, dst0, e.i64((rows * i * self.N + j) * size), gpu.GLOBAL)
                        gpu.store(e, gpu.load(e, src, out_ty, gpu.SHARED), dst, out_ty)

    def _tile_places(self) -> list[tuple[int, int]]:
        """Per accumulator, in order: (activation row from 2 q, weight row from this warp's first + g).
        wgmma accumulator 4 c + 2 h + j of 64-row tile t is weight row 64 t + 8 h + g of the warp's and
        activation row 8 c + 2 q + j."""
        return [(8 * (i // 4) + i % 2, 64 * t + 8 * ((i // 2) % 2)) for t in range(self.s.m64_tiles)
                for i in range(self.s.block_m // 2)]


class _Cfg:
    """Attribute view of a config dict, for helpers written against MatmulConfig."""

    def __init__(self, d):
        self.__dict__.update(d)


def _tile_pair_fragment(reg, low: int, high: int, step: int) -> list:
    """The 4 registers of an m16 x k16 A fragment made of n8 weight tiles `low` (rows 0-7) and `high`
    (rows 8-15) at mma step `step`: (rows 0-7, k-low), (rows 8-15, k-low), (rows 0-7, k-high), (rows
    8-15, k-high). Each tile's decoded registers are its B fragments, 2 a step (k-low, k-high);
    `reg(tile, r)` gives register r of a tile."""
    return [reg(tile, 2 * step + k) for k in (0, 1) for tile in (low, high)]


def _splat(e: Emitter, scalar: str) -> str:
    v = e.op("llvm.mlir.undef : vector<2xf16>")
    v = e.op(f"llvm.insertelement {scalar}, {v}[{e.const(0, 'i32')} : i32] : vector<2xf16>")
    return e.op(f"llvm.insertelement {scalar}, {v}[{e.const(1, 'i32')} : i32] : vector<2xf16>", "splat")


def _bits_at(e: Emitter, word: str, shift: str, bits: int) -> str:
    """The `bits`-wide field at bit `shift` of an i32."""
    return e.op(f"arith.andi {e.op(f'arith.shrui {word}, {shift} : i32')}, {e.i32((1 << bits) - 1)} : i32")


def _as_f16(e: Emitter, raw: str) -> str:
    """The f16 in the low 16 bits of an i32."""
    return e.op(f"llvm.bitcast {e.op(f'arith.trunci {raw} : i32 to i16')} : i16 to f16")


def read_schedule(op: ir.Operation) -> MatmulSchedule:
    if "lowbit.schedule" not in op.attributes:
        raise ValueError("lowbit.matmul needs a `lowbit.schedule` attribute for the GPU lowering "
                         "(lowbit compile adds the default one; see lowbit.compiler.schedule)")
    d = ir.DictAttr(op.attributes["lowbit.schedule"])
    required = [f.name for f in fields(MatmulSchedule) if f.default is MISSING]
    missing = [name for name in required if name not in d]
    if missing:
        raise ValueError(f"lowbit.schedule lacks the fields {missing} (fields with defaults may be left out: "
                         f"{[f.name for f in fields(MatmulSchedule) if f.default is not MISSING]})")
    sched = MatmulSchedule(**{f.name: ir.IntegerAttr(d[f.name]).value for f in fields(MatmulSchedule) if f.name in d})
    sched.check()
    return sched


def emit_launch(kernel: MatmulKernel, types: dict) -> str:
    """A host function launching `kernel` on the memrefs of a lowbit.matmul (bare pointers + m)."""
    e = Emitter(indent=4)
    s, cfg = kernel.s, kernel.cfg
    args = [(p, gpu.GLOBAL) for p in gpu.host_pointers(e, types)]
    m = e.op(f"memref.dim %a, {e.const(0, 'index')} : {types['a']}", "m")
    gx = e.const(-(-cfg["N"] // s.block_n), "index")
    gy = e.op(f"arith.ceildivui {m}, {e.const(s.block_m, 'index')} : index", "gy")
    buffers = []
    if s.split_k > 1:  # the K-split workspace and the tiles' locks (zero), for this launch alone
        tiles = e.op(f"arith.muli {gx}, {gy} : index")
        words = e.op(f"arith.muli {tiles}, {e.const(kernel.split_words, 'index')} : index")
        ws = e.op(f"gpu.alloc ({words}) : memref<?xi32>", "ws")
        locks = e.op(f"gpu.alloc ({tiles}) : memref<?xi32>", "locks")
        e.line(f"gpu.memset {locks}, {e.const(0, 'i32')} : memref<?xi32>, i32")
        buffers = [ws, locks]
        args += [(p, gpu.GLOBAL) for p in gpu.host_pointers(e, {b[1:]: "memref<?xi32>" for b in buffers})]
    args.append((e.op(f"arith.index_cast {m} : index to i32"), "i32"))
    gpu.launch_func(e, GPU_MODULE, kernel.name, (gx, gy, s.split_k), s.threads, args, kernel.smem_bytes)
    for b in buffers:
        e.line(f"gpu.dealloc {b} : memref<?xi32>")
    return e.text()


class MatmulToGpu(RewritePattern):
    """Replaces a lowbit.matmul by a launch of a generated tensor-core kernel."""

    op_name = MATMUL_OP

    def rewrite(self, op, module):
        config, types = verified_matmul(op)
        sched = read_schedule(op)
        kernel = (WgmmaKernel if sched.wgmma else MatmulKernel)(config.as_dict(), sched, list(types))
        kernel_text = kernel.emit()
        replace_with_launch(op, module, "lowbit_matmul_launch_", emit_launch(kernel, types), kernel_text, types,
                            GPU_MODULE)


class LowerMatmulToGpu(ModulePass):
    name = "lowbit-lower-matmul-to-gpu"
    description = ("Lower lowbit.matmul to a tensor-core kernel (mma.sync, or wgmma with schedule wgmma=1: "
                   "cp.async stages for A, register-decoded weights) in gpu.module @lowbit_kernels, launched "
                   "with gpu.launch_func.")
    patterns = (MatmulToGpu,)
