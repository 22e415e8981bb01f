"""The `lowbit` dialect: defined in IRDL (lowbit.irdl.mlir), loaded into an MLIR context at run time."""
from .lowbit import (  # noqa: F401
    ATTENTION_OP,
    MATMUL_OP,
    attention,
    config_attrs,
    load_dialect,
    make_context,
    matmul,
    matmul_operands,
    read_config_attrs,
)
