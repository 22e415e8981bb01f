"""lowbit: low-bit matmul and attention kernels compiled through MLIR (see SPEC.md for the contract)."""
from .config import FlashAttenConfig, MatmulConfig
from .matmul import Matmul
from .attention import FlashAtten

__all__ = ["MatmulConfig", "Matmul", "FlashAttenConfig", "FlashAtten"]
