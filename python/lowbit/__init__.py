"""lowbit: low-bit matmul and attention kernels compiled through MLIR (see SPEC.md for the contract)."""
from .config import FlashAttenConfig, MatmulConfig
from .matmul import Matmul
from .attention import FlashAtten
from .formats import quantize
from .linear import Linear, replace_linear

__all__ = ["MatmulConfig", "Matmul", "FlashAttenConfig", "FlashAtten", "Linear", "quantize", "replace_linear"]
