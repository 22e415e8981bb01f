// RUN: lowbit-opt %s --pass-pipeline='builtin.module(lowbit-lower-matmul-to-gpu)' | FileCheck %s
// An int4 A_FP16 matmul with a K-split schedule (split_k = 2): the launch allocates a workspace and
// zeroed tile locks and runs a (N tiles, row blocks, 2) grid; every block writes its partial sums,
// counts itself on the tile's lock, and the last block adds the partials in split order (a running sum
// a value, never every partial at once), resets the lock and stores.

// CHECK: func.func private @lowbit_matmul_launch_
// CHECK: %[[WS:.*]] = gpu.alloc {{.*}} : memref<?xi32>
// CHECK: %[[LOCKS:.*]] = gpu.alloc {{.*}} : memref<?xi32>
// CHECK: gpu.memset %[[LOCKS]], %{{.*}} : memref<?xi32>, i32
// CHECK: %[[TWO:.*]] = arith.constant 2 : index
// CHECK: gpu.launch_func @lowbit_kernels::@[[KERNEL:lowbit_matmul_[0-9a-f]+]] blocks in (%{{.*}}, %{{.*}}, %[[TWO]])
// CHECK: gpu.dealloc %[[WS]]
// CHECK: gpu.dealloc %[[LOCKS]]
// A, W, scale, out, then the workspace and the locks, then m
// CHECK: gpu.func @[[KERNEL]](%{{.*}}: !llvm.ptr<1>, %{{.*}}: !llvm.ptr<1>, %{{.*}}: !llvm.ptr<1>, %{{.*}}: !llvm.ptr<1>, %{{.*}}: !llvm.ptr<1>, %{{.*}}: !llvm.ptr<1>, %{{.*}}: i32) kernel
// CHECK: gpu.block_id z
// CHECK: nvvm.mma.sync
// CHECK: scf.yield
// CHECK-NEXT: }
// CHECK-NEXT: nvvm.cp.async.wait.group 0
// CHECK: fence.acq_rel.gpu
// CHECK: llvm.atomicrmw add {{.*}} monotonic
// the last block: split 0's partial, then each later split's loaded and added in one asm statement
// CHECK: ld.global.cg.b32
// CHECK: "{ .reg .f32 t; ld.global.cg.f32 t, [$2]; add.rn.f32 $0, $1, t; }", "=f,f,l" {{.*}} : (f32, !llvm.ptr<1>) -> f32
// CHECK: llvm.store %{{.*}}, %{{.*}} : i32, !llvm.ptr<1>
// CHECK: arith.truncf {{.*}} : f32 to f16

module {
  func.func @lowbit_matmul(%arg0: memref<?x256xf16>, %arg1: memref<256x128xi8>, %arg2: memref<256x2xf16>, %arg3: memref<?x256xf16>) attributes {llvm.emit_c_interface} {
    "lowbit.matmul"(%arg0, %arg1, %arg2, %arg3) {A_dtype = "float16", K = 256 : i64, M = [1], N = 256 : i64, W_dtype = "int4", accum_dtype = "float16", group_size = 128 : i64, layout = "nt", lowbit.schedule = {block_m = 8 : i64, stages = 3 : i64, w_prefetch = 1 : i64, warp_n_tiles = 2 : i64, warps_k = 1 : i64, split_k = 2 : i64}, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 1>, out_dtype = "float16", with_bias = false, with_scaling = true, with_zeros = false, zeros_mode = "original"} : (memref<?x256xf16>, memref<256x128xi8>, memref<256x2xf16>, memref<?x256xf16>) -> ()
    return
  }
}
