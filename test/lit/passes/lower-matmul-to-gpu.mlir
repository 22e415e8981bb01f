// RUN: lowbit-opt %s --pass-pipeline='builtin.module(lowbit-lower-matmul-to-gpu)' | FileCheck %s
// A uint4 A_FP16 matmul (group 128, scale and zeros) with the decode schedule of `lowbit compile
// --bucket 16`: the op becomes a launch of a tensor-core kernel in gpu.module @lowbit_kernels.

// CHECK: module attributes {gpu.container_module}
// CHECK: func.func @lowbit_matmul(
// CHECK-NOT: lowbit.matmul
// CHECK: call @lowbit_matmul_launch_
// CHECK: func.func private @lowbit_matmul_launch_
// CHECK: memref.extract_aligned_pointer_as_index
// CHECK: gpu.launch_func @lowbit_kernels::@[[KERNEL:lowbit_matmul_[0-9a-f]+]] blocks in
// CHECK: gpu.module @lowbit_kernels
// CHECK: gpu.func @[[KERNEL]](%{{.*}}: !llvm.ptr<1>, %{{.*}}: !llvm.ptr<1>, %{{.*}}: !llvm.ptr<1>, %{{.*}}: !llvm.ptr<1>, %{{.*}}: !llvm.ptr<1>, %{{.*}}: i32) kernel
// weights: evict-first streaming loads, decoded with lop3 and the 0x6400 magic number
// CHECK: createpolicy.fractional.L2::evict_first
// CHECK: ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32
// A: cp.async into shared memory, then ldmatrix
// CHECK: nvvm.cp.async.shared.global {{.*}}, 16, cache = {{ *}}cg
// CHECK: nvvm.cp.async.wait.group
// CHECK: lop3.b32 $0, $1, $2, $3, 0xea
// CHECK: nvvm.ldmatrix {{.*}}num = 4
// CHECK: nvvm.mma.sync {{.*}}shape = #nvvm.shape<m = 16, n = 8, k = 16>{{.*}} -> !llvm.struct<(f32, f32, f32, f32)>
// the 4 warps split K and reduce through shared memory before the epilogue
// CHECK: nvvm.barrier0
// CHECK: arith.truncf {{.*}} : f32 to f16

module {
  func.func @lowbit_matmul(%arg0: memref<?x256xf16>, %arg1: memref<256x128xi8>, %arg2: memref<256x2xf16>, %arg3: memref<256x2xf16>, %arg4: memref<?x256xf16>) attributes {llvm.emit_c_interface} {
    "lowbit.matmul"(%arg0, %arg1, %arg2, %arg3, %arg4) {A_dtype = "float16", K = 256 : i64, M = [1, 16], N = 256 : i64, W_dtype = "uint4", accum_dtype = "float32", group_size = 128 : i64, layout = "nt", lowbit.schedule = {a_smem = 1 : i64, block_m = 16 : i64, stages = 2 : i64, w_prefetch = 2 : i64, warp_n_tiles = 4 : i64, warps_k = 4 : i64}, operandSegmentSizes = array<i32: 1, 1, 1, 1, 0, 1>, out_dtype = "float16", with_bias = false, with_scaling = true, with_zeros = true, zeros_mode = "original"} : (memref<?x256xf16>, memref<256x128xi8>, memref<256x2xf16>, memref<256x2xf16>, memref<?x256xf16>) -> ()
    return
  }
}
