// RUN: lowbit-opt %s --pass-pipeline='builtin.module()' | FileCheck %s
// RUN: lowbit-opt %s --mlir-print-op-generic | tee %t | lowbit-opt | FileCheck %s
// RUN: FileCheck %s --check-prefix=GENERIC < %t

// lowbit ops are IRDL-defined, so they print in generic form; every config field is an attribute.

// CHECK-LABEL: func.func @lowbit_matmul(
// CHECK-SAME:      %[[A:[a-z0-9_]+]]: memref<1x128xf16>, %[[W:[a-z0-9_]+]]: memref<64x64xi8>, %[[S:[a-z0-9_]+]]: memref<64x4xf16>, %[[Z:[a-z0-9_]+]]: memref<64x4xf16>, %[[O:[a-z0-9_]+]]: memref<1x64xf16>)
// CHECK-SAME:      attributes {llvm.emit_c_interface}
// CHECK:         "lowbit.matmul"(%[[A]], %[[W]], %[[S]], %[[Z]], %[[O]])
// CHECK-SAME:      A_dtype = "float16", K = 128 : i64, M = 1 : i64, N = 64 : i64, W_dtype = "uint4"
// CHECK-SAME:      group_size = 32 : i64, layout = "nt", operandSegmentSizes = array<i32: 1, 1, 1, 1, 0, 1>
// CHECK-SAME:      with_bias = false, with_scaling = true, with_zeros = true, zeros_mode = "original"
// CHECK-SAME:      : (memref<1x128xf16>, memref<64x64xi8>, memref<64x4xf16>, memref<64x4xf16>, memref<1x64xf16>) -> ()
// CHECK-NEXT:    return
// GENERIC: "func.func"()
// GENERIC: "lowbit.matmul"
func.func @lowbit_matmul(%arg0: memref<1x128xf16>, %arg1: memref<64x64xi8>, %arg2: memref<64x4xf16>, %arg3: memref<64x4xf16>, %arg4: memref<1x64xf16>) attributes {llvm.emit_c_interface} {
  "lowbit.matmul"(%arg0, %arg1, %arg2, %arg3, %arg4) {A_dtype = "float16", K = 128 : i64, M = 1 : i64, N = 64 : i64, W_dtype = "uint4", accum_dtype = "float16", group_size = 32 : i64, layout = "nt", operandSegmentSizes = array<i32: 1, 1, 1, 1, 0, 1>, out_dtype = "float16", with_bias = false, with_scaling = true, with_zeros = true, zeros_mode = "original"} : (memref<1x128xf16>, memref<64x64xi8>, memref<64x4xf16>, memref<64x4xf16>, memref<1x64xf16>) -> ()
  return
}

// A list of M buckets is an array attribute; the rows are dynamic.
// CHECK-LABEL: func.func @bucketed_nf4(
// CHECK:         "lowbit.matmul"(%{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}) {{.*}}M = [1, 16], {{.*}}W_dtype = "nf4"{{.*}}operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 1>
// CHECK-SAME:      : (memref<?x64xf16>, memref<64x32xi8>, memref<64x1xf16>, memref<?x64xf16>) -> ()
func.func @bucketed_nf4(%arg0: memref<?x64xf16>, %arg1: memref<64x32xi8>, %arg2: memref<64x1xf16>, %arg3: memref<?x64xf16>) attributes {llvm.emit_c_interface} {
  "lowbit.matmul"(%arg0, %arg1, %arg2, %arg3) {A_dtype = "float16", K = 64 : i64, M = [1, 16], N = 64 : i64, W_dtype = "nf4", accum_dtype = "float16", group_size = -1 : i64, layout = "nt", operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 1>, out_dtype = "float16", with_bias = false, with_scaling = true, with_zeros = false, zeros_mode = "original"} : (memref<?x64xf16>, memref<64x32xi8>, memref<64x1xf16>, memref<?x64xf16>) -> ()
  return
}

// CHECK-LABEL: func.func @lowbit_attention(
// CHECK:         "lowbit.attention"(%{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}}, %{{[a-z0-9_]+}})
// CHECK-SAME:      batch = 1 : i64, dim = 16 : i64, heads = 2 : i64, is_causal = true, kv_heads = 2 : i64, layout = "nnn", seq_len = 16 : i64
// CHECK-SAME:      : (memref<1x16x2x16xf16>, memref<1x16x2x16xf16>, memref<1x16x2x16xf16>, memref<1x16x2x16xf16>) -> ()
// GENERIC: "lowbit.attention"
func.func @lowbit_attention(%arg0: memref<1x16x2x16xf16>, %arg1: memref<1x16x2x16xf16>, %arg2: memref<1x16x2x16xf16>, %arg3: memref<1x16x2x16xf16>) attributes {llvm.emit_c_interface} {
  "lowbit.attention"(%arg0, %arg1, %arg2, %arg3) {Accu_dtype = "float32", K_dtype = "float16", Out_dtype = "float16", Q_dtype = "float16", V_dtype = "float16", batch = 1 : i64, dim = 16 : i64, heads = 2 : i64, is_causal = true, kv_heads = 2 : i64, layout = "nnn", seq_len = 16 : i64} : (memref<1x16x2x16xf16>, memref<1x16x2x16xf16>, memref<1x16x2x16xf16>, memref<1x16x2x16xf16>) -> ()
  return
}
