// RUN: lowbit-opt %s --pass-pipeline='builtin.module(lowbit-lower-matmul-to-gpu)' | FileCheck %s
// The sm_90a prefill kernel (wgmma = 1) of an int4 matmul with group-128 scales: one warpgroup, 128
// weight rows (two 64-row wgmma tiles) x 128 activation rows, one superblock (128 k, 8 k16 steps) an
// iteration, 3 stages.
// - The prologue copies stages - 2 = 1 stage of A: 128 rows x 256 bytes, 16 cp.async a thread.
// - An iteration waits for its stage (stages - 3 = 0 groups left), makes it visible to the async proxy,
//   syncs, refills the stage two iterations back, then per step: decode and scale in f16, fence, one
//   wgmma m64n128k16 per 64-row tile (A from registers, B by descriptor), commit, keep one group in flight.
// - After the loop: every group done, the output tile through shared memory, 16-byte stores.

// CHECK: gpu.launch_func {{.*}} threads in (%c128, {{.*}} dynamic_shared_memory_size
// CHECK: gpu.func @lowbit_matmul_{{.*}}known_block_size = array<i32: 128, 1, 1>
// CHECK-COUNT-16: nvvm.cp.async.shared.global {{.*}}, 16, cache
// CHECK-NEXT: nvvm.cp.async.commit.group
// CHECK-NOT: nvvm.cp.async.shared.global
// CHECK: scf.for
// CHECK: nvvm.cp.async.wait.group 0
// CHECK-NEXT: "fence.proxy.async.shared::cta;"
// CHECK-NEXT: nvvm.barrier0
// CHECK-COUNT-16: nvvm.cp.async.shared.global {{.*}}, 16, cache
// CHECK-NEXT: nvvm.cp.async.commit.group
// CHECK: arith.mulf {{.*}} : vector<2xf16>
// CHECK: nvvm.wgmma.fence.aligned
// CHECK-NEXT: wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {{.*}}, p, 1, 1, 0;
// CHECK: wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16
// CHECK: nvvm.wgmma.commit.group.sync.aligned
// CHECK-NEXT: nvvm.wgmma.wait.group.sync.aligned 1
// CHECK-COUNT-7: nvvm.wgmma.wait.group.sync.aligned 1
// CHECK-NOT: nvvm.wgmma.fence.aligned
// The wait for the last wgmma group comes first after the loop: with a cp.async wait between them,
// ptxas (CUDA 13.0 and the H100's driver) moved the epilogue's reads of the accumulators above it and
// the kernel read in-flight accumulators (docs/design.md).
// CHECK: scf.yield
// CHECK-NEXT: }
// CHECK-NEXT: nvvm.wgmma.wait.group.sync.aligned 0
// CHECK-NEXT: nvvm.cp.async.wait.group 0
// CHECK-NEXT: nvvm.barrier0
// CHECK-COUNT-128: llvm.store {{.*}} : f16, !llvm.ptr<3>
// CHECK: nvvm.barrier0
// CHECK: llvm.store {{.*}} {alignment = 16 : i64} : vector<4xi32>, !llvm.ptr<1>

module {
  func.func @lowbit_matmul(%arg0: memref<?x256xf16>, %arg1: memref<256x128xi8>, %arg2: memref<256x2xf16>, %arg3: memref<?x256xf16>) attributes {llvm.emit_c_interface} {
    "lowbit.matmul"(%arg0, %arg1, %arg2, %arg3) {A_dtype = "float16", K = 256 : i64, M = [512], N = 256 : i64, W_dtype = "int4", accum_dtype = "float32", group_size = 128 : i64, layout = "nt", lowbit.schedule = {block_m = 128 : i64, stages = 3 : i64, w_prefetch = 1 : i64, warp_n_tiles = 4 : i64, wgmma = 1 : i64}, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 1>, out_dtype = "float16", with_bias = false, with_scaling = true, with_zeros = false, zeros_mode = "original"} : (memref<?x256xf16>, memref<256x128xi8>, memref<256x2xf16>, memref<?x256xf16>) -> ()
    return
  }
}
