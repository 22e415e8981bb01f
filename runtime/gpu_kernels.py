"""The GPU kernels of operator configs: cache lookup (no MLIR needed), else compile, then load."""
from __future__ import annotations

import functools

import torch

from lowbit.compiler.cache import get_or_build
from lowbit.compiler.options import CompileOptions
from lowbit.compiler.schedule import attention_schedule, matmul_schedule
from lowbit.compiler.target import target_for_capability

from .cuda import CudaKernel


def _build_matmul(cfg, schedule, target) -> dict:
    from lowbit.compiler.gpu_pipeline import compile_matmul  # MLIR only when a kernel must be built

    artifact = compile_matmul(cfg, schedule, target)
    return {"ptx": artifact.ptx, "meta": artifact.meta}


class MatmulLauncher:
    """Launches a compiled matmul on tensors [A(m, K), W, scale?, zeros?, bias?, out(m, N)].

    A K-split kernel (split_k > 1) also takes a workspace and one lock per output tile (zero between
    launches: the kernel resets them). They are kept per CUDA stream, so that launches on different
    streams never share them; launches on one stream run one after another."""

    def __init__(self, payload: dict, device: torch.device):
        meta = payload["meta"]
        self.meta, self.grid_x, self.block_m = meta, meta["grid_x"], meta["block_m"]
        self.split_k, self.split_words = meta["split_k"], meta["split_words"]
        self.device = device
        self.kernel = CudaKernel(payload["ptx"], meta["kernel"], device, meta["threads"], meta["shared_bytes"])
        self._workspaces: dict = {}  # raw stream -> (row blocks covered, workspace, locks)

    def launch(self, pointers, m: int) -> None:
        """Runs on device pointers [A, W, scale?, zeros?, bias?, out] for m rows."""
        grid_y = -(-m // self.block_m)
        if self.split_k > 1:
            pointers = [*pointers, *self._workspace(grid_y)]
        self.kernel.launch((self.grid_x, grid_y, self.split_k), (*pointers, m))

    def _workspace(self, grid_y: int) -> tuple:
        stream = torch._C._cuda_getCurrentRawStream(self.device.index)
        entry = self._workspaces.get(stream)
        if entry is None or entry[0] < grid_y:
            tiles = self.grid_x * grid_y
            ws = torch.empty(tiles * self.split_words, dtype=torch.int32, device=self.device)
            locks = torch.zeros(tiles, dtype=torch.int32, device=self.device)
            entry = self._workspaces[stream] = (grid_y, ws, locks)
        return entry[1].data_ptr(), entry[2].data_ptr()


@functools.lru_cache(maxsize=None)
def _matmul_launcher(cfg, bucket: int, device: torch.device, overrides: tuple = ()) -> MatmulLauncher:
    target = target_for_capability(*torch.cuda.get_device_capability(device)).name
    schedule = matmul_schedule(cfg, bucket, target, **dict(overrides))
    options = CompileOptions("matmul", CompileOptions.freeze(cfg.as_dict()), target,
                             CompileOptions.freeze(schedule.as_dict()))
    payload = get_or_build(options.key(), lambda: _build_matmul(cfg, schedule, target))
    return MatmulLauncher(payload, device)


def _build_attention(cfg, schedule, target) -> dict:
    from lowbit.compiler.gpu_pipeline import compile_attention  # MLIR only when a kernel must be built

    artifact = compile_attention(cfg, schedule, target)
    return {"ptx": artifact.ptx, "meta": artifact.meta}


class AttentionLauncher:
    """Launches a compiled FlashAttention kernel on tensors [Q, K, V, out] (see SPEC.md for shapes)."""

    def __init__(self, payload: dict, device: torch.device, schedule):
        meta = payload["meta"]
        self.meta, self.schedule = meta, schedule
        self.kernel = CudaKernel(payload["ptx"], meta["kernel"], device, meta["threads"], meta["shared_bytes"])

    def __call__(self, tensors) -> None:
        for name, t in zip(("Q", "K", "V", "output"), tensors):
            if t.data_ptr() % 16:
                raise ValueError(f"{name} must start at a 16-byte aligned address for the GPU kernel "
                                 f"(got a view at offset {t.storage_offset()}; call .clone() first)")
        self.kernel.launch((self.meta["grid_x"], 1, 1), [t.data_ptr() for t in tensors])


def _attention_payload(cfg, target: str, overrides: tuple):
    schedule = attention_schedule(cfg, target, **dict(overrides))
    options = CompileOptions("attention", CompileOptions.freeze(cfg.as_dict()), target,
                             CompileOptions.freeze(schedule.as_dict()))
    return get_or_build(options.key(), lambda: _build_attention(cfg, schedule, target)), schedule


@functools.lru_cache(maxsize=None)
def _attention_launcher(cfg, device: torch.device, overrides: tuple = ()) -> AttentionLauncher:
    target = target_for_capability(*torch.cuda.get_device_capability(device)).name
    payload, schedule = _attention_payload(cfg, target, overrides)
    return AttentionLauncher(payload, device, schedule)


def _prebuild_one(job) -> None:
    cfg, target, overrides = job
    _attention_payload(cfg, target, overrides)


def prebuild_attention(jobs, target: str, workers: int = None) -> None:
    """Compiles the kernels of `jobs` ((FlashAttenConfig, schedule overrides dict) pairs) for `target` into
    the on-disk kernel cache in parallel worker processes (spawned: they never touch CUDA), so that
    the first calls of many configs need not compile one after another."""
    import concurrent.futures
    import multiprocessing
    import os

    work = [(cfg, target, tuple(sorted(dict(over).items()))) for cfg, over in jobs]
    workers = workers or max(1, min(len(work), (os.cpu_count() or 2) - 1, 12))
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        list(ex.map(_prebuild_one, work))


def _cuda_device(device: torch.device) -> torch.device:
    return torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())


def attention_kernel(config, device: torch.device, **schedule) -> AttentionLauncher:
    """The attention kernel of `config` on `device`, with schedule fields overridden by `schedule`
    (for tuning and benchmarks; `gpu_kernel` uses the default schedule)."""
    return _attention_launcher(config, _cuda_device(device), tuple(sorted(schedule.items())))


def gpu_kernel(op: str, config, device: torch.device, bucket: int = None, schedule: tuple = ()):
    """The launcher of `config` on `device`; `schedule` holds (field, value) overrides of the matmul schedule."""
    device = _cuda_device(device)
    if op == "matmul":
        return _matmul_launcher(config, bucket, device, schedule)
    if op == "attention":
        return _attention_launcher(config, device)
    raise NotImplementedError(f"the GPU backend of {op!r} is not available; allowed: 'matmul', 'attention'")
