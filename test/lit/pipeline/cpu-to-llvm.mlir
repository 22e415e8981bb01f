// The CPU pipeline of lowbit.compiler.pipeline, reproduced with lowbit-opt: the lowbit passes, then
// LOOPS_PIPELINE (inline, canonicalize, cse), then CPU_LLVM_PIPELINE. Keep these strings in sync with
// compiler/pipeline.py (test/python/test_cli.py checks that they are).

// Stage 'loops': the generated loop nests are inlined into the entry functions, nothing lowbit is left.
// RUN: lowbit-opt %s --pass-pipeline='builtin.module(lowbit-lower-matmul-to-loops, lowbit-lower-attention-to-loops, inline, canonicalize, cse)' | FileCheck %s --check-prefix=LOOPS

// Stage 'llvm': one mixed pipeline (lowbit passes and upstream passes in one string) ends in the LLVM dialect.
// RUN: lowbit-opt %s --pass-pipeline='builtin.module(lowbit-lower-matmul-to-loops, lowbit-lower-attention-to-loops, inline, canonicalize, cse, convert-vector-to-scf, convert-scf-to-cf, expand-strided-metadata, lower-affine, convert-vector-to-llvm, convert-math-to-llvm, convert-arith-to-llvm, finalize-memref-to-llvm, convert-func-to-llvm, convert-cf-to-llvm, reconcile-unrealized-casts, canonicalize)' | FileCheck %s

// LOOPS-NOT:   lowbit.
// LOOPS-LABEL: func.func @lowbit_matmul(
// LOOPS-NOT:     call
// LOOPS:         scf.for
// LOOPS:           arith.shrui
// LOOPS:           arith.andi
// LOOPS:           arith.uitofp
// LOOPS:         scf.for
// LOOPS:       return
// LOOPS-LABEL: func.func @lowbit_attention(
// LOOPS-NOT:     call
// LOOPS:         math.exp
// LOOPS-NOT:   lowbit.
// LOOPS-NOT:   func.func private

// CHECK:       module {
// CHECK-NOT:   {{[" ](scf|memref|arith|math|vector|func|cf|lowbit)\.[a-z_]+}}
// CHECK:         llvm.func @lowbit_matmul(%{{.*}}: !llvm.ptr
// CHECK-SAME:      attributes {llvm.emit_c_interface}
// CHECK-NOT:   {{[" ](scf|memref|arith|math|vector|func|cf|lowbit)\.[a-z_]+}}
// CHECK:         llvm.lshr
// CHECK-NOT:   {{[" ](scf|memref|arith|math|vector|func|cf|lowbit)\.[a-z_]+}}
// CHECK:         llvm.func @_mlir_ciface_lowbit_matmul(
// CHECK-NOT:   {{[" ](scf|memref|arith|math|vector|func|cf|lowbit)\.[a-z_]+}}
// CHECK:         llvm.func @lowbit_attention(
// CHECK-NOT:   {{[" ](scf|memref|arith|math|vector|func|cf|lowbit)\.[a-z_]+}}
// CHECK:         llvm.intr.exp
// CHECK-NOT:   {{[" ](scf|memref|arith|math|vector|func|cf|lowbit)\.[a-z_]+}}
// CHECK:         llvm.func @_mlir_ciface_lowbit_attention(
// CHECK-NOT:   {{[" ](scf|memref|arith|math|vector|func|cf|lowbit)\.[a-z_]+}}

// Inputs: lowbit.frontend.matmul_module (uint4, group 128, scale + zeros) and attention_module (causal).
func.func @lowbit_matmul(%arg0: memref<1x256xf16>, %arg1: memref<64x128xi8>, %arg2: memref<64x2xf16>, %arg3: memref<64x2xf16>, %arg4: memref<1x64xf16>) attributes {llvm.emit_c_interface} {
  "lowbit.matmul"(%arg0, %arg1, %arg2, %arg3, %arg4) {A_dtype = "float16", K = 256 : i64, M = 1 : i64, N = 64 : i64, W_dtype = "uint4", accum_dtype = "float16", group_size = 128 : i64, layout = "nt", operandSegmentSizes = array<i32: 1, 1, 1, 1, 0, 1>, out_dtype = "float16", with_bias = false, with_scaling = true, with_zeros = true, zeros_mode = "original"} : (memref<1x256xf16>, memref<64x128xi8>, memref<64x2xf16>, memref<64x2xf16>, memref<1x64xf16>) -> ()
  return
}
func.func @lowbit_attention(%arg0: memref<1x16x4x32xf16>, %arg1: memref<1x16x2x32xf16>, %arg2: memref<1x16x2x32xf16>, %arg3: memref<1x16x4x32xf16>) attributes {llvm.emit_c_interface} {
  "lowbit.attention"(%arg0, %arg1, %arg2, %arg3) {Accu_dtype = "float32", K_dtype = "float16", Out_dtype = "float16", Q_dtype = "float16", V_dtype = "float16", batch = 1 : i64, dim = 32 : i64, heads = 4 : i64, is_causal = true, kv_heads = 2 : i64, layout = "nnn", seq_len = 16 : i64} : (memref<1x16x4x32xf16>, memref<1x16x2x32xf16>, memref<1x16x2x32xf16>, memref<1x16x4x32xf16>) -> ()
  return
}
