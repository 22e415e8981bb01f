"""Schedules: how a kernel tiles its work, one function of (m bucket, N, K, dtypes, target).

The schedule is recorded on the lowbit op as the `lowbit.schedule` attribute (visible with
`lowbit compile --emit lowbit`) and may be overridden field by field.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from fractions import Fraction

from lowbit.compiler.target import TARGETS, target_of
from lowbit.formats import format_of
from lowbit.layout import layout_of

SHARED_LIMIT = 48 * 1024  # shared memory per block without an opt-in
THREADS = 128
PARAM_REGISTERS = 16  # registers for prefetched group parameters before the schedule trims prefetch
SPLIT_K_VALUES = (1, 2, 3, 4, 6, 8, 12, 16)
DECODE_BLOCKS_PER_SM = 3  # the m <= 16 kernel's blocks an SM at 4 bits (int4 g128, 2 iterations ahead: 138 registers)
MAX_SPLIT_SUPERBLOCKS = 40  # the longest K split that _ring_split takes at 16 rows (_one_wave_split leaves such K to it)
# the 17-64 row 4-bit float-A kernels by block_m: blocks an SM (128 and 168 registers), and the blocks an
# SM that _busiest_sm_load counts as fast as 1 (a 32-row block multiplies half as much per weight byte)
SMALL_M_RESIDENT = {32: 4, 64: 3}
SMALL_M_SATURATING = {32: Fraction(5, 2), 64: 2}


@dataclass(frozen=True)
class MatmulSchedule:
    block_m: int  # rows of A per block: 8 (half an m16 tile), 16, 32, 64 or 128 (one to eight m16 tiles per warp)
    warp_n_tiles: int  # n8 tiles per warp
    stages: int  # cp.async stages for the A tile in shared memory
    warps_k: int = 1  # the 4 warps split K this many ways (then reduce through shared memory) and N 4 / warps_k ways
    w_prefetch: int = 1  # iterations of weights loaded ahead into registers
    a_smem: int = 1  # 1: A through shared memory (cp.async + ldmatrix); 0: fragments loaded from global (L1)
    split_k: int = 1  # blocks splitting K (grid z); the last block of a tile sums the partials in a fixed order
    k_unroll: int = 1  # superblocks each warp computes per iteration (more work per barrier for 8/16-bit W)
    wgmma: int = 0  # 1 (sm_90a, float A): the warpgroup mma kernel, block_m activation rows as wgmma's n
    warpgroups: int = 1  # wgmma: warpgroups of a block, each over its own weight rows, sharing the A stages
    w_smem: int = 0  # 1 copies each thread's weights into the shared-memory stages with A (cp.async)
    # decode blocks (block_m <= 16) with float A and scaling: 1 folds each group's scale (and zero) into
    # f32 sums after the mma, 0 dequantizes the weights to f16 before it (fewer registers where a
    # superblock holds several groups; the dequantized weight is then rounded to f16)
    scale_after: int = 1
    # blocks an SM the kernel must fit (PTX .minnctapersm, which caps registers): 0 leaves it to ptxas
    min_blocks: int = 0
    # 1: 4-bit codes decode to B + w (B = 16, or 24 for biased int4 codes) and one fma a register applies
    # scale and 'original' zero, (B + w) s + c with c = -(B + z) s once a group (scaled before the mma;
    # fewer instructions, a few more registers, c rounded to f16: see offset_decode_problem)
    offset_decode: int = 0

    @property
    def warps_n(self) -> int:
        return 4 // self.warps_k

    @property
    def block_n(self) -> int:
        if self.wgmma:
            return 64 * self.m64_tiles * self.warpgroups
        return self.warps_n * 8 * self.warp_n_tiles

    @property
    def threads(self) -> int:
        return THREADS * self.warpgroups

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def m64_tiles(self) -> int:
        """wgmma: the 64-row weight tiles of a block (each warp holds 16 rows of each, two n8 tiles)."""
        return self.warp_n_tiles // 2

    def check(self) -> None:
        if self.wgmma not in (0, 1):
            raise ValueError(f"schedule wgmma={self.wgmma} is not allowed; allowed: 0, 1")
        if self.warpgroups not in (1, 2) or (self.warpgroups == 2 and not self.wgmma):
            raise ValueError(f"schedule warpgroups={self.warpgroups} is not allowed; allowed: 1, or 2 with wgmma=1")
        if self.w_smem not in (0, 1) or (self.w_smem and not self.a_smem):
            raise ValueError(f"schedule w_smem={self.w_smem} is not allowed; allowed: 0, or 1 with a_smem=1")
        if self.k_unroll not in (1, 2, 4, 8):
            raise ValueError(f"schedule k_unroll={self.k_unroll} is not allowed; allowed: 1, 2, 4, 8")
        if self.min_blocks not in range(0, 9):
            raise ValueError(f"schedule min_blocks={self.min_blocks} is not allowed; allowed: 0 (ptxas decides) to 8")
        if self.offset_decode not in (0, 1):
            raise ValueError(f"schedule offset_decode={self.offset_decode} is not allowed; allowed: 0, 1")
        if self.scale_after not in (0, 1) or (not self.scale_after and (self.wgmma or self.block_m > 16)):
            raise ValueError(f"schedule scale_after={self.scale_after} is not allowed here; allowed: 1, or 0 with "
                             f"wgmma=0 and block_m <= 16 (only decode blocks fold scales after the mma)")
        if self.wgmma:
            self._check_wgmma()
            return
        if self.block_m not in (8, 16, 32, 64, 128):
            raise ValueError(f"schedule block_m={self.block_m} is not allowed; allowed: 8, 16, 32, 64, 128")
        if self.warp_n_tiles not in (1, 2, 4):
            raise ValueError(f"schedule warp_n_tiles={self.warp_n_tiles} is not allowed; allowed: 1, 2, 4")
        allowed = (2, 3, 4, 5, 6, 8) if self.w_smem else (2, 3, 4)
        if self.stages not in allowed:
            raise ValueError(f"schedule stages={self.stages} is not allowed{' with w_smem=0' * (not self.w_smem)}; "
                             f"allowed: {', '.join(map(str, allowed))}")
        if self.warps_k not in (1, 2, 4):
            raise ValueError(f"schedule warps_k={self.warps_k} is not allowed; allowed: 1, 2, 4")
        if self.a_smem not in (0, 1):
            raise ValueError(f"schedule a_smem={self.a_smem} is not allowed; allowed: 0, 1")
        if self.split_k not in SPLIT_K_VALUES:
            raise ValueError(f"schedule split_k={self.split_k} is not allowed; allowed: {', '.join(map(str, SPLIT_K_VALUES))}")
        if self.w_prefetch not in (1, 2, 3, 4, 6, 8):
            raise ValueError(f"schedule w_prefetch={self.w_prefetch} is not allowed; allowed: 1, 2, 3, 4, 6, 8")

    def _check_wgmma(self) -> None:
        """The warpgroup kernel: each warpgroup of 4 warps covers 64 * m64_tiles weight rows and block_m
        activation rows, every thread holding m64_tiles * block_m / 2 f32 accumulators."""
        try:
            self._check_wgmma_fields()
        except ValueError as err:
            raise ValueError(f"{err} (wgmma=1 is the default above 64 rows on sm_90a with float A; "
                             f"wgmma=0 selects the mma.sync kernel)") from None

    def _check_wgmma_fields(self) -> None:
        fixed = {"warps_k": 1, "split_k": 1, "a_smem": 1}
        wrong = {k: getattr(self, k) for k, v in fixed.items() if getattr(self, k) != v}
        if wrong:
            raise ValueError(f"schedule wgmma=1 needs {fixed}, got {wrong}")
        if self.warp_n_tiles not in (2, 4):
            raise ValueError(f"schedule warp_n_tiles={self.warp_n_tiles} is not allowed with wgmma=1; allowed: 2, 4")
        if self.block_m not in (64, 128, 256) or self.m64_tiles * self.block_m // 2 > 128:
            raise ValueError(f"schedule block_m={self.block_m} is not allowed with wgmma=1 and warp_n_tiles="
                             f"{self.warp_n_tiles}; allowed: 64, 128{', 256' if self.m64_tiles == 1 else ''} "
                             f"(at most 128 accumulators a thread)")
        if self.stages not in (3, 4, 5, 6):
            raise ValueError(f"schedule stages={self.stages} is not allowed with wgmma=1; allowed: 3, 4, 5, 6 "
                             f"(the stage an iteration refills is read by the wgmmas of the one before it)")
        if self.w_prefetch not in (1, 2, 3, 4):
            raise ValueError(f"schedule w_prefetch={self.w_prefetch} is not allowed with wgmma=1; allowed: 1, 2, 3, 4")


def superblock_groups(cfg) -> int:
    """Quantization groups a thread's k values of one superblock fall in (0 without float-A scaling)."""
    if not cfg.with_scaling or cfg.A_dtype == "int8":
        return 0
    layout = layout_of(format_of(cfg.W_dtype).bits, cfg.A_dtype)
    return len(set(layout.group_keys(cfg.K if cfg.group_size == -1 else cfg.group_size)))


