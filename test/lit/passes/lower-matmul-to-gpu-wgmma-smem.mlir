// RUN: lowbit-opt %s --pass-pipeline='builtin.module(lowbit-lower-matmul-to-gpu)' | FileCheck %s
// The sm_90a prefill kernel with float16 weights through the shared-memory stages (w_smem) and two
// warpgroups: 256 threads, 256 weight rows a block, two 32-k superblocks an iteration, 4 stages. After
// the wait for its stage (stages - 3 = 1 group left) and the barrier, an iteration refills a stage:
// every thread copies its own 16 bytes of 4 n8 tiles x 2 superblocks (always whole: past the last
// superblock it rereads the last one, against zero-filled A), then 128 rows x 8 chunks of A, 4 a
// thread. It reads its weights back as one 16-byte vector per tile and superblock; no decoding, no
// scaling.

// CHECK: gpu.launch_func {{.*}} threads in (%c256,
// CHECK: gpu.func @lowbit_matmul_{{.*}}known_block_size = array<i32: 256, 1, 1>
// CHECK: scf.for
// CHECK: nvvm.cp.async.wait.group 1
// CHECK: nvvm.barrier0
// CHECK-COUNT-8: nvvm.cp.async.shared.global {{.*}}, 16, cache = {{ *}}cg, %c16_i32
// CHECK-COUNT-4: nvvm.cp.async.shared.global {{.*}}, 16, cache
// CHECK-NEXT: nvvm.cp.async.commit.group
// CHECK-NOT: arith.mulf {{.*}} : vector<2xf16>
// CHECK-COUNT-8: llvm.load {{.*}} {alignment = 16 : i64} : !llvm.ptr<3> -> vector<4xi32>
// CHECK-NOT: arith.mulf {{.*}} : vector<2xf16>
// CHECK: wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16
// CHECK: scf.yield

module {
  func.func @lowbit_matmul(%arg0: memref<?x256xf16>, %arg1: memref<256x256xf16>, %arg2: memref<?x256xf16>) attributes {llvm.emit_c_interface} {
    "lowbit.matmul"(%arg0, %arg1, %arg2) {A_dtype = "float16", K = 256 : i64, M = [512], N = 256 : i64, W_dtype = "float16", accum_dtype = "float32", group_size = -1 : i64, layout = "nt", lowbit.schedule = {block_m = 128 : i64, stages = 4 : i64, w_prefetch = 1 : i64, warp_n_tiles = 4 : i64, wgmma = 1 : i64, warpgroups = 2 : i64, w_smem = 1 : i64, k_unroll = 2 : i64}, operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 1>, out_dtype = "float16", with_bias = false, with_scaling = false, with_zeros = false, zeros_mode = "original"} : (memref<?x256xf16>, memref<256x256xf16>, memref<?x256xf16>) -> ()
    return
  }
}
