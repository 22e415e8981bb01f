// RUN: not lowbit-opt %s --split-input-file 2>&1 | FileCheck %s
// RUN: not lowbit-opt %s --split-input-file 2>/dev/null | FileCheck %s --check-prefix=VALID

// Each chunk is parsed and verified on its own; errors name the line of this file.
// The one valid chunk is still printed on stdout.

// VALID: func.func @valid
// VALID-NOT: func.func @
func.func @valid(%a: memref<1x64xf16>, %w: memref<64x32xi8>, %o: memref<1x64xf16>) {
  "lowbit.matmul"(%a, %w, %o) {A_dtype = "float16", K = 64 : i64, M = 1 : i64, N = 64 : i64, W_dtype = "uint4", accum_dtype = "float16", group_size = -1 : i64, layout = "nt", operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 1>, out_dtype = "float16", with_bias = false, with_scaling = false, with_zeros = false, zeros_mode = "original"} : (memref<1x64xf16>, memref<64x32xi8>, memref<1x64xf16>) -> ()
  return
}

// -----

// CHECK: invalid.mlir:[[# @LINE + 2]]:3: error: '"int3"' does not satisfy the constraint
func.func @bad_w_dtype(%a: memref<1x64xf16>, %w: memref<64x32xi8>, %o: memref<1x64xf16>) {
  "lowbit.matmul"(%a, %w, %o) {A_dtype = "float16", K = 64 : i64, M = 1 : i64, N = 64 : i64, W_dtype = "int3", accum_dtype = "float16", group_size = -1 : i64, layout = "nt", operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 1>, out_dtype = "float16", with_bias = false, with_scaling = false, with_zeros = false, zeros_mode = "original"} : (memref<1x64xf16>, memref<64x32xi8>, memref<1x64xf16>) -> ()
  return
}

// -----

// CHECK: invalid.mlir:[[# @LINE + 2]]:3: error: '"bf16"' does not satisfy the constraint
func.func @bad_a_dtype(%a: memref<1x64xf16>, %w: memref<64x32xi8>, %o: memref<1x64xf16>) {
  "lowbit.matmul"(%a, %w, %o) {A_dtype = "bf16", K = 64 : i64, M = 1 : i64, N = 64 : i64, W_dtype = "uint4", accum_dtype = "float16", group_size = -1 : i64, layout = "nt", operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 1>, out_dtype = "float16", with_bias = false, with_scaling = false, with_zeros = false, zeros_mode = "original"} : (memref<1x64xf16>, memref<64x32xi8>, memref<1x64xf16>) -> ()
  return
}

// -----

// An attribute of the wrong kind: N must be an integer.
// CHECK: invalid.mlir:[[# @LINE + 2]]:3: error: expected base attribute 'builtin.integer' but got 'builtin.string'
func.func @n_is_a_string(%a: memref<1x64xf16>, %w: memref<64x32xi8>, %o: memref<1x64xf16>) {
  "lowbit.matmul"(%a, %w, %o) {A_dtype = "float16", K = 64 : i64, M = 1 : i64, N = "64", W_dtype = "uint4", accum_dtype = "float16", group_size = -1 : i64, layout = "nt", operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 1>, out_dtype = "float16", with_bias = false, with_scaling = false, with_zeros = false, zeros_mode = "original"} : (memref<1x64xf16>, memref<64x32xi8>, memref<1x64xf16>) -> ()
  return
}

// -----

// CHECK: invalid.mlir:[[# @LINE + 2]]:3: error: 'operandSegmentSizes' attribute is expected but not provided
func.func @no_segment_sizes(%a: memref<1x64xf16>, %w: memref<64x32xi8>, %o: memref<1x64xf16>) {
  "lowbit.matmul"(%a, %w, %o) {A_dtype = "float16", K = 64 : i64, M = 1 : i64, N = 64 : i64, W_dtype = "uint4", accum_dtype = "float16", group_size = -1 : i64, layout = "nt", out_dtype = "float16", with_bias = false, with_scaling = false, with_zeros = false, zeros_mode = "original"} : (memref<1x64xf16>, memref<64x32xi8>, memref<1x64xf16>) -> ()
  return
}

// -----

