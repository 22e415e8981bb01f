"""Argument checks shared by the operators: clear TypeError/ValueError before any launch."""
from __future__ import annotations

import torch

TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32, "int8": torch.int8, "int32": torch.int32}


def check_tensor(name: str, t, dtype: str, shape=None, device=None) -> None:
    """`t` must be a contiguous torch tensor of `dtype`, of `shape` (None entries match any size) on `device`.

    On the per-call path of every forward: the common case costs a few attribute reads.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype is not TORCH_DTYPES[dtype]:
        raise TypeError(f"{name} must have dtype torch.{dtype}, got {t.dtype}")
    if shape is not None and t.shape != shape and not _matches(shape, t.shape):
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(t.shape)}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device} but the other inputs are on {device}; put all tensors on one device")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (call .contiguous() first)")


def _matches(shape, actual) -> bool:
    return len(shape) == len(actual) and all(s is None or s == d for s, d in zip(shape, actual))
