"""Runs CPU kernels with MLIR's ExecutionEngine on torch tensors, passing memref descriptors."""
from __future__ import annotations

import ctypes
import functools
from typing import Sequence

import torch
from mlir import ir
from mlir.execution_engine import ExecutionEngine


@functools.lru_cache(maxsize=None)
def _descriptor_type(rank: int) -> type:
    """The C struct of a ranked memref descriptor."""
    return type(
        f"MemRef{rank}D",
        (ctypes.Structure,),
        {
            "_fields_": [
                ("allocated", ctypes.c_void_p),
                ("aligned", ctypes.c_void_p),
                ("offset", ctypes.c_longlong),
                ("shape", ctypes.c_longlong * rank),
                ("strides", ctypes.c_longlong * rank),
            ]
        },
    )


def memref_descriptor(t: torch.Tensor):
    """A descriptor viewing a contiguous CPU tensor (no copy)."""
    desc = _descriptor_type(t.dim())()
    desc.allocated = desc.aligned = t.data_ptr()
    desc.offset = 0
    desc.shape[:] = list(t.shape)
    desc.strides[:] = list(t.stride())
    return desc


class CpuKernel:
    """A JIT-compiled function of an LLVM-dialect module, called on torch tensors."""

    def __init__(self, llvm_module: ir.Module, func_name: str, opt_level: int = 2):
        self.func_name = func_name
        self.engine = ExecutionEngine(llvm_module, opt_level=opt_level)

    def __call__(self, tensors: Sequence[torch.Tensor]) -> None:
        descriptors = [memref_descriptor(t) for t in tensors]
        args = [ctypes.pointer(ctypes.pointer(d)) for d in descriptors]
        self.engine.invoke(self.func_name, *args)
