"""`FlashAtten`: softmax attention of SPEC.md on CPU (loops) or GPU tensors."""
from __future__ import annotations

import torch

from lowbit.checks import TORCH_DTYPES, check_tensor
from lowbit.config import FlashAttenConfig
from lowbit.shapes import attention_shapes
from lowbit.kernels import kernel_for


class FlashAtten:
    def __init__(self, config: FlashAttenConfig):
        if not isinstance(config, FlashAttenConfig):
            raise TypeError(f"config must be a FlashAttenConfig, got {type(config).__name__}")
        self.config = config
        self._shapes = attention_shapes(config)

    def __getattr__(self, name):
        if name in FlashAttenConfig.__dataclass_fields__:
            return getattr(self.config, name)
        raise AttributeError(name)

    def forward(self, Q, K, V, output=None) -> torch.Tensor:
        check_tensor("Q", Q, "float16", self._shapes["q"][0])
        device = Q.device
        check_tensor("K", K, "float16", self._shapes["k"][0], device)
        check_tensor("V", V, "float16", self._shapes["v"][0], device)
        if output is None:
            output = torch.empty(self._shapes["out"][0], dtype=TORCH_DTYPES["float16"], device=device)
        else:
            check_tensor("output", output, "float16", self._shapes["out"][0], device)
        kernel_for("attention", self.config, device)([Q, K, V, output])
        return output

    __call__ = forward
