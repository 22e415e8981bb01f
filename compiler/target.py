"""Compilation targets: the CPU backend and NVIDIA GPUs by compute capability."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str  # 'cpu' or an sm_XX chip name
    features: str = ""  # PTX feature string for the NVVM target
    sms: int = 0  # multiprocessors of the reference device whose waves the default schedules fill

    @property
    def is_gpu(self) -> bool:
        return self.name != "cpu"

    @property
    def capability(self) -> int:
        """Compute capability as an int (90 for sm_90a); 0 for the CPU."""
        return int(self.name[3:5]) if self.is_gpu else 0


TARGETS = {
    "cpu": Target("cpu"),
    "sm_80": Target("sm_80", "+ptx74", 108),  # 7.4: createpolicy and L2::cache_hint loads; A100
    "sm_86": Target("sm_86", "+ptx74", 84),  # RTX 3090
    "sm_89": Target("sm_89", "+ptx78", 128),  # RTX 4090
    "sm_90a": Target("sm_90a", "+ptx80", 132),  # H100 SXM
}


def target_of(name: str) -> Target:
    if name not in TARGETS:
        raise ValueError(f"target={name!r} is not supported; allowed: {', '.join(TARGETS)}")
    return TARGETS[name]


def target_for_capability(major: int, minor: int) -> Target:
    """The newest lowbit target a device of compute capability (major, minor) can run."""
    cc = major * 10 + minor
    if cc >= 90:
        return TARGETS["sm_90a"] if cc == 90 else TARGETS["sm_89"]
    for name in ("sm_89", "sm_86", "sm_80"):
        if cc >= TARGETS[name].capability:
            return TARGETS[name]
    raise ValueError(f"compute capability {major}.{minor} is older than sm_80, the oldest lowbit supports")
