"""The frozen, hashable compile options that key the kernel cache."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

COMPILER_VERSION = "0.1.0"


@dataclass(frozen=True)
class CompileOptions:
    op: str  # 'matmul' or 'attention'
    config: tuple  # sorted (field, value) pairs of the operator config
    target: str
    schedule: tuple = ()  # sorted (key, value) pairs; empty for the CPU
    opt_level: int = 2

    def key(self) -> str:
        """A stable hash of everything that decides the kernel, plus the compiler version."""
        blob = json.dumps([asdict(self), COMPILER_VERSION], sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    @staticmethod
    def freeze(d: dict) -> tuple:
        return tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in d.items()))
