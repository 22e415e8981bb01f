// RUN: lowbit-opt %s --pass-pipeline='builtin.module(lowbit-lower-matmul-to-gpu)' | FileCheck %s
// An int2 A_INT8 matmul split over 3 blocks of K: the last block sums the int32 partials in split order,
// split 0's loaded alone, then splits 1 and 2 each loaded and added in one asm statement (a running sum
// a value), and stores int32.

// CHECK: gpu.func @[[KERNEL:lowbit_matmul_[0-9a-f]+]]({{.*}}) kernel
// CHECK: llvm.atomicrmw add {{.*}} monotonic
// CHECK: %[[P0:.*]] = llvm.inline_asm has_side_effects asm_dialect = att "ld.global.cg.b32 $0, [$1];", "=r,l"
// CHECK: %[[P1:.*]] = llvm.inline_asm has_side_effects asm_dialect = att "{ .reg .b32 t; ld.global.cg.b32 t, [$2]; add.s32 $0, $1, t; }", "=r,r,l" %[[P0]], %{{.*}} : (i32, !llvm.ptr<1>) -> i32
// CHECK: llvm.inline_asm has_side_effects asm_dialect = att "{ .reg .b32 t; ld.global.cg.b32 t, [$2]; add.s32 $0, $1, t; }", "=r,r,l" %[[P1]], %{{.*}} : (i32, !llvm.ptr<1>) -> i32
// CHECK-NOT: add.rn.f32
// CHECK: llvm.store {{.*}} : i32, !llvm.ptr<1>

module {
  func.func @lowbit_matmul(%arg0: memref<1x512xi8>, %arg1: memref<256x128xi8>, %arg2: memref<1x256xi32>) attributes {llvm.emit_c_interface} {
    "lowbit.matmul"(%arg0, %arg1, %arg2) {A_dtype = "int8", K = 512 : i64, M = 1 : i64, N = 256 : i64, W_dtype = "int2", accum_dtype = "int32", group_size = -1 : i64, layout = "nt", lowbit.schedule = {a_smem = 1 : i64, block_m = 8 : i64, k_unroll = 1 : i64, min_blocks = 0 : i64, offset_decode = 0 : i64, scale_after = 1 : i64, split_k = 3 : i64, stages = 3 : i64, w_prefetch = 2 : i64, w_smem = 0 : i64, warp_n_tiles = 2 : i64, warpgroups = 1 : i64, warps_k = 4 : i64, wgmma = 0 : i64}, operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 1>, out_dtype = "int32", with_bias = false, with_scaling = false, with_zeros = false, zeros_mode = "original"} : (memref<1x512xi8>, memref<256x128xi8>, memref<1x256xi32>) -> ()
    return
  }
}
