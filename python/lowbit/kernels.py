"""Builds and caches the kernel that runs an operator config on a device."""
from __future__ import annotations

import functools

import torch

from lowbit.compiler.options import CompileOptions


@functools.lru_cache(maxsize=None)
def _cpu_kernel(options: CompileOptions):
    # MLIR is imported here so that GPU-only users of cached kernels never need it.
    from lowbit import frontend
    from lowbit.compiler.pipeline import lower_cpu
    from lowbit.config import FlashAttenConfig, MatmulConfig
    from lowbit.dialects import make_context
    from lowbit.runtime.cpu import CpuKernel

    ctx = make_context()
    fields = dict(options.config)
    if options.op == "matmul":
        module, name = frontend.matmul_module(MatmulConfig(**fields), ctx), frontend.MATMUL_FUNC
    else:
        module, name = frontend.attention_module(FlashAttenConfig(**fields), ctx), frontend.ATTENTION_FUNC
    return CpuKernel(lower_cpu(module, "llvm"), name, options.opt_level)


def kernel_for(op: str, config, device: torch.device, bucket: int = None, schedule: tuple = ()):
    """The kernel of `config` for `device`; on the CPU one kernel serves every M bucket (and GPU
    schedule overrides do not apply)."""
    if device.type == "cpu":
        return _cpu_kernel(CompileOptions(op, CompileOptions.freeze(config.as_dict()), "cpu"))
    if device.type == "cuda":
        from lowbit.runtime.gpu_kernels import gpu_kernel

        return gpu_kernel(op, config, device, bucket, schedule)
    raise ValueError(f"tensors on device type {device.type!r} are not supported; allowed: cpu, cuda")
