"""The frozen, hashable compile options that key the kernel cache."""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from dataclasses import asdict, dataclass
from pathlib import Path

COMPILER_VERSION = "0.1.0"
# the sources that generate kernels (found without importing them: the runtime needs no MLIR)
_GENERATOR_PACKAGES = ("lowbit.passes", "lowbit.compiler", "lowbit.dialects")
_GENERATOR_MODULES = ("lowbit.layout", "lowbit.formats", "lowbit.frontend", "lowbit.shapes")


@functools.lru_cache(maxsize=None)
def generator_digest() -> str:
    """A hash of the kernel generator's source files: cached kernels of older code are never reused."""
    files = []
    for name in _GENERATOR_PACKAGES:
        for root in importlib.util.find_spec(name).submodule_search_locations:
            files += sorted(Path(root).rglob("*.py")) + sorted(Path(root).rglob("*.mlir"))
    files += [Path(importlib.util.find_spec(name).origin) for name in _GENERATOR_MODULES]
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class CompileOptions:
    op: str  # 'matmul' or 'attention'
    config: tuple  # sorted (field, value) pairs of the operator config
    target: str
    schedule: tuple = ()  # sorted (key, value) pairs; empty for the CPU
    opt_level: int = 2

    def key(self) -> str:
        """A stable hash of everything that decides the kernel, plus the compiler version."""
        blob = json.dumps([asdict(self), COMPILER_VERSION, generator_digest()], sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    @staticmethod
    def freeze(d: dict) -> tuple:
        return tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in d.items()))
