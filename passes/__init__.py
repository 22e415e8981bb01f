"""lowbit passes, one per file, registered by name for `lowbit-opt` and the compiler pipeline."""
from .base import ModulePass
from .lower_attention_to_gpu import LowerAttentionToGpu
from .lower_attention_to_loops import LowerAttentionToLoops
from .lower_matmul_to_gpu import LowerMatmulToGpu
from .lower_matmul_to_loops import LowerMatmulToLoops

PASSES: dict[str, type[ModulePass]] = {
    p.name: p for p in (LowerMatmulToLoops, LowerAttentionToLoops, LowerMatmulToGpu, LowerAttentionToGpu)
}
