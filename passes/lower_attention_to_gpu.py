"""lowbit-lower-attention-to-gpu: `lowbit.attention` -> a FlashAttention-2 style tensor-core kernel.

Kernel design (one block per `block_q` query rows of one (batch, head); see docs/perf-notes-attention.md):
- Q: the block's rows are copied to shared memory with cp.async (zero past seq_len) and read as mma A
  fragments with ldmatrix, once into registers (`q_in_regs`) or for every K tile.
- K and V: tiles of `block_kv` keys stream through a `stages`-deep ring of shared-memory slots with
  cp.async (16-byte copies, zero-filled past seq_len); one barrier per tile. K is read as mma B fragments
  with ldmatrix ('nnn': K rows are [key][dim]) or ldmatrix.trans ('ntn': the tile is [dim][key]); V with
  ldmatrix.trans.
- S = Q K^T with mma.sync m16n8k16 (f16 in, f32 accumulate); online softmax in f32 on the accumulator
  registers: running row max (quad shuffles), p = 2^(s * log2(e)/sqrt(dim) - max'), running row sum
  (thread-local, reduced at the end), the output rescaled by 2^(max'_old - max'_new).
- P: the S accumulators of two n8 tiles are exactly the A fragment of one m16n8k16 over 16 keys, so P
  is rounded to f16 in registers and multiplied with V without touching shared memory.
- Causal: tiles entirely above the diagonal are never loaded; tiles that need a mask (the diagonal
  ones and the one crossing seq_len) run in a second loop that masks scores to -inf. Blocks of a head
  run heaviest (last query block) first.
- Overlap (schedule `overlap`, stages >= 3): the loop is software-pipelined: iteration t waits for tile
  t+1, issues S_{t+1} = Q K_{t+1}^T, then the softmax of S_t and P V_t, so the tensor cores have work during
  the softmax; S_0 is computed before the loops and the last tile after them.
- Epilogue: divide by the row sum, round to f16, store rows < seq_len.
Every value (shapes, strides, tile counts of non-causal configs) is a compile-time constant of the config;
a kernel takes the four bare pointers (q, k, v, out), 16-byte aligned, and runs on a 1-D grid of
ceil(seq_len / block_q) * batch * heads blocks with the dynamic shared memory of `attention_smem_bytes`.
"""
from __future__ import annotations

import math
from dataclasses import fields

from lowbit.compiler.schedule import AttentionSchedule, attention_schedule, attention_smem_bytes
from lowbit.config import FlashAttenConfig
from lowbit.dialects.lowbit import ATTENTION_OP, _value
from mlir import ir

from .base import ModulePass, RewritePattern, replace_with_launch, symbol_suffix
from .emitters import gpu
from .emitters.ir import Emitter
from .lower_attention_to_loops import ATTENTION_FIELDS
from .lower_matmul_to_gpu import GPU_MODULE
from .verify import verified_attention

LOG2E = 1.4426950408889634
# Row max as a balanced tree (log depth) instead of a chain: measured at compile time to raise register
# pressure (more spills at dim 128), so off.
TREE_MAX = False
NEG_INF = "0xFF800000"


