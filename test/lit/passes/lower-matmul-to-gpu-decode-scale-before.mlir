// RUN: lowbit-opt %s --pass-pipeline='builtin.module(lowbit-lower-matmul-to-gpu)' | FileCheck %s
// The decode kernel of lower-matmul-to-gpu-decode.mlir (uint4, g128 scale and 'original' zeros) with
// the schedule's scale_after = 0 and min_blocks = 5 (the default for such 8-row blocks, which also sets
// offset_decode = 1: see lower-matmul-to-gpu-decode-offset.mlir): the kernel asks
// for 5 blocks an SM (.minnctapersm), and each n8 tile's decoded weights take their group's scale and
// zero before the mma as one fma per register, w s + (-z s), with -z s computed once per group; then
// 8 plain mmas accumulate in f32, with no all-ones mmas for the activations' sums and no f32 fold.

// CHECK: gpu.func @lowbit_matmul_{{.*}} kernel attributes {known_block_size = array<i32: 128, 1, 1>, nvvm.minctasm = 5 : i32}
// CHECK: scf.for {{.*}} iter_args
// CHECK: arith.mulf {{.*}} : vector<2xf16>
// CHECK-NEXT: %[[NZ0:[0-9]+]] = arith.negf {{.*}} : vector<2xf16>
// CHECK-COUNT-16: llvm.intr.fma(%{{[0-9]+}}, %{{[0-9]+}}, %[[NZ0]]) : (vector<2xf16>, vector<2xf16>, vector<2xf16>) -> vector<2xf16>
// CHECK: arith.mulf {{.*}} : vector<2xf16>
// CHECK-NEXT: %[[NZ1:[0-9]+]] = arith.negf {{.*}} : vector<2xf16>
// CHECK-COUNT-16: llvm.intr.fma(%{{[0-9]+}}, %{{[0-9]+}}, %[[NZ1]]) : (vector<2xf16>, vector<2xf16>, vector<2xf16>) -> vector<2xf16>
// CHECK-NOT: dense<1.000000e+00> : vector<2xf16>
// CHECK-COUNT-8: nvvm.mma.sync {{.*}} -> !llvm.struct<(f32, f32, f32, f32)>
// CHECK-NOT: nvvm.mma.sync
// CHECK-NOT: (f32, f32, f32) -> f32
// CHECK: scf.yield

module {
  func.func @lowbit_matmul(%arg0: memref<?x256xf16>, %arg1: memref<256x128xi8>, %arg2: memref<256x2xf16>, %arg3: memref<256x2xf16>, %arg4: memref<?x256xf16>) attributes {llvm.emit_c_interface} {
    "lowbit.matmul"(%arg0, %arg1, %arg2, %arg3, %arg4) {A_dtype = "float16", K = 256 : i64, M = [1], N = 256 : i64, W_dtype = "uint4", accum_dtype = "float16", group_size = 128 : i64, layout = "nt", lowbit.schedule = {a_smem = 1 : i64, block_m = 8 : i64, stages = 3 : i64, w_prefetch = 1 : i64, warp_n_tiles = 2 : i64, warps_k = 4 : i64, scale_after = 0 : i64, min_blocks = 5 : i64}, operandSegmentSizes = array<i32: 1, 1, 1, 1, 0, 1>, out_dtype = "float16", with_bias = false, with_scaling = true, with_zeros = true, zeros_mode = "original"} : (memref<?x256xf16>, memref<256x128xi8>, memref<256x2xf16>, memref<256x2xf16>, memref<?x256xf16>) -> ()
    return
  }
}
