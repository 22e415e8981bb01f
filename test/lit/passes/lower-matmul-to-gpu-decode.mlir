// RUN: lowbit-opt %s --pass-pipeline='builtin.module(lowbit-lower-matmul-to-gpu)' | FileCheck %s
// The decode kernel (block_m = 8) of a uint4 matmul with group-128 scale and zeros, f16 accumulation
// asked for. Its mmas are swapped: n8 weight tiles 0 and 1 form the A operand, the 8 rows of
// activations the B operand. One main-loop iteration (w_prefetch = 1) is one superblock of 128 k, that
// is 8 mma steps in one group:
// - one ldmatrix.x4 reads two steps of activations: 4 a superblock;
// - the decoded codes (no zero subtracted, no scale) go into 8 mmas that sum in f32 from zero, and 8
//   mmas with an all-ones A operand sum the activations;
// - the group's scale and zero fold in after: acc += s * sum(a q) - z s * sum(a), 2 fmas for each of
//   the 4 accumulators.

// CHECK: gpu.func @lowbit_matmul_
// CHECK: %[[ZERO:.*]] = arith.constant 0.000000e+00 : f32
// CHECK: scf.for {{.*}} iter_args
// CHECK-NOT: arith.mulf {{.*}} : vector<2xf16>
// CHECK-COUNT-4: nvvm.ldmatrix {{.*}}num = 4
// CHECK-NOT: nvvm.ldmatrix
// CHECK: %[[ONE:.*]] = arith.constant dense<1.000000e+00> : vector<2xf16>
// CHECK: nvvm.mma.sync A[%{{[0-9]+}}, %{{[0-9]+}}, %{{[0-9]+}}, %{{[0-9]+}}] B[%{{.*}}] C[%[[ZERO]], %[[ZERO]], %[[ZERO]], %[[ZERO]]] {{.*}}shape = #nvvm.shape<m = 16, n = 8, k = 16>{{.*}} -> !llvm.struct<(f32, f32, f32, f32)>
// CHECK-COUNT-7: nvvm.mma.sync A[%{{[0-9]+}}, %{{[0-9]+}}, %{{[0-9]+}}, %{{[0-9]+}}] B[%{{.*}}] C[%{{[0-9]+}},
// CHECK: nvvm.mma.sync A[%[[ONE]], %[[ONE]], %[[ONE]], %[[ONE]]] B[%{{.*}}] C[%[[ZERO]], %[[ZERO]], %[[ZERO]], %[[ZERO]]]
// CHECK-COUNT-7: nvvm.mma.sync A[%[[ONE]], %[[ONE]], %[[ONE]], %[[ONE]]] B[%{{.*}}] C[%{{[0-9]+}},
// CHECK-NOT: nvvm.mma.sync
// CHECK-COUNT-8: llvm.intr.fma({{.*}}) : (f32, f32, f32) -> f32
// CHECK-NOT: llvm.intr.fma
// CHECK: scf.yield

module {
  func.func @lowbit_matmul(%arg0: memref<?x256xf16>, %arg1: memref<256x128xi8>, %arg2: memref<256x2xf16>, %arg3: memref<256x2xf16>, %arg4: memref<?x256xf16>) attributes {llvm.emit_c_interface} {
    "lowbit.matmul"(%arg0, %arg1, %arg2, %arg3, %arg4) {A_dtype = "float16", K = 256 : i64, M = [1], N = 256 : i64, W_dtype = "uint4", accum_dtype = "float16", group_size = 128 : i64, layout = "nt", lowbit.schedule = {a_smem = 1 : i64, block_m = 8 : i64, stages = 3 : i64, w_prefetch = 1 : i64, warp_n_tiles = 2 : i64, warps_k = 4 : i64}, operandSegmentSizes = array<i32: 1, 1, 1, 1, 0, 1>, out_dtype = "float16", with_bias = false, with_scaling = true, with_zeros = true, zeros_mode = "original"} : (memref<?x256xf16>, memref<256x128xi8>, memref<256x2xf16>, memref<256x2xf16>, memref<?x256xf16>) -> ()
    return
  }
}
