"""lowbit.compiler: targets, the staged pipeline (lowbit -> loops/gpu -> llvm -> ptx), the kernel cache."""
from .options import CompileOptions  # noqa: F401
from .target import TARGETS, Target, target_of  # noqa: F401