// The segment sizes announce a scale operand that is not there.
// CHECK: invalid.mlir:[[# @LINE + 2]]:3: error: sum of elements in 'operandSegmentSizes' attribute must be equal to the number of operands
func.func @wrong_operand_count(%a: memref<1x64xf16>, %w: memref<64x32xi8>, %o: memref<1x64xf16>) {
  "lowbit.matmul"(%a, %w, %o) {A_dtype = "float16", K = 64 : i64, M = 1 : i64, N = 64 : i64, W_dtype = "uint4", accum_dtype = "float16", group_size = -1 : i64, layout = "nt", operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 1>, out_dtype = "float16", with_bias = false, with_scaling = false, with_zeros = false, zeros_mode = "original"} : (memref<1x64xf16>, memref<64x32xi8>, memref<1x64xf16>) -> ()
  return
}

// -----

// Operands must be memrefs.
// CHECK: invalid.mlir:[[# @LINE + 2]]:3: error: expected base type 'builtin.memref' but got 'builtin.tensor'
func.func @tensor_operand(%a: tensor<1x64xf16>, %w: memref<64x32xi8>, %o: memref<1x64xf16>) {
  "lowbit.matmul"(%a, %w, %o) {A_dtype = "float16", K = 64 : i64, M = 1 : i64, N = 64 : i64, W_dtype = "uint4", accum_dtype = "float16", group_size = -1 : i64, layout = "nt", operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 1>, out_dtype = "float16", with_bias = false, with_scaling = false, with_zeros = false, zeros_mode = "original"} : (tensor<1x64xf16>, memref<64x32xi8>, memref<1x64xf16>) -> ()
  return
}

// -----

// CHECK: invalid.mlir:[[# @LINE + 2]]:3: error: op expects exactly 4 operands, but got 3
func.func @attention_three_operands(%q: memref<1x16x2x16xf16>, %k: memref<1x16x2x16xf16>, %o: memref<1x16x2x16xf16>) {
  "lowbit.attention"(%q, %k, %o) {Accu_dtype = "float32", K_dtype = "float16", Out_dtype = "float16", Q_dtype = "float16", V_dtype = "float16", batch = 1 : i64, dim = 16 : i64, heads = 2 : i64, is_causal = false, kv_heads = 2 : i64, layout = "nnn", seq_len = 16 : i64} : (memref<1x16x2x16xf16>, memref<1x16x2x16xf16>, memref<1x16x2x16xf16>) -> ()
  return
}

// -----

// CHECK: invalid.mlir:[[# @LINE + 2]]:3: error: 'lowbit.attention' op attribute "is_causal" is expected but not provided
func.func @attention_missing_attr(%q: memref<1x16x2x16xf16>, %k: memref<1x16x2x16xf16>, %v: memref<1x16x2x16xf16>, %o: memref<1x16x2x16xf16>) {
  "lowbit.attention"(%q, %k, %v, %o) {Accu_dtype = "float32", K_dtype = "float16", Out_dtype = "float16", Q_dtype = "float16", V_dtype = "float16", batch = 1 : i64, dim = 16 : i64, heads = 2 : i64, kv_heads = 2 : i64, layout = "nnn", seq_len = 16 : i64} : (memref<1x16x2x16xf16>, memref<1x16x2x16xf16>, memref<1x16x2x16xf16>, memref<1x16x2x16xf16>) -> ()
  return
}

// -----

// CHECK: invalid.mlir:[[# @LINE + 2]]:3: error: '"nt"' does not satisfy the constraint
func.func @attention_bad_layout(%q: memref<1x16x2x16xf16>, %k: memref<1x16x2x16xf16>, %v: memref<1x16x2x16xf16>, %o: memref<1x16x2x16xf16>) {
  "lowbit.attention"(%q, %k, %v, %o) {Accu_dtype = "float32", K_dtype = "float16", Out_dtype = "float16", Q_dtype = "float16", V_dtype = "float16", batch = 1 : i64, dim = 16 : i64, heads = 2 : i64, is_causal = false, kv_heads = 2 : i64, layout = "nt", seq_len = 16 : i64} : (memref<1x16x2x16xf16>, memref<1x16x2x16xf16>, memref<1x16x2x16xf16>, memref<1x16x2x16xf16>) -> ()
  return
}

// -----

// CHECK: invalid.mlir:[[# @LINE + 1]]:27: error: unregistered operation 'lowbit.nosuchop' found in dialect ('lowbit') that does not allow unknown operations
func.func @unknown_op() { "lowbit.nosuchop"() : () -> () }
