"""Loads PTX through the CUDA driver (cuda-python) and launches kernels on torch's current stream.

Kernels use the bare-pointer ABI: one pointer per tensor, then i32 scalars (the row count m of a matmul).
A kernel using more than 48 KB of dynamic shared memory is opted into it when loaded.
Needs no MLIR.
"""
from __future__ import annotations

import ctypes

import torch
from cuda.bindings import driver


STATIC_SHARED_LIMIT = 48 * 1024  # shared memory a launch may use without cuFuncSetAttribute


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
    """One kernel of a PTX module, loaded on one device. Launch parameters are pointers then i32
    scalars; their buffer is built at the first launch and refilled after (the driver copies it at
    launch), which keeps the host cost of a launch to a few microseconds."""

    def __init__(self, ptx: str, name: str, device: torch.device, threads: int, shared_bytes: int = 0):
        self.device, self.index, self.threads, self.shared_bytes = device, device.index, threads, shared_bytes
        with torch.cuda.device(device):
            _ensure_context(device)
            self.module = check(driver.cuModuleLoadData(ptx.encode() + b"\0"))
            self.function = check(driver.cuModuleGetFunction(self.module, name.encode()))
            if shared_bytes > STATIC_SHARED_LIMIT:  # dynamic shared memory beyond 48 KB must be opted into
                attr = driver.CUfunction_attribute
                check(driver.cuFuncSetAttribute(self.function, attr.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                                shared_bytes))
                # prefer the largest shared-memory carveout so that several such blocks fit on an SM
                check(driver.cuFuncSetAttribute(self.function,
                                                attr.CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, 100))
        self._handle = int(self.function)
        self._cu_launch = _libcuda_launch()  # once per kernel: a machine without a driver can import this module
        self._values: list = []

    def _param_buffer(self, n_pointers: int, n_scalars: int) -> list:
        self._values = [ctypes.c_void_p() for _ in range(n_pointers)] + [ctypes.c_int32() for _ in range(n_scalars)]
        self._params = (ctypes.c_void_p * len(self._values))(*[ctypes.addressof(v) for v in self._values])
        self._params_address = ctypes.addressof(self._params)
        return self._values

    def launch(self, grid, pointers, scalars_i32=()) -> None:
        values = self._values if len(self._values) == len(pointers) + len(scalars_i32) else \
            self._param_buffer(len(pointers), len(scalars_i32))
        for slot, value in zip(values, (*pointers, *scalars_i32)):
            slot.value = value
        if torch._C._cuda_getDevice() == self.index:  # torch.cuda.current_device() without its Python layers
            self._launch(grid)
        else:  # the driver launches into the current context: make it the tensors' device's
            with torch.cuda.device(self.index):
                self._launch(grid)

    def _launch(self, grid) -> None:
        # straight into libcuda: cuda-python's marshalling costs ~5 us a launch, this ~1 us
        err = self._cu_launch(self._handle, grid[0], grid[1], grid[2], self.threads, 1, 1, self.shared_bytes,
                              torch._C._cuda_getCurrentRawStream(self.index), self._params_address, None)
        if err:
            check(driver.CUresult(err))


def _libcuda_launch():
    """libcuda's cuLaunchKernel through ctypes (the library cuda-python itself loaded)."""
    fn = ctypes.CDLL("libcuda.so.1").cuLaunchKernel
    fn.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 7 + [ctypes.c_void_p] * 3
    fn.restype = ctypes.c_int
    return fn
