"""The GPU kernels of operator configs: cache lookup (no MLIR needed), else compile, then load."""
from __future__ import annotations

import functools

import torch

from lowbit.compiler.cache import get_or_build
from lowbit.compiler.options import CompileOptions
from lowbit.compiler.schedule import matmul_schedule
from lowbit.compiler.target import target_for_capability

from .cuda import CudaKernel


def _build_matmul(cfg, schedule, target) -> dict:
    from lowbit.compiler.gpu_pipeline import compile_matmul  # MLIR only when a kernel must be built

    artifact = compile_matmul(cfg, schedule, target)
    return {"ptx": artifact.ptx, "meta": artifact.meta}


class MatmulLauncher:
    """Launches a compiled matmul on tensors [A(m, K), W, scale?, zeros?, bias?, out(m, N)]."""

    def __init__(self, payload: dict, device: torch.device):
        meta = payload["meta"]
        self.meta = meta
        self.kernel = CudaKernel(payload["ptx"], meta["kernel"], device, meta["threads"], meta["shared_bytes"])

    def __call__(self, tensors) -> None:
        m = tensors[0].shape[0]
        grid = (self.meta["grid_x"], -(-m // self.meta["block_m"]), 1)
        self.kernel.launch(grid, [t.data_ptr() for t in tensors], [m])


@functools.lru_cache(maxsize=None)
def _matmul_launcher(cfg, bucket: int, device: torch.device) -> MatmulLauncher:
    target = target_for_capability(*torch.cuda.get_device_capability(device)).name
    schedule = matmul_schedule(cfg, bucket, target)
    options = CompileOptions("matmul", CompileOptions.freeze(cfg.as_dict()), target,
                             CompileOptions.freeze(schedule.as_dict()))
    payload = get_or_build(options.key(), lambda: _build_matmul(cfg, schedule, target))
    return MatmulLauncher(payload, device)


def gpu_kernel(op: str, config, device: torch.device, bucket: int = None):
    if op != "matmul":
        raise NotImplementedError(f"the GPU backend of {op!r} is not available yet; run it on CPU tensors")
    device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
    return _matmul_launcher(config, bucket, device)
