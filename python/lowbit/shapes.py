"""The buffers of an operator config: name -> (shape, dtype). Shared by the frontend (memref types), the
operators' argument checks and the runtime; needs no MLIR."""
from __future__ import annotations

from lowbit.config import FlashAttenConfig, MatmulConfig
from lowbit.formats import format_of
from lowbit.layout import layout_of

DYNAMIC = None  # a dynamic dimension (the rows of A and out when M is a list)


def matmul_shapes(cfg: MatmulConfig) -> dict:
    """Operand name -> (shape, dtype) of the kernel's buffers; absent operands are left out."""
    rows = cfg.M if cfg.static_M else DYNAMIC
    fmt = format_of(cfg.W_dtype)
    groups = cfg.K // cfg.group
    kpad = layout_of(fmt.bits, cfg.A_dtype).padded(cfg.K)  # both layouts are stored [N, Kpad]
    w = ((cfg.N, kpad * fmt.bits // 8), "int8") if fmt.packed else ((cfg.N, kpad), cfg.W_dtype)
    shapes = {"a": ((rows, cfg.K), cfg.A_dtype), "w": w}
    if cfg.with_scaling:
        shapes["scale"] = ((cfg.N, groups), "float16")
    if cfg.with_zeros:
        quantized = cfg.zeros_mode == "quantized"
        shapes["zeros"] = ((groups, cfg.N * fmt.bits // 8), "int8") if quantized else ((cfg.N, groups), "float16")
    if cfg.with_bias:
        shapes["bias"] = ((cfg.N,), "int32" if cfg.out_dtype in ("int32", "int8") else cfg.out_dtype)
    shapes["out"] = ((rows, cfg.N), cfg.out_dtype)
    return shapes


def attention_shapes(cfg: FlashAttenConfig) -> dict:
    q = (cfg.batch, cfg.seq_len, cfg.heads, cfg.dim)
    kv = (cfg.batch, cfg.seq_len, cfg.kv_heads, cfg.dim)
    k = kv if cfg.layout == "nnn" else (cfg.batch, cfg.dim, cfg.kv_heads, cfg.seq_len)
    return {"q": (q, "float16"), "k": (k, "float16"), "v": (kv, "float16"), "out": (q, "float16")}
