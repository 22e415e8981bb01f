// RUN: not lowbit-opt %s --split-input-file --pass-pipeline='builtin.module(lowbit-lower-matmul-to-loops)' 2>&1 | FileCheck %s
// RUN: not lowbit-opt %s --split-input-file --pass-pipeline='builtin.module(lowbit-lower-matmul-to-gpu)' 2>&1 | FileCheck %s
// The lowerings check that the operands are the buffers the attributes describe.

// CHECK: operand 'w' is memref<64x3xi8>, but its attributes (MatmulConfig) need memref<64x64xi8>
func.func @f(%a: memref<?x128xf16>, %w: memref<64x3xi8>, %o: memref<?x64xf16>) {
  "lowbit.matmul"(%a, %w, %o) {M = [1, 16], N = 64 : i64, K = 128 : i64, A_dtype = "float16", W_dtype = "uint4", accum_dtype = "float16", out_dtype = "float16", layout = "nt", with_bias = false, group_size = -1 : i64, with_scaling = false, with_zeros = false, zeros_mode = "original", operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 1>} : (memref<?x128xf16>, memref<64x3xi8>, memref<?x64xf16>) -> ()
  return
}
// -----
// CHECK: 'lowbit.matmul' has invalid attributes: M='x' must be a positive int
func.func @f(%a: memref<?x128xf16>, %w: memref<64x64xi8>, %o: memref<?x64xf16>) {
  "lowbit.matmul"(%a, %w, %o) {M = "x", N = 64 : i64, K = 128 : i64, A_dtype = "float16", W_dtype = "uint4", accum_dtype = "float16", out_dtype = "float16", layout = "nt", with_bias = false, group_size = -1 : i64, with_scaling = false, with_zeros = false, zeros_mode = "original", operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 1>} : (memref<?x128xf16>, memref<64x64xi8>, memref<?x64xf16>) -> ()
  return
}
