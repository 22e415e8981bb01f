"""Loads PTX through the CUDA driver (cuda-python) and launches kernels on torch's current stream.

Kernels use the bare-pointer ABI: one pointer per tensor, then the row count m as an i32.
Needs no MLIR.
"""
from __future__ import annotations

import ctypes

import torch
from cuda.bindings import driver


class CudaError(RuntimeError):
    pass


def check(result):
    """Raises with the driver's own message on any error; returns the call's values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != driver.CUresult.CUDA_SUCCESS:
        _, name = driver.cuGetErrorName(err)
        _, text = driver.cuGetErrorString(err)
        raise CudaError(f"CUDA driver error {name.decode() if name else err}: {text.decode() if text else ''}")
    return values[0] if len(values) == 1 else values


def _ensure_context(device: torch.device) -> None:
    """Makes the device's primary context current (torch's own) on this thread."""
    torch.cuda.init()
    with torch.cuda.device(device):
        torch.cuda.current_stream(device)  # creates the primary context if torch has not yet
        if int(check(driver.cuCtxGetCurrent())) == 0:
            dev = check(driver.cuDeviceGet(device.index))
            check(driver.cuCtxSetCurrent(check(driver.cuDevicePrimaryCtxRetain(dev))))


class CudaKernel:
    """One kernel of a PTX module, loaded on one device."""

    def __init__(self, ptx: str, name: str, device: torch.device, threads: int, shared_bytes: int = 0):
        self.device, self.threads, self.shared_bytes = device, threads, shared_bytes
        with torch.cuda.device(device):
            _ensure_context(device)
            self.module = check(driver.cuModuleLoadData(ptx.encode() + b"\0"))
            self.function = check(driver.cuModuleGetFunction(self.module, name.encode()))

    def launch(self, grid, pointers, scalars_i32=()) -> None:
        values = tuple(pointers) + tuple(scalars_i32)
        types = (ctypes.c_void_p,) * len(pointers) + (ctypes.c_int32,) * len(scalars_i32)
        stream = torch.cuda.current_stream(self.device).cuda_stream
        with torch.cuda.device(self.device):
            check(driver.cuLaunchKernel(self.function, *grid, self.threads, 1, 1, self.shared_bytes,
                                        driver.CUstream(stream), (values, types), 0))
