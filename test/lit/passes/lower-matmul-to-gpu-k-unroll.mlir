// RUN: lowbit-opt %s --pass-pipeline='builtin.module(lowbit-lower-matmul-to-gpu)' | FileCheck %s
// A float16-weight matmul (superblocks of 32 k: two m16n8k16 steps) with k_unroll = 4: each warp
// computes 4 superblocks per iteration of the main loop. block_m = 16 runs swapped mmas (the n8 weight
// tile as the A operand, each 8-row group of activations as B), so one iteration holds 2 row groups x
// 1 n8 tile x 2 steps x 4 superblocks = 16 mma, reading the A stage with ldmatrix at 4 superblock offsets.

// CHECK: gpu.func @lowbit_matmul_
// CHECK: scf.for {{.*}} iter_args
// CHECK-COUNT-16: nvvm.mma.sync
// CHECK-NOT: nvvm.mma.sync
// CHECK: scf.yield

module {
  func.func @lowbit_matmul(%arg0: memref<?x256xf16>, %arg1: memref<64x256xf16>, %arg2: memref<?x64xf16>) attributes {llvm.emit_c_interface} {
    "lowbit.matmul"(%arg0, %arg1, %arg2) {A_dtype = "float16", K = 256 : i64, M = [16], N = 64 : i64, W_dtype = "float16", accum_dtype = "float16", group_size = -1 : i64, layout = "nt", lowbit.schedule = {block_m = 16 : i64, stages = 2 : i64, w_prefetch = 1 : i64, warp_n_tiles = 1 : i64, warps_k = 1 : i64, k_unroll = 4 : i64}, operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 1>, out_dtype = "float16", with_bias = false, with_scaling = false, with_zeros = false, zeros_mode = "original"} : (memref<?x256xf16>, memref<64x256xf16>, memref<?x64xf16>) -> ()
    return
  }
}
