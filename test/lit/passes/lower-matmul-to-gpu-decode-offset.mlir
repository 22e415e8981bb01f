// RUN: lowbit-opt %s --pass-pipeline='builtin.module(lowbit-lower-matmul-to-gpu)' | FileCheck %s
// lower-matmul-to-gpu-decode-scale-before.mlir's kernel (uint4, g128 scale and 'original' zeros, scaled
// before the mma, 5 blocks an SM) with offset_decode = 1, the default for such 8-row blocks: each code
// is shifted to mantissa bits 6-9 (left by 6 and 2, right by 2 and 6) and one lop3 puts it under the
// exponent of 16 (mask 0x03C003C0 = 62915520, 0x4C004C00 = 1275087872), so a register holds 16 + w with
// no float operation; per group the addend -(16 + z) s is one fma(z, -s, -16 s), and each register
// takes scale and zero in one fma with it. No magic-number subtraction (0x64006400) remains.

// CHECK: gpu.func @lowbit_matmul_{{.*}} kernel attributes {known_block_size = array<i32: 128, 1, 1>, nvvm.minctasm = 5 : i32}
// CHECK: scf.for {{.*}} iter_args
// CHECK: %[[MASK:.*]] = arith.constant 62915520 : i32
// CHECK-NEXT: %[[MAGIC:.*]] = arith.constant 1275087872 : i32
// CHECK-NEXT: %[[X0:[0-9]+]] = arith.shli %{{.*}}, %c6_i32 : i32
// CHECK-NEXT: llvm.inline_asm asm_dialect = att "lop3.b32 $0, $1, $2, $3, 0xea;", "=r,r,r,r" %[[X0]], %[[MASK]], %[[MAGIC]]
// CHECK: arith.shli %{{.*}}, %c2_i32 : i32
// CHECK-NEXT: llvm.inline_asm {{.*}}lop3{{.*}} %[[MASK]], %[[MAGIC]]
// CHECK: arith.shrui %{{.*}}, %c2_i32 : i32
// CHECK-NEXT: llvm.inline_asm {{.*}}lop3{{.*}} %[[MASK]], %[[MAGIC]]
// CHECK: arith.shrui %{{.*}}, %c6_i32 : i32
// CHECK-NEXT: llvm.inline_asm {{.*}}lop3{{.*}} %[[MASK]], %[[MAGIC]]
// CHECK-NOT: arith.subf
// CHECK: %[[M16:.*]] = arith.constant dense<-1.600000e+01> : vector<2xf16>
// CHECK-NEXT: %[[M16S:[0-9]+]] = arith.mulf %[[S:[0-9]+]], %[[M16]] : vector<2xf16>
// CHECK-NEXT: %[[NS:[0-9]+]] = arith.negf %[[S]] : vector<2xf16>
// CHECK-NEXT: %[[ADD:[0-9]+]] = llvm.intr.fma(%{{[0-9]+}}, %[[NS]], %[[M16S]])
// CHECK-COUNT-16: llvm.intr.fma(%{{[0-9]+}}, %[[S]], %[[ADD]]) : (vector<2xf16>, vector<2xf16>, vector<2xf16>) -> vector<2xf16>
// CHECK-NOT: 1677747200
// CHECK-COUNT-8: nvvm.mma.sync {{.*}} -> !llvm.struct<(f32, f32, f32, f32)>
// CHECK: scf.yield

module {
  func.func @lowbit_matmul(%arg0: memref<?x256xf16>, %arg1: memref<256x128xi8>, %arg2: memref<256x2xf16>, %arg3: memref<256x2xf16>, %arg4: memref<?x256xf16>) attributes {llvm.emit_c_interface} {
    "lowbit.matmul"(%arg0, %arg1, %arg2, %arg3, %arg4) {A_dtype = "float16", K = 256 : i64, M = [1], N = 256 : i64, W_dtype = "uint4", accum_dtype = "float16", group_size = 128 : i64, layout = "nt", lowbit.schedule = {a_smem = 1 : i64, block_m = 8 : i64, stages = 3 : i64, w_prefetch = 1 : i64, warp_n_tiles = 2 : i64, warps_k = 4 : i64, scale_after = 0 : i64, min_blocks = 5 : i64, offset_decode = 1 : i64}, operandSegmentSizes = array<i32: 1, 1, 1, 1, 0, 1>, out_dtype = "float16", with_bias = false, with_scaling = true, with_zeros = true, zeros_mode = "original"} : (memref<?x256xf16>, memref<256x128xi8>, memref<256x2xf16>, memref<256x2xf16>, memref<?x256xf16>) -> ()
    return
  }
}
