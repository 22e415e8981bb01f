"""lowbit.runtime: runs compiled kernels (CPU through MLIR's ExecutionEngine, GPU through the CUDA driver)."""
