"""Loads PTX through the CUDA driver (cuda-python) and launches kernels on torch's current stream.

Kernels use the bare-pointer ABI: one pointer per tensor, then i32 scalars (the row count m of a matmul).
A kernel whose static and dynamic shared memory together exceed 48 KB is opted into it when loaded.
Needs no MLIR.
"""
from __future__ import annotations

import ctypes
import struct
import threading

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


class _LaunchConfig(ctypes.Structure):
    """CUlaunchConfig of the driver API (cuLaunchKernelEx), without launch attributes."""
    _fields_ = [("grid_x", ctypes.c_uint), ("grid_y", ctypes.c_uint), ("grid_z", ctypes.c_uint),
                ("block_x", ctypes.c_uint), ("block_y", ctypes.c_uint), ("block_z", ctypes.c_uint),
                ("shared_bytes", ctypes.c_uint), ("stream", ctypes.c_void_p), ("attrs", ctypes.c_void_p),
                ("num_attrs", ctypes.c_uint)]


class CudaKernel:
    """One kernel of a PTX module, loaded on one device. Launch parameters are pointers then i32
    scalars, each in a 64-bit slot of one buffer (a scalar in its low bytes, little-endian) that one
    struct.pack_into refills per launch (the driver copies it at launch). cuLaunchKernelEx takes a
    launch config kept between launches, whose grid and stream change only when the caller's do:
    four ctypes arguments instead of eleven keep the host cost of a launch low."""

    def __init__(self, ptx: str, name: str, device: torch.device, threads: int, shared_bytes: int = 0):
        self.device, self.index, self.threads, self.shared_bytes = device, device.index, threads, shared_bytes
        with torch.cuda.device(device):
            _ensure_context(device)
            self.module = check(driver.cuModuleLoadData(ptx.encode() + b"\0"))
            self.function = check(driver.cuModuleGetFunction(self.module, name.encode()))
            attr = driver.CUfunction_attribute
            static_bytes = check(driver.cuFuncGetAttribute(attr.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, self.function))
            if static_bytes + shared_bytes > STATIC_SHARED_LIMIT:  # beyond 48 KB a block must be opted in
                limit = check(driver.cuDeviceGetAttribute(
                    driver.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                    check(driver.cuDeviceGet(device.index))))
                if static_bytes + shared_bytes > limit:
                    raise CudaError(f"kernel {name} needs {static_bytes} bytes of static and {shared_bytes} of dynamic "
                                    f"shared memory; a block on {device} gets at most {limit}")
                check(driver.cuFuncSetAttribute(self.function, attr.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                                shared_bytes))
                # prefer the largest shared-memory carveout so that several such blocks fit on an SM
                check(driver.cuFuncSetAttribute(self.function,
                                                attr.CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, 100))
        # libcuda once per kernel (a machine without a driver can import this module); torch's current
        # device and the current stream's handle without their Python layers
        self._prepare_launch(int(self.function), _libcuda_launch(), torch._C._cuda_getDevice,
                             torch._C._cuda_getCurrentRawStream)

    def _prepare_launch(self, function: int, cu_launch, get_device, raw_stream) -> None:
        """The launch state: `cu_launch` is cuLaunchKernelEx (a test may pass a stand-in)."""
        self._cu_launch, self._get_device, self._raw_stream = cu_launch, get_device, raw_stream
        self._handle = ctypes.c_void_p(function)
        self._config = _LaunchConfig(0, 0, 0, self.threads, 1, 1, self.shared_bytes, None, None, 0)
        self._config_ref = ctypes.pointer(self._config)
        self._grid, self._stream = None, None
        self._n_args = -1
        self._lock = threading.Lock()  # threads sharing the kernel take turns with its buffer and config

    def _param_buffer(self, n: int) -> None:
        """The n parameter slots, the array of their addresses the driver reads, and their packer."""
        self._n_args = n
        self._slots = (ctypes.c_uint64 * max(n, 1))()
        base = ctypes.addressof(self._slots)
        self._param_array = (ctypes.c_void_p * max(n, 1))(*[base + 8 * i for i in range(n)])
        self._params = ctypes.c_void_p(ctypes.addressof(self._param_array))
        self._pack = struct.Struct(f"<{n}Q").pack_into

    def launch(self, grid: tuple, args) -> None:
        """Launches on `grid` with `args`: device pointers, then i32 scalars (non-negative)."""
        if self._get_device() != self.index:  # the driver launches into the current context: make it the tensors' device's
            with torch.cuda.device(self.index):
                return self.launch(grid, args)
        with self._lock:
            if len(args) != self._n_args:
                self._param_buffer(len(args))
            self._pack(self._slots, 0, *args)
            config = self._config
            if grid != self._grid:
                config.grid_x, config.grid_y, config.grid_z = self._grid = grid
            stream = self._raw_stream(self.index)
            if stream != self._stream:
                config.stream = self._stream = stream
            err = self._cu_launch(self._config_ref, self._handle, self._params, None)
        if err:
            check(driver.CUresult(err))


def _libcuda_launch():
    """libcuda's cuLaunchKernelEx through ctypes (the library cuda-python itself loaded), called
    holding the GIL (PyDLL): a launch takes microseconds, less than handing the GIL back and forth."""
    fn = ctypes.PyDLL("libcuda.so.1").cuLaunchKernelEx
    fn.argtypes = [ctypes.c_void_p] * 4
    fn.restype = ctypes.c_int
    return fn
