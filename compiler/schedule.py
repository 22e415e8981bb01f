"""Schedules: how a kernel tiles its work, one function of (m bucket, N, K, dtypes, target).

The schedule is recorded on the lowbit op as the `lowbit.schedule` attribute (visible with
`lowbit compile --emit lowbit`) and may be overridden field by field.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from lowbit.formats import format_of
from lowbit.layout import layout_of

SHARED_LIMIT = 48 * 1024  # static shared memory per block without an opt-in
THREADS = 128


@dataclass(frozen=True)
class MatmulSchedule:
    block_m: int  # rows of A per block: 16, 32 or 64 (one to four m16 tiles per warp)
    warp_n_tiles: int  # n8 tiles per warp; the block covers 4 warps * 8 * warp_n_tiles columns
    stages: int  # cp.async stages for the A tile in shared memory

    @property
    def block_n(self) -> int:
        return 4 * 8 * self.warp_n_tiles

    def as_dict(self) -> dict:
        return asdict(self)

    def check(self) -> None:
        if self.block_m not in (16, 32, 64):
            raise ValueError(f"schedule block_m={self.block_m} is not allowed; allowed: 16, 32, 64")
        if self.warp_n_tiles not in (1, 2, 4):
            raise ValueError(f"schedule warp_n_tiles={self.warp_n_tiles} is not allowed; allowed: 1, 2, 4")
        if self.stages not in (2, 3, 4):
            raise ValueError(f"schedule stages={self.stages} is not allowed; allowed: 2, 3, 4")


def a_tile_bytes(cfg, block_m: int) -> int:
    """Shared memory of one stage of the A tile: block_m rows of one superblock, rows padded by 16 bytes."""
    sb = layout_of(format_of(cfg.W_dtype).bits, cfg.A_dtype).superblock
    abytes = 1 if cfg.A_dtype == "int8" else 2
    return block_m * (sb * abytes + 16)


def matmul_schedule(cfg, bucket: int, target: str, **overrides) -> MatmulSchedule:
    """The default schedule for a MatmulConfig run with up to `bucket` rows, with `overrides` applied."""
    block_m = 16 if bucket <= 16 else 32 if bucket <= 32 else 64
    warp_n_tiles = 1 if bucket <= 16 else 2
    stages = 3
    while block_m > 16 and a_tile_bytes(cfg, block_m) * 2 > SHARED_LIMIT:
        block_m //= 2
    while stages > 2 and a_tile_bytes(cfg, block_m) * stages > SHARED_LIMIT:
        stages -= 1
    unknown = set(overrides) - {f.name for f in fields(MatmulSchedule)}
    if unknown:
        raise ValueError(f"unknown schedule fields {sorted(unknown)}; allowed: {[f.name for f in fields(MatmulSchedule)]}")
    sched = replace(MatmulSchedule(block_m, warp_n_tiles, stages), **overrides)
    sched.check()
    if a_tile_bytes(cfg, sched.block_m) * sched.stages > SHARED_LIMIT:
        raise ValueError(f"schedule {sched} needs more than {SHARED_LIMIT} bytes of shared memory")
    return sched