class AttentionKernel:
    """Emits the text of one attention kernel for a config (dict of ATTENTION_FIELDS) and schedule."""

    def __init__(self, cfg: dict, sched: AttentionSchedule):
        self.cfg, self.s = cfg, sched
        self.B, self.H, self.HK = cfg["batch"], cfg["heads"], cfg["kv_heads"]
        self.S, self.D = cfg["seq_len"], cfg["dim"]
        self.causal, self.ntn = bool(cfg["is_causal"]), cfg["layout"] == "ntn"
        self.group = self.H // self.HK
        s = sched
        self.T = s.threads
        self.MT = s.m_tiles
        self.NT = s.block_kv // 8  # n8 tiles of scores per m16 tile
        self.DT = self.D // 8  # n8 tiles of the output per m16 tile
        self.KS = self.D // 16  # k16 steps of Q K^T
        self.PS = s.block_kv // 16  # k16 steps of P V
        self.row = 2 * self.D + 16  # padded shared-memory row of Q, V and 'nnn' K (bytes)
        self.krow = 2 * s.block_kv + 16 if self.ntn else self.row  # 'ntn' K tile rows are [dim][key]
        self.k_bytes = (self.D if self.ntn else s.block_kv) * self.krow
        self.stage_bytes = self.k_bytes + s.block_kv * self.row
        self.q_bytes = s.block_q * self.row
        self.q_overlay = s.q_in_regs and self.q_bytes <= self.stage_bytes
        self.q_off = (s.stages - 1 if self.q_overlay else s.stages) * self.stage_bytes
        self.smem_bytes = attention_smem_bytes(_Cfg(cfg), s)
        assert self.smem_bytes == max(s.stages * self.stage_bytes, self.q_off + self.q_bytes)
        self.n_qblocks = -(-self.S // s.block_q)
        self.grid = self.n_qblocks * self.B * self.H
        self.k_vector = not self.ntn or self.S % 8 == 0  # 16-byte aligned K copies
        # global strides in bytes
        self.q_stride = self.H * self.D * 2  # one query position of Q / out
        self.kv_stride = self.HK * self.D * 2  # one key position of V ('nnn' K)
        self.kt_stride = self.HK * self.S * 2  # one dim row of 'ntn' K
        self.scale_log2 = LOG2E / math.sqrt(self.D)
        self.name = None

    # ------------------------------------------------------------------ the kernel
    def emit(self) -> str:
        e = self.e = Emitter(indent=6)
        s = self.s
        self._ids()
        self._bases()
        # prologue: Q (group 0), then K/V tiles 0 .. stages-2 (one group each)
        self._copy_rows(self.q_off, self.q_ptr, s.block_q, self.D // 8, self.row, self.q_stride,
                        limit=self._sub(e.i32(self.S), self.q0))
        gpu.cp_async_commit(e)
        for st in range(s.stages - 1):
            with e.region(f"scf.if {e.op(f'arith.cmpi slt, {e.i32(st)}, {self.n_tiles} : i32')} {{"):
                self._copy_tile(e.i32(st))
            gpu.cp_async_commit(e)
        overlap = s.overlap
        gpu.cp_async_wait(e, s.stages - 2 if overlap else s.stages - 1)  # Q (and tile 0 when overlapping)
        gpu.barrier(e)
        self.q_frags = self._load_q_frags() if s.q_in_regs else None

        zero, ninf = e.const(0.0, "f32"), e.const(NEG_INF, "f32")
        n_o, n_r = self.MT * self.DT * 4, 2 * self.MT
        carried = [zero] * n_o + [ninf] * n_r + [zero] * n_r
        if overlap:  # the scores of tile 0 are computed before the loop, those of tile t + 1 in iteration t
            carried += _flat(self._qk(e.i32(0)))
            last = self._sub(self.n_tiles, e.i32(1))
            split = self._bin("minsi", self.n_full, last)
            bounds = [(e.i32(0), split, False), (split, last, True)]
        else:
            bounds = [(e.i32(0), self.n_full, False), (self.n_full, self.n_tiles, True)]
        state = carried
        for lo, hi, masked in bounds:
            with e.for_loop(lo, hi, e.i32(1), [(v, "f32") for v in state], hint="t", ty="i32") as loop:
                o, m, l = loop.args[:n_o], loop.args[n_o:n_o + n_r], loop.args[n_o + n_r:n_o + 2 * n_r]
                scores = _unflat(loop.args[n_o + 2 * n_r:], self.MT, self.NT) if overlap else None
                vals = self._tile(loop.iv, o, m, l, masked, scores)
                e.line(f"scf.yield {', '.join(vals)} : {', '.join(['f32'] * len(vals))}")
            state = loop.results
        o, l = state[:n_o], state[n_o + n_r:n_o + 2 * n_r]
        if overlap:  # the last tile: its scores are in hand and no next tile is fetched
            m = state[n_o:n_o + n_r]
            o, m, l = self._softmax_pv(last, _unflat(state[n_o + 2 * n_r:], self.MT, self.NT), o, m, l, True)
        self._epilogue(o, l)
        return self._wrap(e.text())

    def _wrap(self, body: str) -> str:
        self.name = "lowbit_attention_" + symbol_suffix(body)
        body = body.replace("@SMEM", f"@{self.name}_smem")
        params = ", ".join(f"%{n}: {gpu.GLOBAL}" for n in ("q", "k", "v", "out"))
        return (
            f"    {gpu.dynamic_shared_global(self.name + '_smem')}\n"
            f"    gpu.func @{self.name}({params}) kernel attributes {{known_block_size = array<i32: {self.T}, 1, 1>}} {{\n"
            f"{body}\n      gpu.return\n    }}"
        )

    # ------------------------------------------------------------------ small helpers
    def _bin(self, op: str, a: str, b: str, ty: str = "i32", hint: str = "v") -> str:
        return self.e.op(f"arith.{op} {a}, {b} : {ty}", hint)

    def _add(self, a, b, ty="i32"):
        return self._bin("addi", a, b, ty)

    def _sub(self, a, b, ty="i32"):
        return self._bin("subi", a, b, ty)

    def _mul(self, a, b, ty="i32"):
        return self._bin("muli", a, b, ty)

    def _addc(self, a: str, c: int, ty="i32") -> str:
        return a if c == 0 else self._add(a, self.e.const(c, ty), ty)

    def _i64(self, v: str) -> str:
        return self.e.op(f"arith.extsi {v} : i32 to i64")

    def _smem_ptr(self, off: str) -> str:
        return gpu.gep(self.e, self.smem, off, gpu.SHARED, "i32")

    # ------------------------------------------------------------------ indices and bases
    def _ids(self):
        e, s = self.e, self.s
        self.tid = gpu.special_reg(e, "gpu.thread_id x")
        bx = gpu.special_reg(e, "gpu.block_id x")
        self.lane = self._bin("andi", self.tid, e.i32(31), hint="lane")
        self.warp = self._bin("shrui", self.tid, e.i32(5), hint="warp")
        self.g = self._bin("shrui", self.lane, e.i32(2), hint="g")
        self.qd = self._bin("andi", self.lane, e.i32(3), hint="qd")
        qb = self._bin("remui", bx, e.i32(self.n_qblocks), hint="qb")
        if self.causal:  # the heaviest query blocks of a head first
            qb = self._sub(e.i32(self.n_qblocks - 1), qb)
        bh = self._bin("divui", bx, e.i32(self.n_qblocks), hint="bh")
        self.b = self._bin("divui", bh, e.i32(self.H), hint="b")
        self.h = self._bin("remui", bh, e.i32(self.H), hint="h")
        self.hk = self._bin("divui", self.h, e.i32(self.group), hint="hk")
        self.q0 = self._mul(qb, e.i32(s.block_q))
        # the first query row of this warp
        self.w0 = self._add(self.q0, self._mul(self.warp, e.i32(16 * self.MT)))
        bkv = s.block_kv
        if self.causal:
            rows_end = self._bin("minsi", self._addc(self.q0, s.block_q), e.i32(self.S))
            self.n_tiles = self._bin("divui", self._addc(rows_end, bkv - 1), e.i32(bkv), hint="ntiles")
            diag = self._bin("divui", self._addc(self.q0, 1), e.i32(bkv))
            self.n_full = self._bin("minsi", diag, e.i32(self.S // bkv), hint="nfull")
        else:
            self.n_tiles = e.i32(-(-self.S // bkv))
            self.n_full = e.i32(self.S // bkv)
        self.smem = e.op("llvm.mlir.addressof @SMEM : !llvm.ptr<3>", "smem")
        # ldmatrix lane addresses: lane 8*mi + r gives row r of matrix mi
        r = self._bin("andi", self.lane, e.i32(7))
        mi = self._bin("shrui", self.lane, e.i32(3))
        lo_bit = self._bin("andi", mi, e.i32(1))
        hi_bit = self._bin("shrui", mi, e.i32(1))

        def lane_off(row_bit, col_bit, row_bytes):
            rr = self._add(r, self._bin("shli", row_bit, e.i32(3)))
            return self._add(self._mul(rr, e.i32(row_bytes)), self._bin("shli", col_bit, e.i32(4)))

        # A fragments (Q) and transposed B fragments (V, 'ntn' K): matrices (r, c) (r+8, c) (r, c+8) (r+8, c+8)
        # B fragments of 'nnn' K: matrices (n, k) (n, k+8) (n+8, k) (n+8, k+8)
        q_lane = lane_off(lo_bit, hi_bit, self.row)
        self.q_lane = self._add(q_lane, self._addc(self._mul(self.warp, e.i32(16 * self.MT * self.row)), self.q_off))
        self.k_lane = lane_off(lo_bit, hi_bit, self.krow) if self.ntn else lane_off(hi_bit, lo_bit, self.krow)
        self.v_lane = self._addc(lane_off(lo_bit, hi_bit, self.row), self.k_bytes)

    def _bases(self):
        """Global pointers to Q[b, q0, h, 0], K/V of (b, hk) and out[b, 0, h, 0]."""
        e = self.e
        b64, h64, hk64 = self._i64(self.b), self._i64(self.h), self._i64(self.hk)
        q_elem = self._add(self._mul(self._mul(b64, e.i64(self.S), "i64"), e.i64(self.H), "i64"), h64, "i64")
        q_off = self._mul(q_elem, e.i64(self.D * 2), "i64")
        self.out_ptr = gpu.gep(e, "%out", q_off, gpu.GLOBAL)
        q_off = self._add(q_off, self._mul(self._i64(self.q0), e.i64(self.q_stride), "i64"), "i64")
        self.q_ptr = gpu.gep(e, "%q", q_off, gpu.GLOBAL)
        kv_elem = self._add(self._mul(self._mul(b64, e.i64(self.S), "i64"), e.i64(self.HK), "i64"), hk64, "i64")
        kv_off = self._mul(kv_elem, e.i64(self.D * 2), "i64")
        self.v_ptr = gpu.gep(e, "%v", kv_off, gpu.GLOBAL)
        if self.ntn:
            kt_elem = self._add(self._mul(self._mul(b64, e.i64(self.D), "i64"), e.i64(self.HK), "i64"), hk64, "i64")
            self.k_ptr = gpu.gep(e, "%k", self._mul(kt_elem, e.i64(self.S * 2), "i64"), gpu.GLOBAL)
        else:
            self.k_ptr = gpu.gep(e, "%k", kv_off, gpu.GLOBAL)

    # ------------------------------------------------------------------ copies into shared memory
    def _chunks(self, total_rows: int, per_row: int):
        """This thread's 16-byte chunks of a rows x per_row tile: (round, row, col, guard) per round;
        rows and cols are i32 values, guard a condition for the last partial round (or None)."""
        e, T = self.e, self.T
        total = total_rows * per_row
        out = []
        if T % per_row == 0:
            trow = self._bin("divui", self.tid, e.i32(per_row))
            tcol = self._bin("remui", self.tid, e.i32(per_row))
        for it in range(-(-total // T)):
            guard = None
            if total % T and it == total // T:
                guard = e.op(f"arith.cmpi ult, {self.tid}, {e.i32(total - it * T)} : i32")
            if T % per_row == 0:
                out.append((it, self._addc(trow, it * (T // per_row)), tcol, guard))
            else:
                c = self._addc(self.tid, it * T)
                out.append((it, self._bin("divui", c, e.i32(per_row)), self._bin("remui", c, e.i32(per_row)), guard))
        return out

    def _copy_rows(self, dst_base, src_ptr: str, rows: int, per_row: int, dst_row: int, src_row: int,
                   limit: str = None, limit_cols: bool = False):
        """cp.async of a rows x (per_row * 16 bytes) tile: smem[dst_base + row * dst_row + 16 * col] <-
        src_ptr[row * src_row + 16 * col]; chunks whose row (col when `limit_cols`) is >= `limit` are zeros."""
        e = self.e
        if isinstance(dst_base, int):
            dst_base = e.i32(dst_base)
        for _, row, col, guard in self._chunks(rows, per_row):
            def body():
                dst = self._add(dst_base, self._add(self._mul(row, e.i32(dst_row)), self._bin("shli", col, e.i32(4))))
                src_off = self._add(self._mul(self._i64(row), e.i64(src_row), "i64"),
                                    self._i64(self._bin("shli", col, e.i32(4))), "i64")
                size = e.i32(16)
                if limit is not None:
                    ok = e.op(f"arith.cmpi slt, {col if limit_cols else row}, {limit} : i32")
                    src_off = e.op(f"arith.select {ok}, {src_off}, {e.i64(0)} : i64")
                    size = e.op(f"arith.select {ok}, {e.i32(16)}, {e.i32(0)} : i32")
                gpu.cp_async_16(e, self._smem_ptr(dst), gpu.gep(e, src_ptr, src_off, gpu.GLOBAL), size)
            if guard:
                with e.region(f"scf.if {guard} {{"):
                    body()
            else:
                body()

    def _copy_k_scalar(self, slot_base: str, src_ptr: str, limit: str = None):
        """'ntn' K when seq_len is not a multiple of 8 (rows not 16-byte aligned): element copies."""
        e, s = self.e, self.s
        for _, d, j, guard in self._chunks(self.D, s.block_kv):
            def body():
                off = self._add(self._mul(self._i64(d), e.i64(self.kt_stride), "i64"),
                                self._i64(self._bin("shli", j, e.i32(1))), "i64")
                ok = None
                if limit is not None:
                    ok = e.op(f"arith.cmpi slt, {j}, {limit} : i32")
                    off = e.op(f"arith.select {ok}, {off}, {e.i64(0)} : i64")
                val = gpu.load(e, gpu.gep(e, src_ptr, off, gpu.GLOBAL), "f16")
                if ok:
                    val = e.op(f"arith.select {ok}, {val}, {e.const(0.0, 'f16')} : f16")
                dst = self._add(slot_base, self._add(self._mul(d, e.i32(self.krow)), self._bin("shli", j, e.i32(1))))
                gpu.store(e, val, self._smem_ptr(dst), "f16", gpu.SHARED)
            if guard:
                with e.region(f"scf.if {guard} {{"):
                    body()
            else:
                body()

    def _copy_tile(self, t: str):
        """Issues the copies of K/V tile `t` into ring slot t % stages; rows past seq_len read as zeros."""
        e, s = self.e, self.s
        full = e.op(f"arith.cmpi slt, {t}, {e.i32(self.S // s.block_kv)} : i32")
        with e.region(f"scf.if {full} {{", "} else {"):
            self._copy_tile_body(t, None)
        with e.region("", "}"):
            key0 = self._mul(t, e.i32(s.block_kv))
            self._copy_tile_body(t, self._sub(e.i32(self.S), key0))

    def _copy_tile_body(self, t: str, rows_left: str):
        e, s = self.e, self.s
        slot = self._bin("remui", t, e.i32(s.stages))
        base = self._mul(slot, e.i32(self.stage_bytes))
        key0 = self._i64(self._mul(t, e.i32(s.block_kv)))
        v_src = gpu.gep(e, self.v_ptr, self._mul(key0, e.i64(self.kv_stride), "i64"), gpu.GLOBAL)
        if self.ntn:
            k_src = gpu.gep(e, self.k_ptr, self._mul(key0, e.i64(2), "i64"), gpu.GLOBAL)
            if self.k_vector:
                limit = None
                if rows_left is not None:  # whole 8-key chunks: seq_len is a multiple of 8 here
                    limit = self._bin("shrui", self._addc(rows_left, 7), e.i32(3))
                self._copy_rows(base, k_src, self.D, s.block_kv // 8, self.krow, self.kt_stride, limit, True)
            else:
                self._copy_k_scalar(base, k_src, rows_left)
        else:
            k_src = gpu.gep(e, self.k_ptr, self._mul(key0, e.i64(self.kv_stride), "i64"), gpu.GLOBAL)
            self._copy_rows(base, k_src, s.block_kv, self.D // 8, self.krow, self.kv_stride, rows_left)
        self._copy_rows(self._addc(base, self.k_bytes), v_src, s.block_kv, self.D // 8, self.row, self.kv_stride,
                        rows_left)

    # ------------------------------------------------------------------ fragments
    def _ldm(self, base: str, off: int, trans: bool) -> list[str]:
        e = self.e
        ptr = gpu.gep(e, base, e.i32(off), gpu.SHARED, "i32")
        regs = gpu.ldmatrix_x4_trans(e, ptr) if trans else gpu.ldmatrix_x4(e, ptr)
        return [e.op(f"llvm.bitcast {x} : i32 to {gpu.F16X2}") for x in regs]

    def _q_frag(self, qbase: str, mt: int, ks: int) -> list[str]:
        return self._ldm(qbase, mt * 16 * self.row + ks * 32, False)

    def _load_q_frags(self):
        qbase = self._smem_ptr(self.q_lane)
        return [[self._q_frag(qbase, mt, ks) for ks in range(self.KS)] for mt in range(self.MT)]

    # ------------------------------------------------------------------ one K/V tile
    def _tile(self, t: str, o: list, m: list, l: list, masked: bool, scores=None) -> list:
        """One iteration over K/V tile `t`; returns the carried values (output, max, sum[, next scores]).

        Without overlap: wait for tile t, prefetch, S = Q K_t^T, softmax, O += P V_t. With overlap (`scores`
        holds S_t): wait for tile t + 1, prefetch, S_{t+1} = Q K_{t+1}^T (independent of the softmax of S_t,
        so the tensor cores run while the softmax does), softmax of S_t, O += P V_t."""
        e, s = self.e, self.s
        gpu.cp_async_wait(e, s.stages - (3 if scores is not None else 2))
        gpu.barrier(e)
        ahead = self._addc(t, s.stages - 1)
        with e.region(f"scf.if {e.op(f'arith.cmpi slt, {ahead}, {self.n_tiles} : i32')} {{"):
            self._copy_tile(ahead)
        gpu.cp_async_commit(e)
        if scores is None:
            o, m, l = self._softmax_pv(t, self._qk(t), o, m, l, masked)
            return o + m + l
        nxt = self._qk(self._addc(t, 1))
        o, m, l = self._softmax_pv(t, scores, o, m, l, masked)
        return o + m + l + _flat(nxt)

    def _slot_ptr(self, t: str, lane: str) -> str:
        e, s = self.e, self.s
        slot = self._bin("remui", t, e.i32(s.stages))
        return self._smem_ptr(self._add(self._mul(slot, e.i32(self.stage_bytes)), lane))

    def _qk(self, t: str):
        """S = Q K_t^T: acc[mt][nt] = 4 f32 (rows g, g+8 x keys 2qd, 2qd+1 of n8 tile nt)."""
        e = self.e
        kbase = self._slot_ptr(t, self.k_lane)
        qbase = None if self.q_frags else self._smem_ptr(self.q_lane)
        zero = e.const(0.0, "f32")
        acc = [[[zero] * 4 for _ in range(self.NT)] for _ in range(self.MT)]
        for ks in range(self.KS):
            qf = [self.q_frags[mt][ks] if self.q_frags else self._q_frag(qbase, mt, ks) for mt in range(self.MT)]
            for ntp in range(self.NT // 2):
                if self.ntn:
                    kf = self._ldm(kbase, ks * 16 * self.krow + ntp * 32, True)
                else:
                    kf = self._ldm(kbase, ntp * 16 * self.krow + ks * 32, False)
                for mt in range(self.MT):
                    for j in range(2):
                        nt = 2 * ntp + j
                        acc[mt][nt] = gpu.mma(e, "f16.f32", qf[mt], kf[2 * j:2 * j + 2], acc[mt][nt])
        return acc

    def _softmax_pv(self, t: str, acc, o: list, m: list, l: list, masked: bool):
        """Mask (when `masked`), online softmax of the scores `acc` of tile t, then O += P V_t."""
        e = self.e
        if masked:
            acc = [[list(x) for x in row] for row in acc]
            self._mask(t, acc)
        o, m, l, p = self._softmax(acc, o, m, l)
        # P's accumulators of n8 tiles (2pk, 2pk+1) are the A fragment of the k16 step pk of P V
        vbase = self._slot_ptr(t, self.v_lane)
        o = list(o)
        for pk in range(self.PS):
            a = [[gpu.pack_f16x2(e, *p[mt][nt][half]) for nt in (2 * pk, 2 * pk + 1) for half in (0, 1)]
                 for mt in range(self.MT)]
            for dtp in range(self.DT // 2):
                vf = self._ldm(vbase, pk * 16 * self.row + dtp * 32, True)
                for mt in range(self.MT):
                    for j in range(2):
                        i = (mt * self.DT + 2 * dtp + j) * 4
                        o[i:i + 4] = gpu.mma(e, "f16.f32", a[mt], vf[2 * j:2 * j + 2], o[i:i + 4])
        return o, m, l

    def _mask(self, t: str, acc):
        """Scores of keys >= seq_len, and (causal) of keys after the query row, to -inf."""
        e, s = self.e, self.s
        ninf = e.const(NEG_INF, "f32")
        key0 = self._add(self._mul(t, e.i32(s.block_kv)), self._bin("shli", self.qd, e.i32(1)))
        for mt in range(self.MT):
            for half in range(2):
                limit = e.i32(self.S)
                if self.causal:
                    row = self._addc(self._add(self.w0, self.g), 16 * mt + 8 * half)
                    limit = self._bin("minsi", self._addc(row, 1), limit)
                lim = self._sub(limit, key0)  # valid while (8 nt + c) < lim
                for nt in range(self.NT):
                    for c in range(2):
                        ok = e.op(f"arith.cmpi slt, {e.i32(8 * nt + c)}, {lim} : i32")
                        idx = 2 * half + c
                        acc[mt][nt][idx] = e.op(f"arith.select {ok}, {acc[mt][nt][idx]}, {ninf} : f32")

    def _tree(self, op: str, vals: list) -> str:
        """A balanced reduction (log depth) of f32 `vals` with arith.`op`."""
        vals = list(vals)
        while len(vals) > 1:
            vals = [self._bin(op, vals[i], vals[i + 1], "f32") if i + 1 < len(vals) else vals[i]
                    for i in range(0, len(vals), 2)]
        return vals[0]

    def _softmax(self, acc, o, m, l):
        """Online softmax update of the rows (mt, half): new max, probabilities (returned packed to f16
        pairs: p[mt][nt] = [rows g, rows g+8]), sums and the output rescale."""
        e = self.e
        sl2 = e.const(self.scale_log2, "f32")
        o, m_new, l_new = list(o), list(m), list(l)
        p = [[[None, None] for _ in range(self.NT)] for _ in range(self.MT)]
        for mt in range(self.MT):
            for half in range(2):
                r = 2 * mt + half
                row_vals = [acc[mt][nt][2 * half + c] for nt in range(self.NT) for c in range(2)]
                if TREE_MAX:
                    mx = self._tree("maxnumf", row_vals)
                else:
                    mx = row_vals[0]
                    for v in row_vals[1:]:
                        mx = self._bin("maxnumf", mx, v, "f32")
                for lane_mask in (1, 2):
                    mx = self._bin("maxnumf", mx, gpu.shfl_xor(e, mx, lane_mask), "f32")
                mx = self._bin("maxnumf", m[r], mx, "f32", hint="rowmax")
                neg = e.op(f"arith.negf {self._bin('mulf', mx, sl2, 'f32')} : f32")
                alpha = gpu.exp2_approx(e, gpu.fma_f32(e, m[r], sl2, neg))
                total = None
                for nt in range(self.NT):
                    pair = [gpu.exp2_approx(e, gpu.fma_f32(e, acc[mt][nt][2 * half + c], sl2, neg)) for c in range(2)]
                    p[mt][nt][half] = pair
                    for pv in pair:
                        total = pv if total is None else self._bin("addf", total, pv, "f32")
                l_new[r] = gpu.fma_f32(e, l[r], alpha, total)
                m_new[r] = mx
                for dt in range(self.DT):
                    for c in range(2):
                        i = (mt * self.DT + dt) * 4 + 2 * half + c
                        o[i] = self._bin("mulf", o[i], alpha, "f32")
        return o, m_new, l_new, p

    # ------------------------------------------------------------------ epilogue
    def _epilogue(self, o, l):
        e = self.e
        one = e.const(1.0, "f32")
        col = self._i64(self._bin("shli", self.qd, e.i32(2)))  # byte offset of dims 2qd, 2qd+1
        for mt in range(self.MT):
            for half in range(2):
                r = 2 * mt + half
                total = l[r]
                for lane_mask in (1, 2):
                    total = self._bin("addf", total, gpu.shfl_xor(e, total, lane_mask), "f32")
                inv = self._bin("divf", one, total, "f32")
                row = self._addc(self._add(self.w0, self.g), 16 * mt + 8 * half)
                ok = e.op(f"arith.cmpi slt, {row}, {e.i32(self.S)} : i32")
                with e.region(f"scf.if {ok} {{"):
                    off = self._add(self._mul(self._i64(row), e.i64(self.q_stride), "i64"), col, "i64")
                    ptr = gpu.gep(e, self.out_ptr, off, gpu.GLOBAL)
                    for dt in range(self.DT):
                        i = (mt * self.DT + dt) * 4 + 2 * half
                        lo = self._bin("mulf", o[i], inv, "f32")
                        hi = self._bin("mulf", o[i + 1], inv, "f32")
                        gpu.store(e, gpu.pack_f16x2(e, lo, hi), gpu.gep(e, ptr, e.i64(16 * dt), gpu.GLOBAL), gpu.F16X2)


def _flat(acc) -> list:
    return [v for row in acc for tile in row for v in tile]


def _unflat(vals, mt: int, nt: int):
    return [[list(vals[(i * nt + j) * 4:(i * nt + j) * 4 + 4]) for j in range(nt)] for i in range(mt)]


class _Cfg:
    """Attribute view of a config dict, for helpers written against FlashAttenConfig."""

    def __init__(self, d):
        self.__dict__.update(d)


SCHEDULE_FIELDS = tuple(f.name for f in fields(AttentionSchedule))


def read_schedule(op: ir.Operation, config: FlashAttenConfig) -> AttentionSchedule:
    """The op's `lowbit.schedule` attribute; without one, the default schedule of sm_90a."""
    if "lowbit.schedule" not in op.attributes:
        return attention_schedule(config, "sm_90a")
    d = ir.DictAttr(op.attributes["lowbit.schedule"])
    values = {f: _value(d[f]) for f in SCHEDULE_FIELDS if f in d}
    for flag in ("q_in_regs", "overlap"):
        if flag in values:
            values[flag] = bool(values[flag])
    sched = AttentionSchedule(**values)
    sched.check()
    return sched


def emit_launch(kernel: AttentionKernel, types: dict) -> str:
    """A host function launching `kernel` on the memrefs of a lowbit.attention (bare pointers)."""
    e = Emitter(indent=4)
    args = [(p, gpu.GLOBAL) for p in gpu.host_pointers(e, types)]
    gpu.launch_func(e, GPU_MODULE, kernel.name, (kernel.grid, 1), kernel.T, args, kernel.smem_bytes)
    return e.text()


class AttentionToGpu(RewritePattern):
    """Replaces a lowbit.attention by a launch of a generated FlashAttention kernel."""

    op_name = ATTENTION_OP

    def rewrite(self, op, module):
        config, types = verified_attention(op)
        cfg = {name: getattr(config, name) for name in ATTENTION_FIELDS}
        kernel = AttentionKernel(cfg, read_schedule(op, config))
        kernel_text = kernel.emit()
        replace_with_launch(op, module, "lowbit_attention_launch_", emit_launch(kernel, types), kernel_text, types,
                            GPU_MODULE)


class LowerAttentionToGpu(ModulePass):
    name = "lowbit-lower-attention-to-gpu"
    description = ("Lower lowbit.attention to a FlashAttention-2 style mma.sync kernel (cp.async K/V ring, "
                   "ldmatrix, online softmax with exp2) in gpu.module @lowbit_kernels, launched with gpu.launch_func.")
    patterns = (AttentionToGpu,)
