// RUN: lowbit-opt %s --split-input-file --pass-pipeline='builtin.module(lowbit-lower-attention-to-loops)' | FileCheck %s --implicit-check-not=lowbit.attention

// Inputs are the frontend's IR (lowbit.frontend.attention_module). Per (batch, head, query row) the loops
// compute f32 scores scaled by 1/sqrt(dim), their running max, exp(score - max) and its sum, then the
// weighted sum of V divided by that sum.

// Causal, grouped-query (4 query heads share 2 kv heads): keys run only up to the query row (j < i + 1).
// CHECK-LABEL: func.func @causal_gqa(
// CHECK-NEXT:    call @[[IMPL:lowbit_attention_loops_[0-9a-f]+]](%arg0, %arg1, %arg2, %arg3)
// CHECK:       func.func private @[[IMPL]](%[[Q:[a-z0-9_]+]]: memref<1x16x4x32xf16>, %[[K:[a-z0-9_]+]]: memref<1x16x2x32xf16>, %[[V:[a-z0-9_]+]]: memref<1x16x2x32xf16>, %[[O:[a-z0-9_]+]]: memref<1x16x4x32xf16>)
// CHECK:         %[[SCORES:[a-z0-9_]+]] = memref.alloca() : memref<16xf32>
// CHECK:         %[[NEGINF:[a-z0-9_]+]] = arith.constant 0xFF800000 : f32
// CHECK:         scf.for %[[B:[a-z0-9_]+]] =
// CHECK:           scf.for %[[H:[a-z0-9_]+]] =
// CHECK:             %[[KVH:[a-z0-9_]+]] = arith.divui %[[H]], %{{[a-z0-9_]+}} : index
// CHECK:             scf.for %[[I:[a-z0-9_]+]] =
// CHECK:               %[[BOUND:[a-z0-9_]+]] = arith.addi %[[I]], %{{[a-z0-9_]+}} : index
// CHECK:               %[[MAX:[a-z0-9_]+]] = scf.for %[[J:[a-z0-9_]+]] = %{{[a-z0-9_]+}} to %[[BOUND]] step %{{[a-z0-9_]+}} iter_args(%[[RUNMAX:[a-z0-9_]+]] = %[[NEGINF]]) -> (f32)
// CHECK:                 memref.load %[[Q]][%[[B]], %[[I]], %[[H]], %{{[a-z0-9_]+}}] : memref<1x16x4x32xf16>
// CHECK:                 memref.load %[[K]][%[[B]], %[[J]], %[[KVH]], %{{[a-z0-9_]+}}] : memref<1x16x2x32xf16>
// CHECK:                 math.fma
// CHECK:               %[[RSQRT:[a-z0-9_]+]] = arith.constant 0.176776692 : f32
// CHECK:               %[[S:[a-z0-9_]+]] = arith.mulf %{{[a-z0-9_]+}}, %[[RSQRT]] : f32
// CHECK:               memref.store %[[S]], %[[SCORES]][%[[J]]] : memref<16xf32>
// CHECK:               arith.maximumf %[[RUNMAX]], %[[S]] : f32
// CHECK:             %[[SUM:[a-z0-9_]+]] = scf.for %[[J2:[a-z0-9_]+]] = %{{[a-z0-9_]+}} to %[[BOUND]] step
// CHECK:               %[[CENTRED:[a-z0-9_]+]] = arith.subf %{{[a-z0-9_]+}}, %[[MAX]] : f32
// CHECK:               %[[P:[a-z0-9_]+]] = math.exp %[[CENTRED]] : f32
// CHECK:               memref.store %[[P]], %[[SCORES]][%[[J2]]] : memref<16xf32>
// CHECK:               arith.addf %{{[a-z0-9_]+}}, %[[P]] : f32
// CHECK:             scf.for %[[D:[a-z0-9_]+]] =
// CHECK:               %[[ACC:[a-z0-9_]+]] = scf.for %[[J3:[a-z0-9_]+]] = %{{[a-z0-9_]+}} to %[[BOUND]] step
// CHECK:                 memref.load %[[V]][%[[B]], %[[J3]], %[[KVH]], %[[D]]] : memref<1x16x2x32xf16>
// CHECK:                 math.fma
// CHECK:               %[[NORM:[a-z0-9_]+]] = arith.divf %[[ACC]], %[[SUM]] : f32
// CHECK:               %[[OUT:[a-z0-9_]+]] = arith.truncf %[[NORM]] : f32 to f16
// CHECK:               memref.store %[[OUT]], %[[O]][%[[B]], %[[I]], %[[H]], %[[D]]] : memref<1x16x4x32xf16>
func.func @causal_gqa(%arg0: memref<1x16x4x32xf16>, %arg1: memref<1x16x2x32xf16>, %arg2: memref<1x16x2x32xf16>, %arg3: memref<1x16x4x32xf16>) attributes {llvm.emit_c_interface} {
  "lowbit.attention"(%arg0, %arg1, %arg2, %arg3) {Accu_dtype = "float32", K_dtype = "float16", Out_dtype = "float16", Q_dtype = "float16", V_dtype = "float16", batch = 1 : i64, dim = 32 : i64, heads = 4 : i64, is_causal = true, kv_heads = 2 : i64, layout = "nnn", seq_len = 16 : i64} : (memref<1x16x4x32xf16>, memref<1x16x2x32xf16>, memref<1x16x2x32xf16>, memref<1x16x4x32xf16>) -> ()
  return
}

// -----

// Not causal, layout 'ntn' (K is [batch, dim, heads, seq_len]): every key row up to seq_len = 8 is used.
// CHECK-LABEL: func.func @ntn(
// CHECK:       func.func private @lowbit_attention_loops_{{[0-9a-f]+}}(%[[Q:[a-z0-9_]+]]: memref<2x8x2x16xf16>, %[[K:[a-z0-9_]+]]: memref<2x16x2x8xf16>
// CHECK:         %[[SEQ:[a-z0-9_]+]] = arith.constant 8 : index
// CHECK:         %{{[a-z0-9_]+}} = scf.for %[[J:[a-z0-9_]+]] = %{{[a-z0-9_]+}} to %[[SEQ]] step %{{[a-z0-9_]+}} iter_args
// CHECK:           scf.for %[[DD:[a-z0-9_]+]] =
// CHECK:             memref.load %[[K]][%{{[a-z0-9_]+}}, %[[DD]], %{{[a-z0-9_]+}}, %[[J]]] : memref<2x16x2x8xf16>
// CHECK:           arith.constant 2.500000e-01 : f32
// CHECK:         math.exp
// CHECK-NOT:     lowbit.attention
func.func @ntn(%arg0: memref<2x8x2x16xf16>, %arg1: memref<2x16x2x8xf16>, %arg2: memref<2x8x2x16xf16>, %arg3: memref<2x8x2x16xf16>) attributes {llvm.emit_c_interface} {
  "lowbit.attention"(%arg0, %arg1, %arg2, %arg3) {Accu_dtype = "float32", K_dtype = "float16", Out_dtype = "float16", Q_dtype = "float16", V_dtype = "float16", batch = 2 : i64, dim = 16 : i64, heads = 2 : i64, is_causal = false, kv_heads = 2 : i64, layout = "ntn", seq_len = 8 : i64} : (memref<2x8x2x16xf16>, memref<2x16x2x8xf16>, memref<2x8x2x16xf16>, memref<2x8x2x16xf16>) -> ()
  return
}