def k_superblocks(cfg) -> int:
    """K in superblocks of the weights' layout, the last one possibly partial."""
    return -(-cfg.K // layout_of(format_of(cfg.W_dtype).bits, cfg.A_dtype).superblock)


def k_steps(cfg) -> int:
    """K in iterations of 128 k, the last one possibly partial (a half or quarter superblock of 2- or
    1-bit weights: the finer K split count of _decode_split and _small_m_split)."""
    return -(-cfg.K // 128)


def param_words(cfg, warp_n_tiles: int) -> int:
    """Registers holding one iteration's group parameters (scale, zero) of a thread."""
    return warp_n_tiles * superblock_groups(cfg) * (2 if cfg.with_zeros else 1)


def accumulator_values(sched: MatmulSchedule) -> int:
    """Output values a thread holds after the main loop: 4 per m16 x n8 tile (2 per n8 tile with 8 rows)."""
    return max(sched.block_m // 16, 1) * sched.warp_n_tiles * (2 if sched.block_m == 8 else 4)


def split_words(sched: MatmulSchedule) -> int:
    """32-bit workspace words one output tile needs with split_k > 1 (else 0): every split's partial
    accumulators, laid out [split][warps_n][value][lane]."""
    if sched.split_k == 1:
        return 0
    return sched.split_k * sched.warps_n * accumulator_values(sched) * 32


def matmul_smem_bytes(cfg, sched: MatmulSchedule) -> int:
    """Dynamic shared memory of a matmul kernel: the A stages, reused after the loop for the K-split
    warps' partial sums (and the split flag)."""
    if sched.wgmma:  # the stages, 1 KB-aligned at run time (the swizzle's atoms), reused for the output tile
        out_tile = sched.block_m * wgmma_out_row_bytes(cfg, sched)
        return max(sched.stages * stage_bytes(cfg, sched), out_tile) + 1024
    reduce_bytes = (sched.warps_k - 1) * sched.warps_n * accumulator_values(sched) * 32 * 4
    stages = sched.stages * stage_bytes(cfg, sched) if sched.a_smem else 16
    return max(stages, reduce_bytes, 16)


def stage_bytes(cfg, sched: MatmulSchedule) -> int:
    """One shared-memory stage: the A tile, then (w_smem) 16 bytes per thread, n8 tile and superblock of
    weights."""
    w = sched.threads * sched.k_unroll * sched.warp_n_tiles * 16 if sched.w_smem else 0
    return stage_a_bytes(cfg, sched) + w


def stage_a_bytes(cfg, sched: MatmulSchedule) -> int:
    """The A tile of a stage: swizzled for wgmma (whose warps never split K), else padded rows."""
    if sched.wgmma:
        return a_tile_bytes(cfg, sched.block_m, 1, sched.k_unroll, swizzled=True)
    return a_tile_bytes(cfg, sched.block_m, sched.warps_k, sched.k_unroll)


def wgmma_out_row_bytes(cfg, sched: MatmulSchedule) -> int:
    """A row of the wgmma kernel's output tile in shared memory: block_n outputs, padded by 16 bytes so
    that a warp's rows 2 q land on distinct banks."""
    return sched.block_n * (4 if cfg.out_dtype in ("float32", "int32") else 2) + 16


def a_tile_bytes(cfg, block_m: int, warps_k: int = 1, k_unroll: int = 1, swizzled: bool = False) -> int:
    """Shared memory of one stage of the A tile: block_m rows of warps_k * k_unroll superblocks, rows
    padded by 16 bytes (or, swizzled for wgmma, unpadded)."""
    sb = layout_of(format_of(cfg.W_dtype).bits, cfg.A_dtype).superblock
    abytes = 1 if cfg.A_dtype == "int8" else 2
    return block_m * (warps_k * k_unroll * sb * abytes + (0 if swizzled else 16))


def matmul_schedule(cfg, bucket: int, target: str, **overrides) -> MatmulSchedule:
    """The default schedule for a MatmulConfig run with up to `bucket` rows, with `overrides` applied.

    Small m (decode) is memory bound. m <= 8: one m8 tile, the 4 warps split K so that a block covers
    few columns and many blocks keep every SM streaming weights, 2 iterations of weights in flight per
    thread. m <= 16: 128 columns a block (the 16 rows of A are read once per 128 weight columns) and
    K split over up to 4 blocks to keep the block count up; a long K over more, up to the blocks one
    wave holds on the target's reference device (_decode_split); a wide N over 2 with fewer registers,
    one wave, 4-bit integer weights on a little more tiles than SMs over 3 or 2 (_one_wave_split), and
    2-, 4- and 8-bit integer and 16-bit weights on more tiles than 2 splits fit in a wave not at all
    (_wider_than_wave_decode).
    Decode grids of at most 2 blocks an SM (6 for the 4-bit fold kernels at 8 rows), and some grids of
    many waves at 8 rows, take the weights through the shared-memory stages, see _weight_ring. Decode
    blocks apply group scales after or before the mma, see _scale_place. Up to 64 rows: 32 or 64 rows x
    128 columns, K split to fill the SMs (_small_m_split); more: 64 or (above 256 rows) 128 rows x 128
    columns, 8- and 16-bit weights 128 k per iteration, with as many A stages as 48 KB of shared memory
    holds; at 65-256 rows K split in 2 below one wave of blocks, int8 x int8 on 128 rows where those
    fill the SMs (_sync_128_rows). Above 64 rows on sm_90a with float A: the warpgroup (wgmma) kernel,
    see wgmma_schedule; from 33 rows too for weights of 4 bits or fewer where N has a 128-row tile for
    every SM.
    """
    if not target_of(target).is_gpu:
        gpus = ", ".join(name for name, t in TARGETS.items() if t.is_gpu)
        raise ValueError(f"target={target!r} has no GPU schedule; allowed: {gpus}")
    fmt = format_of(cfg.W_dtype)
    superblock = layout_of(fmt.bits, cfg.A_dtype).superblock
    sms, tiles = target_of(target).sms, -(-cfg.N // 128)  # SMs of the reference device, 128-column tiles
    split_k, stages = 1, 3  # stages: at most this many, as shared memory allows
    if bucket <= 8:  # measured best of the sweeps in docs/perf-notes.md
        block_m, warp_n_tiles, warps_k, prefetch = 8, 2, 4, 2
    elif bucket <= 16:  # 16 rows of A: wide blocks (less A per weight byte), K split over 4 blocks
        block_m, warp_n_tiles, warps_k, prefetch = 16, 4, 1, 2
        split_k = _decode_split(cfg, tiles, sms)
        # wide N, where two splits overflow the wave but fit one of 4 blocks an SM: one iteration of
        # weights ahead frees the registers for the 4th block (int4: 168 -> 118). Not with zeros folded
        # after the mma or a decode table, whose kernels then hold 3 or already 5 blocks an SM and
        # measured slower so (uint4 g128 zeros scaled before it: 117 registers, 69.3 -> 63.8 us at
        # 28672x8192); nor where the group parameters already hold the prefetch to 1 (int4 g32, 2-bit
        # g32: nothing to free). float16 weights (72 registers) take the 2 splits with both iterations
        # ahead: 0.88-0.93x the time of 4 splits on 5 shapes (variant 48; one ahead 0.92-0.97x)
        one_ahead = (not cfg.with_zeros or zeros_before_mma(cfg)) and fmt.kind in ("int", "uint") \
            and 2 * param_words(cfg, warp_n_tiles) <= PARAM_REGISTERS
        if _wide_n_decode(cfg, sms):
            if fmt.bits == 16:
                split_k = 2
            elif one_ahead:
                split_k, prefetch = 2, 1
        elif _wider_than_wave_decode(cfg, tiles, sms):
            split_k = 1
            # int4 with groups holds 3 blocks an SM with 2 iterations ahead (138 registers), 4 with one
            # (122): one ahead where 4 blocks an SM run fewer rounds of the tiles than 3
            if one_ahead and fmt.kind == "int" and fmt.bits == 4 and cfg.with_scaling \
                    and _rounds(tiles, sms, DECODE_BLOCKS_PER_SM + 1) < _rounds(tiles, sms, DECODE_BLOCKS_PER_SM):
                prefetch = 1
        elif one_ahead and fmt.bits == 4 and sms < tiles and k_superblocks(cfg) > MAX_SPLIT_SUPERBLOCKS \
                and (one_wave := _one_wave_split(tiles, sms)):
            split_k, prefetch = one_wave, 1
    elif bucket <= 64:  # 128 columns a block (A re-read half as often as with 64), K split to fill the SMs
        block_m, warp_n_tiles, warps_k, prefetch = (32 if bucket <= 32 else 64), 4, 1, 1
    else:  # wider tiles, fewer re-reads of A and W from L2: 128 rows above 256 where two A stages fit
        block_m, warp_n_tiles, warps_k, prefetch = (128 if bucket > 256 else 64), 4, 1, 1
        stages = 4
        if bucket <= 256 and _sync_128_rows(cfg, bucket, tiles, sms):
            block_m = 128
    # 8- and 16-bit weights have short superblocks (64 / 32 k): several per iteration amortize its
    # barriers and A copies, as shared memory allows (prefill only; decode keeps registers for bytes in flight)
    k_unroll = max(1, 128 // superblock) if bucket > 16 else 1
    # the A stages stay under 48 KB: more (deeper pipelines, opted-in shared memory) measured slower
    # on the H100 for every shape (docs/perf-notes.md); an override may use up to the target's maximum
    while k_unroll > 1 and a_tile_bytes(cfg, block_m, warps_k, k_unroll) * 2 > SHARED_LIMIT:
        k_unroll //= 2
    a_smem = 1  # a_smem=0 (A fragments from L1) measured slower for decode, see docs/perf-notes.md
    # the group parameters of each prefetched iteration are carried in registers too: with many small
    # groups per superblock (1- and 2-bit weights, small group_size) prefetch less, then narrow the warp
    while prefetch > 1 and prefetch * k_unroll * param_words(cfg, warp_n_tiles) > PARAM_REGISTERS:
        prefetch -= 1
    while warp_n_tiles > 1 and param_words(cfg, warp_n_tiles) > PARAM_REGISTERS:
        warp_n_tiles //= 2
    while warps_k > 1 and a_tile_bytes(cfg, block_m, warps_k, k_unroll) * 2 > SHARED_LIMIT:
        warps_k //= 2
    while block_m > 16 and a_tile_bytes(cfg, block_m, warps_k, k_unroll) * 2 > SHARED_LIMIT:
        block_m //= 2
    while stages > 2 and a_tile_bytes(cfg, block_m, warps_k, k_unroll) * stages > SHARED_LIMIT:
        stages -= 1
    if 16 < bucket <= 64:  # after the A tile has set block_m: the split counts the blocks of every row
        split_k = _small_m_split(cfg, superblock, tiles, block_m, -(-bucket // block_m), sms)
    elif 64 < bucket <= 256 and tiles * -(-bucket // block_m) < sms:  # 65-256 rows, mma.sync (variant 55)
        split_k = 2
    unknown = set(overrides) - {f.name for f in fields(MatmulSchedule)}
    if unknown:
        raise ValueError(f"unknown schedule fields {sorted(unknown)}; allowed: {[f.name for f in fields(MatmulSchedule)]}")
    # above 64 rows on sm_90a (float A): the warpgroup kernel; wgmma=1 asks for its defaults at any m
    # 33-64 rows with weights of 4 bits or fewer: the warpgroup kernel too where its 128-row blocks
    # alone cover the SMs (variant 46: 0.59-0.90x at 28672 columns; on fewer it lacks the K split)
    tiles_fill_sms = 32 < bucket <= 64 and fmt.bits <= 4 and tiles >= sms
    wgmma = overrides.get("wgmma", int((bucket > 64 or tiles_fill_sms) and not wgmma_allowed(cfg, target)))
    if wgmma == 1:
        why_not = wgmma_allowed(cfg, target)
        if why_not:
            raise ValueError(f"schedule wgmma=1 is not possible here: {why_not}")
        sched = wgmma_schedule(cfg, bucket, tiles, sms)
    else:
        sched = MatmulSchedule(block_m, warp_n_tiles, stages, warps_k, prefetch, a_smem, split_k, k_unroll)
    sched = replace(sched, **overrides)
    if not {"w_smem", "stages"} & set(overrides) and not sched.wgmma:
        sched = _weight_ring(cfg, sched, bucket, target, overrides)
    if "scale_after" not in overrides and not sched.wgmma:
        sched = _scale_place(cfg, sched, overrides)
    sched.check()
    problem = offset_decode_problem(cfg, sched)
    if problem:
        raise ValueError(problem)
    if sched.wgmma and a_tile_bytes(cfg, 1, 1, sched.k_unroll, swizzled=True) % 128:
        raise ValueError(f"schedule wgmma=1 is not possible here: k_unroll={sched.k_unroll} superblocks of {superblock} k "
                         f"are not a whole number of 64-k swizzle columns; allowed: k_unroll >= {64 // superblock}")
    limit = SHARED_OPTIN.get(target, SHARED_LIMIT)
    if matmul_smem_bytes(cfg, sched) > limit:
        raise ValueError(f"schedule {sched} needs {matmul_smem_bytes(cfg, sched)} bytes of shared memory, more "
                         f"than the {limit} a block may use on {target}")
    if not sched.a_smem and cfg.K % (4 if cfg.A_dtype == "int8" else 2):
        raise ValueError(f"schedule a_smem=0 loads A 4 bytes at a time and needs K={cfg.K} to be a multiple of "
                         f"{4 if cfg.A_dtype == 'int8' else 2}")
    return sched


def _decode_split(cfg, tiles: int, sms: int) -> int:
    """The K split of a 16-row grid of 128-column blocks, before the wide-N schedule and the ring split.

    At least 8 superblocks a split, up to 4 splits. 1- and 2-bit weights (512- and 256-k superblocks)
    may split further, to 8 iterations of 128 k a split and 2 blocks an SM: they take the split whose
    grid runs the fewest rounds of blocks on an SM per split, ceil(tiles x split / SMs) / split, and
    the fewest splits on a tie (2 blocks on some SMs and 1 on others is the slowest round). 2-bit:
    0.77-0.93x the time at K = 4096 on 2048-4096 and 8576-10240 columns, 0.88-0.97x at K = 2048 on
    2048-8192; ties keep the old split at 6144-8448 columns (4 splits there: 0.94-1.07x) and 14336x2048
    (2 splits: 1.05-1.15x); int8 A keeps the superblock count below K = 4096, where 2 splits took
    1.05-1.10x the time of 1. 1-bit: 0.70-0.92x at K 4096-8192 on 2048-8192 columns (variants 50, 50e).
    A long K (16 superblocks a split or more) splits further, up to the blocks one wave holds. 4-bit
    weights with float A, one group a superblock or none, take 8 splits where K has 64 superblocks
    (8 a split) and 8 splits fit one wave: 0.79-0.97x the time of the 4 or 6 splits before on K of
    11008-14336 at 2048-6144 columns, over int4, uint4 with and without zeros, fp4 and nf4; 6 splits
    measured slower than both 4 and 8 on most shapes (variant 50); from 80 superblocks down to 64,
    0.66-1.00x the time of 4 splits on K 8192-10112 at 1024-6272 columns over the same formats (54
    grids, variant 54). int4 and uint4 without zeros then take the ring split where 8 splits exceed 2
    blocks an SM (_ring_split; at 6144 columns its 4 measured 0.88x the time of 8).

    The decode-table formats (nf4, fp4) with float A and one group a superblock or none take their own
    split (_table_decode_split), except scaled grids of more tiles than SMs."""
    fmt = format_of(cfg.W_dtype)
    if fmt.kind in ("nf4", "fp4") and cfg.A_dtype == "float16" and superblock_groups(cfg) <= 1 \
            and (not cfg.with_scaling or tiles <= sms):
        return _table_decode_split(cfg, tiles, sms)
    superblocks = k_superblocks(cfg)
    split = max(1, min(4, superblocks // 8))
    steps = k_steps(cfg)
    if fmt.bits <= 2 and (cfg.A_dtype == "float16" or steps >= 32):
        fits = [s for s in SPLIT_K_VALUES if split <= s <= 4 and steps // s >= 8 and tiles * s <= 2 * sms]
        split = min(fits, key=lambda s: (_busiest_sm_load(tiles, s, sms, saturating=1), s), default=split)
    wave = DECODE_BLOCKS_PER_SM * sms // tiles  # splits one wave holds
    split = max([s for s in SPLIT_K_VALUES if split < s <= min(superblocks // 16, wave)], default=split)
    if fmt.bits == 4 and cfg.A_dtype == "float16" and superblock_groups(cfg) <= 1 and superblocks >= 64 and wave >= 8:
        split = max(split, 8)
    return split


def _table_decode_split(cfg, tiles: int, sms: int) -> int:
    """The K split of a 16-row grid of nf4 or fp4 weights (float A, one group a superblock or none):
    the least loaded split (_least_loaded_split, the fewest on a tie), counting 2 blocks an SM as fast
    as 1.

    Variant 61 (sweep25, after nf4's register table and fp4's bit decode): the best split or within 2%
    of it on 37 of 44 grids (nf4 and fp4, with g128 scales and without, 4096-28672 columns, K 5120-28672;
    geometric mean 1.017 of the best), against 23 for the two rules before it (variants 57 and 58: 4
    blocks an SM as fast as 1 without scales, and with scales a split held to 40 superblocks, which
    the table decode wanted and these decodes do not: 4 splits of 56 now beat 6 of 38 by 1.08x at
    8192x28672). On 27 grids it was not fitted on (sweep26: 1024-32000 columns, K 4096-24576, most of
    them unscaled nf4): the best or within 2% on 22 against the old rules' 12, geometric mean 1.015 of
    the best against 1.063; it misses most at nf4 3072x7168 (6 splits, 1.24x the time of 4)."""
    return _least_loaded_split(tiles, k_steps(cfg), sms, saturating=2, margin=Fraction(1))


def _one_wave_split(tiles: int, sms: int) -> int:
    """The K split of a 16-row grid of 4-bit integer weights with more 128-column tiles than SMs but
    too few for the wide-N schedule (133-198 on 132 SMs), one iteration of weights ahead: the most
    splits, 3 or 2, whose blocks fit one wave of DECODE_BLOCKS_PER_SM + 1 blocks an SM. The 4 splits
    before ran two waves of 3 (variant 66, int4 g128 and uint4 g128 zeros at 136-198 tiles, K 8192
    and 14336: 3 splits up to 176 tiles and 2 above were the best or within 2.4% of it, the old 4
    splits 1.00-1.30x their time; on 30 grids it was not fitted on, 140-194 tiles at K 6144-28672 in
    int4, uint4 and uint4 zeros g128: 0.73-0.98x the old time, the best of 2 and 3 splits on 29 and
    within 1.7% on one). Where K has at most MAX_SPLIT_SUPERBLOCKS superblocks, zero-free
    grids take the ring's single split instead (_weight_ring). 0 where 2 splits overflow that wave."""
    return max((s for s in (2, 3) if s * tiles <= (DECODE_BLOCKS_PER_SM + 1) * sms), default=0)


def _wide_n_decode(cfg, sms: int) -> bool:
    """Whether a 16-row grid is wide: its 2 splits of 128-column tiles overflow one wave of
    DECODE_BLOCKS_PER_SM blocks an SM but fit one of one more, and K has the 16 superblocks that 2
    splits of 8 need (N of 25-34 K columns on 132 SMs). matmul_schedule then trades weights in flight
    for a block an SM where the format allows; _ring_split leaves such 4-bit grids alone."""
    tiles = -(-cfg.N // 128)
    wave = DECODE_BLOCKS_PER_SM * sms // tiles  # splits one wave holds
    return wave < 2 and 2 * tiles <= (DECODE_BLOCKS_PER_SM + 1) * sms and k_superblocks(cfg) >= 16


def _wider_than_wave_decode(cfg, tiles: int, sms: int) -> bool:
    """Whether a 16-row grid of 2-, 4- or 8-bit integer or 16-bit weights has more 128-column tiles
    than the wide-N schedule's wave holds in 2 splits (above 264 tiles, 33.8 K columns, on 132 SMs).
    matmul_schedule then takes one split: the 3-4 K splits of _decode_split multiplied the blocks,
    each with a quarter or a third of a tile's K and a fixup, on grids that fill the SMs with one.
    Variant 67: 0.62-0.91x the time of the 3-4 splits on 9 shapes of 280-1187 tiles in int4 g128,
    0.75-0.96x in uint4 g128 zeros, 0.68-0.99x in uint4 g128 and 0.81-0.97x in int2 (3 shapes),
    0.80x in int2 x int8 (one shape); nf4 measured 1.15-1.32x slower so on 2 of 3. On 24 grids it was
    not fitted on (272-2000 tiles): 0.64-1.00x, and int2 1.05x on one. 8- and 16-bit weights (variant
    67b, 3 shapes of 280-1002 tiles): float16 0.90-0.98x, int8 0.86-1.00x, int8 x int8 0.81-0.98x; on
    6 grids not fitted on (272-1188 tiles): 0.83-0.98x."""
    fmt = format_of(cfg.W_dtype)
    return (fmt.kind in ("int", "uint") and fmt.bits in (2, 4, 8) or fmt.bits == 16) \
        and 2 * tiles > (DECODE_BLOCKS_PER_SM + 1) * sms


def _rounds(tiles: int, sms: int, blocks_per_sm: int) -> int:
    """Rounds of `blocks_per_sm` resident blocks that the busiest SM runs, one block a tile."""
    busiest = -(-tiles // sms)
    return -(-busiest // blocks_per_sm)


def _small_m_split(cfg, superblock: int, tiles: int, block_m: int, row_blocks: int, sms: int) -> int:
    """The K split of a 17-64 row grid of `tiles` 128-column tiles x `row_blocks` blocks of `block_m` rows.

    Several blocks of rows (the A tile holds fewer rows than the bucket: float-A 2-bit weights at
    33-64 rows run 32-row blocks, 1-bit weights 16 rows with float A and 32 with int8 A): the least
    loaded split (_least_loaded_split) counting 2 blocks an SM as fast as 1. Against the rule below,
    which counted column tiles only (up to 4 blocks an SM here): 0.65-1.01x the time on 47 of 48
    changed cases of int1 and int2 at 1024-28672 columns, 1.06-1.09x on int1 with int8 A at
    11008x28672 (variant 52).

    4-bit weights with float A and one group a superblock or none, one block of rows: the least loaded
    split, the fewest on a tie, within one wave (SMALL_M_RESIDENT blocks an SM), counting
    SMALL_M_SATURATING blocks an SM as fast as 1 (the next load above the least is then 11% higher or
    more, so any margin below that picks the same; the 15% margin above took 4 splits where 6 were
    faster, variant 53b). Against the rule below (variant 53): over 108 grids of int4 g128, nf4 and
    uint4 g128 zeros at 32 and 64 rows, 2048-14336 columns and K 4096-14336, the best split or within
    2% of it on 98 against 71 (0.81-1.01x the time on the 36 it changes; 30 more at 32 rows and 68-84
    tiles: 29 against 6). On 90 changed grids it was not fitted on (those formats,
    uint4 g128 and fp4 g128 at 24 and 48 rows, 5120-13824 columns, K 5120-13824): 0.74-1.08x the time,
    geometric mean 0.92, faster by more than 2% on 57 and slower on 15 (up to 1.07x where 40-44 tiles
    take 8 splits at K = 13824, 1.05x at 9216x5120 with 4 splits).

    Otherwise: the most splits, up to 8, that keep at most 2 blocks an SM and 8 iterations (128 k, or a
    superblock where longer) a split (docs/perf-notes.md, variant 46: at 8192 columns 4 splits of
    128-column blocks took 0.52-0.80x the time of one 64-column block over the whole K; variant 48:
    with the split fixup chained, 8 splits took 0.80-1.03x the time of 6 on 2048-4096 columns, 12
    shapes x 3-6 formats; variant 53: float16 weights, int8 weights and int2 with int8 A within 0.9%
    of the best split on average over 108 grids, no better with the load count above). 2-bit weights
    may also split by 8 iterations of 128 k (half a superblock) where the grid keeps at most 1 block
    an SM, whichever gives more splits: with int8 A the best split or within 2% of it on 19 of 21
    shapes at 1024-8192 columns, 0.80-0.97x the time where it adds splits; with float A 0.76-0.96x on
    5 shapes, a tie on a sixth (variants 49, 50). Counting 128 k up to 2 blocks an SM lost 1.09x at
    3072-4096 columns; up to 1 block alone, 1.07-1.36x at 6144-8192."""
    fmt = format_of(cfg.W_dtype)
    steps = k_steps(cfg)
    if row_blocks > 1:
        return _least_loaded_split(tiles * row_blocks, steps, sms, saturating=2)
    if fmt.bits == 4 and cfg.A_dtype == "float16" and superblock_groups(cfg) <= 1:
        return _least_loaded_split(tiles, steps, sms, SMALL_M_SATURATING[block_m], SMALL_M_RESIDENT[block_m],
                                   margin=Fraction(1))
    iterations = -(-cfg.K // max(superblock, 128))
    split = max([s for s in SPLIT_K_VALUES if s <= 8 and tiles * s <= 2 * sms and iterations // s >= 8], default=1)
    if superblock == 256:
        split = max([s for s in SPLIT_K_VALUES if split < s <= 8 and tiles * s <= sms and steps // s >= 8], default=split)
    return split


def _least_loaded_split(blocks: int, steps: int, sms: int, saturating, resident: int = None,
                        margin: Fraction = Fraction(115, 100)) -> int:
    """The fewest splits, up to 8 and at 8 steps of 128 k a split or more, whose busiest SM carries at
    most `margin` times the least of any (_busiest_sm_load with `saturating`); with `resident`, only
    splits whose `blocks` x split fit one wave of that many blocks an SM (beyond it a second wave
    runs: int4 at 64 rows, 8192x8192, 8 splits of 512 blocks took 1.23x the time of 6 splits of 384)."""
    load = {s: _busiest_sm_load(blocks, s, sms, saturating) for s in SPLIT_K_VALUES
            if s <= 8 and steps // s >= 8 and (resident is None or s == 1 or blocks * s <= resident * sms)}
    least = min(load.values(), default=1)
    return min((s for s in load if load[s] <= least * margin), default=1)


def _busiest_sm_load(blocks: int, split: int, sms: int, saturating) -> Fraction:
    """The share of one block's whole-K work that the busiest SM streams when `blocks` blocks a split
    are spread over `sms` SMs `split` ways, counting up to `saturating` blocks an SM as fast as 1 (the
    blocks that fill the SM's share of bandwidth). 1: the rounds of blocks an SM per split, which fits
    the 16-row kernels (_decode_split: 2 blocks on some SMs and 1 on others is the slowest round). 2:
    the 17-64 row kernels of several row blocks (_small_m_split), where one resident block leaves the
    SM's share half used (variant 52: int2 at 64 rows, 8192 columns, 1 split of 128 blocks took 1.31x
    the time of 2 of 256) while 2 on some SMs and 3 on others is a round of 3 (6144 columns, 2 splits
    of 192 blocks: 1.21x the time of 4 of 384). 5/2: the 17-64 row 4-bit float-A kernels at 32 rows,
    whose third block an SM still gains a little (variant 53: 2.5 picked the best split or within 2% on
    49 of 54 grids, 2 on 34; with 4 blocks an SM resident any count above 2 up to 3 ranks the splits
    alike; at 64 rows 2 did as well as 2.5 and avoided 3 splits at 13824x5120, 1.02-1.07x the time of
    2)."""
    return max(Fraction(1), Fraction(-(-blocks * split // sms), saturating)) / split


def _weight_ring(cfg, sched: MatmulSchedule, bucket: int, target: str, overrides: dict) -> MatmulSchedule:
    """Where decode weights travel through the shared-memory stages (w_smem, cp.async) instead of
    straight to registers, by the blocks an SM of the grid, blocks of every row counted
    (docs/perf-notes.md, variants 40-44).

    Small grids leave registers and shared memory idle and each SM streams too few bytes: at most 2
    blocks an SM (N = 4096 at m <= 8, up to 8192 at m = 16 on 132 SMs) take 3 stages, 2 iterations
    ahead without registers. Measured on the H100, alone: 0.76-0.98x the time at 4 bits and below
    with one group a superblock or none, 0.80-0.88x for 8- and 16-bit weights at 8 rows (back to back
    0.74-1.02x); small groups (int4 g32: up to 1.15x) and 8- and 16-bit weights at 16 rows (up to
    1.09x) measured slower, and so did most formats on larger grids (0.91-1.17x at m = 1, up to 1.14x
    at m = 16). int4 and uint4 without zeros at 8 rows (the fold kernels) gain up to 6 blocks an SM
    (0.92-1.00x up to 5.2, 0.99-1.03x from 6.8).

    Grids of many waves at 8 rows gain from more blocks an SM instead: 2 stages with one iteration of
    weights in registers (w_prefetch 1; 78-96 registers) for the fold kernels above 6 blocks an SM
    (0.87-0.92x at 6.8 and 13.6) and for uint4 'original' zeros in one group a superblock above 4
    (0.92-0.99x at 5.2-13.6; 1.04-1.05x at 3.9). An override of w_smem or stages leaves the choice to
    the caller; one of w_prefetch is kept.

    At 16 rows, integer weights without zeros on grids of more than 2 blocks an SM split K fewer ways,
    down to 2 blocks an SM, where each split keeps at most 40 superblocks, and take the 3-stage ring
    (fewer partial sums, and the grid no longer spills past one wave of 3 blocks an SM): 0.76-1.02x
    the old default's time over 40 cases of int4, uint4, int2 and int2 with int8 A (variant 45); at
    36-38 superblocks a split (3 splits of K 13824-14336 at 8704-10752 columns, where 32 had kept 4
    splits without the ring) int4 0.77-0.81x, uint4 0.94-1.03x (variant 54; 2-bit weights, whose
    superblocks are 256 k, reach 33-40 a split only on K of 16896 or more a split, unmeasured). Not
    for 4-bit weights on the wide-N schedule (one wave of 4 blocks an SM already: 1.05x), nor longer
    splits (56-64 superblocks: 1.10x in variant 45), nor zeros or decode tables (up to 1.4x). An
    override of split_k keeps it."""
    fmt = format_of(cfg.W_dtype)
    sms, tiles = target_of(target).sms, -(-cfg.N // sched.block_n)
    row_blocks = -(-bucket // sched.block_m)
    eight_rows = sched.block_m == 8 and cfg.A_dtype == "float16"
    fold4 = eight_rows and fmt.bits == 4 and fmt.kind in ("int", "uint") and not cfg.with_zeros
    uint4_zeros = eight_rows and cfg.W_dtype == "uint4" and zeros_before_mma(cfg)
    if sched.block_m > 16 or not sched.a_smem or superblock_groups(cfg) > 1:
        return sched
    ring = sched
    if sched.block_m == 16 and row_blocks == 1 and tiles * sched.split_k > 2 * sms and "split_k" not in overrides:
        ring = replace(sched, split_k=_ring_split(cfg, sched, tiles, sms))
    per_sm = row_blocks * tiles * ring.split_k / sms
    if per_sm <= (6 if fold4 else 2) and not (fmt.bits >= 8 and sched.block_m > 8):
        ring = replace(ring, w_smem=1, stages=3)
    elif (fold4 and per_sm > 6) or (uint4_zeros and per_sm > 4):
        ring = replace(ring, w_smem=1, stages=2, w_prefetch=overrides.get("w_prefetch", 1))
    else:
        return sched
    return ring if matmul_smem_bytes(cfg, ring) <= SHARED_OPTIN.get(target, SHARED_LIMIT) else sched


def _ring_split(cfg, sched: MatmulSchedule, tiles: int, sms: int) -> int:
    """The K split of a 16-row grid of more than 2 blocks an SM that brings it down to 2 for the
    3-stage ring (see _weight_ring), or its own split where none may."""
    fmt = format_of(cfg.W_dtype)
    wide_n = fmt.bits == 4 and _wide_n_decode(cfg, sms)
    if fmt.kind not in ("int", "uint") or cfg.with_zeros or fmt.bits > 4 or wide_n:
        return sched.split_k
    superblocks = k_superblocks(cfg)
    fits = [s for s in SPLIT_K_VALUES
            if s < sched.split_k and tiles * s <= 2 * sms and -(-superblocks // s) <= MAX_SPLIT_SUPERBLOCKS]
    return max(fits, default=sched.split_k)


def _scale_place(cfg, sched: MatmulSchedule, overrides: dict) -> MatmulSchedule:
    """Where a decode block applies the group scales (docs/perf-notes.md, variants 31-32)."""
    groups = superblock_groups(cfg)
    # 16 rows, several groups a superblock: scale before the mma; folding the scales into f32 group
    # sums after it keeps every group's sums live (int4 g32: 168 -> 128 registers). Measured 0.87-1.38x
    # the fold's speed, medians 1.07x and 1.04x in two runs over 12-13 formats x 3 shapes
    if sched.block_m == 16 and groups > 1:
        return replace(sched, scale_after=0)
    # one group a superblock with 'original' zeros: scale before (one fma a weight pair) instead of an
    # extra mma for the activations' sums, at 5 blocks an SM with 8 rows (96 registers; ptxas otherwise
    # settles at 104-106 on some N), 4 with 16 (128): 1.02-1.21x over 8 shapes at m=1, 0.98-1.10x over
    # 5 at m=16. At 8 rows without zeros or with small groups the place measured neutral to mixed
    # uint4 then decodes to 16 + code with the zero in the same fma (variant 37): 1.00-1.06x at 8 rows
    # (82-83% of the bandwidth on the large shapes), at 16 rows only with one iteration of weights
    # ahead (the wide-N schedule, 1.04x): with two, the cap of 128 registers spills 48-56 bytes (0.86-0.98x)
    if zeros_before_mma(cfg) and sched.block_m <= 16:
        offset = int(cfg.W_dtype == "uint4" and (sched.block_m == 8 or sched.w_prefetch == 1))
        return replace(sched, scale_after=0, min_blocks=overrides.get("min_blocks", 5 if sched.block_m == 8 else 4),
                       offset_decode=overrides.get("offset_decode", offset))
    return sched


def offset_decode_problem(cfg, sched: MatmulSchedule) -> str:
    """'' where schedule offset_decode=1 can apply, else why not. It replaces the exact decode of a 4-bit
    code w and the scaling (w s, or the fma w s + (-z s)) by one fma (B + w) s + c, B = 16 (uint4) or
    24 (int4, biased codes), with c = -(B + z) s, or -B s without zeros, rounded to f16 once a group:
    each dequantized weight is within (B + z) s / 2048 of the exact one before its own rounding
    (uint4 without zeros: exact, as w s), against z s / 2048 for -z s rounded."""
    if not sched.offset_decode:
        return ""
    zeros_ok = not cfg.with_zeros or cfg.zeros_mode == "original"
    if not (cfg.W_dtype in ("uint4", "int4") and cfg.A_dtype == "float16" and cfg.with_scaling and zeros_ok
            and sched.block_m <= 16 and not sched.scale_after):
        return (f"schedule offset_decode=1 is not allowed here; allowed: W_dtype uint4 or int4 with scale (and "
                f"'original' zeros or none), A_dtype float16, in a decode block (block_m <= 16) with scale_after=0 "
                f"(got W_dtype={cfg.W_dtype}, zeros_mode={cfg.zeros_mode if cfg.with_zeros else None}, "
                f"block_m={sched.block_m}, scale_after={sched.scale_after})")
    return ""


def zeros_before_mma(cfg) -> bool:
    """Whether decode blocks apply 'original' zeros before the mma by default (one group a superblock)."""
    return cfg.with_zeros and cfg.zeros_mode == "original" and superblock_groups(cfg) == 1


def wgmma_allowed(cfg, target: str) -> str:
    """'' when the warpgroup mma kernel can run `cfg` on `target`, else why not."""
    if target != "sm_90a":
        return f"wgmma needs target sm_90a, not {target}"
    if cfg.A_dtype != "float16":
        return f"the wgmma kernel takes A_dtype float16, not {cfg.A_dtype}"
    if cfg.K % 8:
        return f"the wgmma kernel copies A in 16-byte pieces and needs K % 8 == 0 (K={cfg.K})"
    return ""


def wgmma_schedule(cfg, bucket: int, tiles: int, sms: int) -> MatmulSchedule:
    """The default warpgroup schedule (sm_90a prefill), measured on the H100 (docs/perf-notes.md):
    128 activation rows a block, 64-128 k an iteration (one or two superblocks).
    - Packed weights go straight to registers; above 256 rows two warpgroups (256 weight rows) share 4
      A stages where shared memory holds them (4- and 8-bit weights), else one warpgroup (128 weight
      rows) and three stages, two blocks an SM.
    - 16-bit weights, which need no decoding, travel through the shared-memory stages (w_smem);
      above 256 rows two warpgroups of 64 weight rows x 256 activation rows (wgmma n=256), three
      stages.
    - Up to 256 rows the tile follows the grid (_prefill_wgmma_tile).
    - Many group parameters (1- and 2-bit weights in small groups) halve the weight rows."""
    bits = format_of(cfg.W_dtype).bits
    superblock = layout_of(bits, cfg.A_dtype).superblock
    sched = MatmulSchedule(block_m=128, warp_n_tiles=4, stages=3, w_prefetch=1, k_unroll=max(1, 64 // superblock),
                           wgmma=1, w_smem=int(bits == 16))
    if bucket <= 256:
        sched = replace(sched, block_m=64)
    elif bits == 16:  # wgmma n=256: each weight fragment and shared-memory weight read serves twice the rows
        sched = replace(sched, block_m=256, warp_n_tiles=2, warpgroups=2)
    elif matmul_smem_bytes(cfg, replace(sched, warpgroups=2, stages=4)) <= SHARED_OPTIN["sm_90a"]:
        sched = replace(sched, warpgroups=2, stages=4)
    if param_words(cfg, 4) >= 2 * PARAM_REGISTERS:
        sched = replace(sched, warp_n_tiles=2)
    elif 32 < bucket <= 256:
        sched = replace(sched, **_prefill_wgmma_tile(cfg, bucket, tiles * -(-bucket // 64), sms))
    while matmul_smem_bytes(cfg, sched) > SHARED_OPTIN["sm_90a"]:  # 1- and 2-bit weights: 256-512 k a superblock
        sched = replace(sched, stages=sched.stages - 1) if sched.stages > 3 else replace(sched, block_m=sched.block_m // 2)
    return sched


def _prefill_wgmma_tile(cfg, bucket: int, blocks: int, sms: int) -> dict:
    """33-256 rows on the warpgroup kernel (33-64: weights of 4 bits or fewer where N has a 128-row tile
    for every SM; sweep19/20 measured 0.75-1.00x the default's time there, 44 cases): the tile, over
    the 64 x 128 default (3 stages; 3 blocks an SM at 4 bits), by the `blocks` of that default's
    grid, measured on the H100 (variant 55). 128-row tiles only where the bucket is a whole number of
    them (at 192 rows they compute 256: 1.1-1.6x slower on the grids that chose them).
    - 4-bit weights decode once per block's activation rows: 64 x 64 tiles (twice the blocks) on a
      small grid, 128 x 128 on a large one, either one warpgroup (247 registers, two blocks an SM) or
      two of 64 weight rows (one block an SM). Integer codes without zeros in one group a superblock
      decode cheaply and keep more, smaller blocks longer: 64 x 64 while those fill at most 1.5
      waves of 132 SMs, the default while it fits one wave of 3 an SM. Codes with zeros, a table or
      smaller groups: 64 x 64 below one default block an SM, two warpgroups below two, then one.
    - 2-bit weights (256-k superblocks, 97 KB of stages at 64 rows): two warpgroups of 64 weight rows
      from one default block an SM, else a fourth A stage.
    - 16-bit weights (through shared memory, 73 KB at 3 stages, 97 KB at 4): a fourth stage while
      the grid fits one wave of 2 blocks an SM, the default while it fits one of 3, then two
      warpgroups of 64 weight rows x 128 activation rows (at 192 rows a fourth stage again).
    Other widths (1- and 8-bit) keep the default, which nobody has measured against these."""
    fmt = format_of(cfg.W_dtype)
    whole = bucket % 128 == 0
    small, two_groups = dict(warp_n_tiles=2), dict(block_m=128, warp_n_tiles=2, warpgroups=2)
    if fmt.bits == 4 and (not whole or fmt.kind in ("int", "uint") and not cfg.with_zeros and superblock_groups(cfg) <= 1):
        if 2 * blocks <= 3 * sms:
            return small
        return dict(block_m=128) if blocks > 3 * sms and whole else {}
    if fmt.bits == 4:
        return small if blocks < sms else two_groups if blocks < 2 * sms else dict(block_m=128)
    if fmt.bits == 2:
        return dict(warp_n_tiles=2, warpgroups=2) if blocks >= sms else dict(stages=4)
    if fmt.bits == 16:
        if blocks <= 2 * sms or (blocks > 3 * sms and not whole):
            return dict(stages=4)
        return {} if blocks <= 3 * sms else two_groups
    return {}


def _sync_128_rows(cfg, bucket: int, tiles: int, sms: int) -> bool:
    """65-256 rows on the mma.sync kernel, measured on the H100 with int8 A (variant 55): int8 weights
    and A take 128-row blocks where those fill the SMs and the bucket is a whole number of them (each
    weight tile read from L2 by half as many blocks; 2 stages under 48 KB, as above 256 rows). A grid
    below one wave of blocks splits K in 2 (matmul_schedule)."""
    return format_of(cfg.W_dtype).bits == 8 and cfg.A_dtype == "int8" and bucket % 128 == 0 \
        and tiles * bucket // 128 >= sms


# -- attention (lowbit-lower-attention-to-gpu) --

# dynamic shared memory a block may opt into, per target (cuFuncSetAttribute MAX_DYNAMIC_SHARED_SIZE_BYTES)
SHARED_OPTIN = {"sm_80": 163 * 1024, "sm_86": 99 * 1024, "sm_89": 99 * 1024, "sm_90a": 227 * 1024}


@dataclass(frozen=True)
class AttentionSchedule:
    """How the FlashAttention kernel tiles one (batch, head): a block of `warps` warps owns `block_q` query
    rows (each warp block_q / warps of them, in m16 tiles) and streams K/V in tiles of `block_kv` keys
    through a `stages`-deep cp.async ring in shared memory. `q_in_regs`: the warp's Q fragments are
    loaded once into registers (else re-read from shared memory with ldmatrix for every K tile).
    `overlap`: software-pipelines the loop so that tile t+1's Q K^T is issued before tile t's softmax
    (the tensor cores work while the softmax runs; needs registers for two score tiles and stages >= 3)."""

    block_q: int
    block_kv: int
    warps: int
    stages: int
    q_in_regs: bool = True
    overlap: bool = False

    @property
    def threads(self) -> int:
        return 32 * self.warps

    @property
    def m_tiles(self) -> int:
        """m16 tiles of query rows per warp."""
        return self.block_q // (16 * self.warps)

    def as_dict(self) -> dict:
        return asdict(self)

    def check(self) -> None:
        if self.warps not in (1, 2, 4, 8):
            raise ValueError(f"schedule warps={self.warps} is not allowed; allowed: 1, 2, 4, 8")
        if self.block_q % (16 * self.warps) or self.m_tiles not in (1, 2, 4):
            raise ValueError(f"schedule block_q={self.block_q} is not allowed with warps={self.warps}; allowed: "
                             f"16, 32 or 64 rows per warp ({', '.join(str(16 * m * self.warps) for m in (1, 2, 4))})")
        if self.block_kv not in (16, 32, 64, 128):
            raise ValueError(f"schedule block_kv={self.block_kv} is not allowed; allowed: 16, 32, 64, 128")
        if self.stages not in (2, 3, 4):
            raise ValueError(f"schedule stages={self.stages} is not allowed; allowed: 2, 3, 4")
        for name in ("q_in_regs", "overlap"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"schedule {name}={getattr(self, name)!r} must be True or False")
        if self.overlap and self.stages < 3:
            raise ValueError(f"schedule overlap=True needs stages >= 3 (tile t+1 is read while tile t is), got {self.stages}")


def attention_smem_bytes(cfg, sched: AttentionSchedule) -> int:
    """Dynamic shared memory of the attention kernel: the K/V ring (rows padded by 16 bytes so that
    ldmatrix rows hit distinct banks) and the Q tile (placed in the last ring slot when Q lives in
    registers and fits there, since it is read once before that slot is first refilled)."""
    row = 2 * cfg.dim + 16
    k_bytes = cfg.dim * (2 * sched.block_kv + 16) if cfg.layout == "ntn" else sched.block_kv * row
    stage = k_bytes + sched.block_kv * row
    q_bytes = sched.block_q * row
    if sched.q_in_regs and q_bytes <= stage:
        return sched.stages * stage
    return sched.stages * stage + q_bytes


def attention_schedule(cfg, target: str, **overrides) -> AttentionSchedule:
    """The default schedule of a FlashAttenConfig on `target`, with `overrides` applied (measured on the
    H100, see docs/perf-notes-attention.md):

    dim <= 64: 128 query rows on 4 warps (32 rows each) with Q in registers, 64-key tiles, 3 stages,
      overlap (tile t+1's Q K^T issued before tile t's softmax).
    dim <= 128: 32 rows per warp with Q re-read from shared memory (registers hold the 32 x dim f32
      output), 64-key tiles; 8 warps (256 rows, K/V tiles shared by twice the rows, one block per SM,
      3 stages) when not causal and that still gives two waves of blocks, else 4 warps (128 rows: a
      smaller causal diagonal, two blocks per SM, 2 stages).
    dim <= 256: 64 query rows on 4 warps, 32-key tiles.
    Where the target's shared memory per block is smaller (sm_80: 163 KB, sm_86/89: 99 KB), the
    8-warp schedule falls back to 4 warps and the K/V tiles halve until the block fits.
    """
    limit = SHARED_OPTIN.get(target, SHARED_LIMIT)
    if cfg.dim <= 64:
        sched = AttentionSchedule(block_q=128, block_kv=64, warps=4, stages=3, q_in_regs=True, overlap=True)
    elif cfg.dim <= 128:
        blocks_256 = -(-cfg.seq_len // 256) * cfg.batch * cfg.heads
        wide = AttentionSchedule(block_q=256, block_kv=64, warps=8, stages=3, q_in_regs=False)
        if not cfg.is_causal and blocks_256 >= 2 * target_of(target).sms and attention_smem_bytes(cfg, wide) <= limit:
            sched = wide
        else:
            sched = AttentionSchedule(block_q=128, block_kv=64, warps=4, stages=2, q_in_regs=False)
    else:
        sched = AttentionSchedule(block_q=64, block_kv=32, warps=4, stages=2, q_in_regs=False)
    while sched.block_kv > 16 and attention_smem_bytes(cfg, sched) > limit:
        sched = replace(sched, block_kv=sched.block_kv // 2)
    unknown = set(overrides) - {f.name for f in fields(AttentionSchedule)}
    if unknown:
        raise ValueError(f"unknown schedule fields {sorted(unknown)}; allowed: {[f.name for f in fields(AttentionSchedule)]}")
    sched = replace(sched, **overrides)
    sched.check()
    if attention_smem_bytes(cfg, sched) > limit:
        raise ValueError(f"schedule {sched} needs {attention_smem_bytes(cfg, sched)} bytes of shared memory, "
                         f"more than the {limit} a block may use on {target}")
    return sched
