"""The kernel cache and the runtime's import boundary (no GPU needed)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lowbit.compiler import cache
from lowbit.compiler.options import CompileOptions


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_cache_round_trip_in_LOWBIT_CACHE_DIR(cache_dir):
    builds = []
    payload = cache.get_or_build("k1", lambda: builds.append(1) or {"ptx": "x", "meta": {"a": 1}})
    again = cache.get_or_build("k1", lambda: builds.append(1) or {"ptx": "y", "meta": {}})
    assert payload == again == {"ptx": "x", "meta": {"a": 1}}
    assert builds == [1], "the second lookup must come from disk"
    assert (cache_dir / "k1.json").exists()
    assert not list(cache_dir.glob(".*.tmp")), "no temporary files are left behind"


@pytest.mark.parametrize("damage", ["truncate", "edit", "garbage"])
def test_corrupted_entry_is_rebuilt(cache_dir, damage):
    cache.store("k2", {"ptx": "good", "meta": {}})
    path = cache_dir / "k2.json"
    text = path.read_text()
    path.write_text({"truncate": text[: len(text) // 2], "edit": text.replace("good", "evil"),
                     "garbage": "\x00\x01"}[damage])
    assert cache.load("k2") is None
    assert cache.get_or_build("k2", lambda: {"ptx": "rebuilt", "meta": {}})["ptx"] == "rebuilt"
    assert json.loads(path.read_text())["payload"]["ptx"] == "rebuilt"


def test_key_depends_on_every_field():
    base = CompileOptions("matmul", (("N", 1),), "sm_90a", (("block_m", 16),))
    variants = [CompileOptions("attention", base.config, base.target, base.schedule),
                CompileOptions("matmul", (("N", 2),), base.target, base.schedule),
                CompileOptions("matmul", base.config, "sm_80", base.schedule),
                CompileOptions("matmul", base.config, base.target, (("block_m", 32),)),
                CompileOptions("matmul", base.config, base.target, base.schedule, opt_level=3)]
    keys = {base.key()} | {v.key() for v in variants}
    assert len(keys) == 6
    assert base.key() == CompileOptions("matmul", (("N", 1),), "sm_90a", (("block_m", 16),)).key()


def test_runtime_imports_without_mlir():
    code = ("import sys, lowbit, lowbit.runtime.gpu_kernels, lowbit.compiler.cache;"
            "from lowbit.compiler.options import generator_digest; generator_digest();"
            "bad = [m for m in sys.modules if m == 'mlir' or m.startswith('mlir.')]; print(bad); assert not bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_launch_hands_the_driver_its_config_and_parameters():
    """CudaKernel.launch with a stand-in cuLaunchKernelEx (no GPU): the CUlaunchConfig it passes holds the
    grid, block, shared memory and current stream, the parameter array points at the pointers and the
    i32 scalar, and a new grid, stream or argument list reaches the next launch."""
    import ctypes

    from lowbit.runtime.cuda import CudaKernel, _LaunchConfig

    seen = []

    def driver(config, function, params, extra):
        c = ctypes.cast(config, ctypes.POINTER(_LaunchConfig)).contents
        slots = ctypes.cast(params, ctypes.POINTER(ctypes.c_void_p * 4)).contents
        values = [ctypes.c_uint64.from_address(slots[i]).value for i in range(3)]
        values.append(ctypes.c_int32.from_address(slots[3]).value)
        seen.append(((c.grid_x, c.grid_y, c.grid_z), (c.block_x, c.block_y, c.block_z), c.shared_bytes,
                     c.stream, c.num_attrs, function, values, extra))
        return 0

    launch = ctypes.CFUNCTYPE(ctypes.c_int, *[ctypes.c_void_p] * 4)(driver)
    streams, devices = [0x1110], []
    kernel = CudaKernel.__new__(CudaKernel)
    kernel.index, kernel.threads, kernel.shared_bytes = 0, 128, 4096
    kernel._prepare_launch(0xABC0, launch, lambda: 0, lambda index: devices.append(index) or streams[-1])
    kernel.launch((16, 2, 4), (1 << 40, 2 << 40, 3 << 40, 7))
    kernel.launch((16, 2, 4), (1 << 40, 2 << 40, 3 << 40, 8))
    streams.append(0x2220)
    kernel.launch((16, 3, 4), (5 << 40, 6 << 40, 7 << 40, 9))
    assert seen == [
        ((16, 2, 4), (128, 1, 1), 4096, 0x1110, 0, 0xABC0, [1 << 40, 2 << 40, 3 << 40, 7], None),
        ((16, 2, 4), (128, 1, 1), 4096, 0x1110, 0, 0xABC0, [1 << 40, 2 << 40, 3 << 40, 8], None),
        ((16, 3, 4), (128, 1, 1), 4096, 0x2220, 0, 0xABC0, [5 << 40, 6 << 40, 7 << 40, 9], None),
    ]
    assert devices == [0, 0, 0]


@pytest.mark.gpu
def test_gpu_kernel_with_static_and_dynamic_shared_memory_over_48KB(seed):
    """A kernel's static shared memory counts toward the 48 KB a block gets without the opt-in: 40 KB
    static plus 16 KB dynamic loads, launches and computes; more than the device allows is an error
    that names both sizes."""
    import pathlib

    import torch

    from lowbit.runtime.cuda import CudaError, CudaKernel

    ptx = (pathlib.Path(__file__).parent / "data" / "static_and_dynamic_smem.ptx").read_text()
    device = torch.device("cuda", 0)
    kernel = CudaKernel(ptx, "static_and_dynamic", device, 128, 16 * 1024)
    n = seed % 1000
    out = torch.full((128,), -1, dtype=torch.int32, device=device)
    kernel.launch((1, 1, 1), (out.data_ptr(), n))
    tid = torch.arange(128, dtype=torch.int32, device=device)
    assert torch.equal(out, 2 * tid + n)
    with pytest.raises(CudaError, match="40960 bytes of static and 204800 of dynamic"):
        CudaKernel(ptx, "static_and_dynamic", device, 128, 200 * 1024)
