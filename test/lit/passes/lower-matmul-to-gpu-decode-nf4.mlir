// RUN: lowbit-opt %s --pass-pipeline='builtin.module(lowbit-lower-matmul-to-gpu)' | FileCheck %s
// nf4 (m=1, no scales): the 16-entry float16 table lives in 8 registers, the low bytes of entries 0-7
// (0x52339200 = 1379111424, 0x00D4EA8D = 13953677) and 8-15, then the high bytes; each word is xored
// once, before the loop, with tid & (m >> 31), zero for every launch, so that ptxas keeps it in a
// register. Per word: the codes' low 3 bits (0x77777777 = 2004318071) gathered into two selectors
// (prmt 0x0020: codes 0, 1, 4, 5; 0x0031: 2, 3, 6, 7), each code's bit 3 spread into a byte mask (prmt
// sign mode 0xeac8 / 0xfbd9 from the word and the word shifted left by 4), 4 lookups with a register
// selector, the half picked by lop3 0xd8 (c ? b : a), low and high bytes interleaved (0x6240, 0x7351).
// No shared-memory table.

// CHECK-NOT: _lut
// CHECK: gpu.func @lowbit_matmul_{{.*}} kernel
// CHECK: %[[HIGHBIT:[0-9]+]] = arith.shrui %arg3, %c31_i32 : i32
// CHECK-NEXT: %[[ZERO:[0-9]+]] = arith.andi %{{[0-9]+}}, %[[HIGHBIT]] : i32
// CHECK: %[[LA0:[0-9]+]] = arith.xori %c1379111424_i32, %[[ZERO]] : i32
// CHECK-NEXT: %[[LA1:[0-9]+]] = arith.xori %c13953677_i32, %[[ZERO]] : i32
// CHECK-NEXT: %[[LB0:[0-9]+]] = arith.xori %{{.*}}, %[[ZERO]] : i32
// CHECK-NEXT: %[[LB1:[0-9]+]] = arith.xori %{{.*}}, %[[ZERO]] : i32
// CHECK-COUNT-4: arith.xori %{{.*}}, %[[ZERO]] : i32
// CHECK: scf.for
// CHECK: %[[LOW3:[0-9]+]] = arith.andi %[[WORD:arg[0-9]+]], %c2004318071_i32 : i32
// CHECK-NEXT: %[[UP4:[0-9]+]] = arith.shli %[[WORD]], %c4_i32 : i32
// CHECK-NEXT: %[[SEL:[0-9]+]] = llvm.inline_asm {{.*}}"prmt.b32 $0, $1, $2, 0x0020;", "=r,r,r" %[[LOW3]], %[[LOW3]]
// CHECK-NEXT: %[[MASK:[0-9]+]] = llvm.inline_asm {{.*}}"prmt.b32 $0, $1, $2, 0xeac8;", "=r,r,r" %[[UP4]], %[[WORD]]
// CHECK-NEXT: %[[A:[0-9]+]] = llvm.inline_asm {{.*}}"prmt.b32 $0, $1, $2, $3;", "=r,r,r,r" %[[LA0]], %[[LA1]], %[[SEL]]
// CHECK-NEXT: %[[B:[0-9]+]] = llvm.inline_asm {{.*}}"prmt.b32 $0, $1, $2, $3;", "=r,r,r,r" %[[LB0]], %[[LB1]], %[[SEL]]
// CHECK-NEXT: %[[LOW:[0-9]+]] = llvm.inline_asm {{.*}}"lop3.b32 $0, $1, $2, $3, 0xd8;", "=r,r,r,r" %[[A]], %[[B]], %[[MASK]]
// CHECK-NEXT: llvm.inline_asm {{.*}}"prmt.b32 $0, $1, $2, $3;"{{.*}}%[[SEL]]
// CHECK-NEXT: llvm.inline_asm {{.*}}"prmt.b32 $0, $1, $2, $3;"{{.*}}%[[SEL]]
// CHECK-NEXT: %[[HIGH:[0-9]+]] = llvm.inline_asm {{.*}}"lop3.b32 $0, $1, $2, $3, 0xd8;"{{.*}}%[[MASK]]
// CHECK-NEXT: %[[R0:[0-9]+]] = llvm.inline_asm {{.*}}"prmt.b32 $0, $1, $2, 0x6240;", "=r,r,r" %[[LOW]], %[[HIGH]]
// CHECK-NEXT: llvm.bitcast %[[R0]] : i32 to vector<2xf16>
// CHECK-NEXT: %[[R1:[0-9]+]] = llvm.inline_asm {{.*}}"prmt.b32 $0, $1, $2, 0x7351;", "=r,r,r" %[[LOW]], %[[HIGH]]
// CHECK: "prmt.b32 $0, $1, $2, 0x0031;", "=r,r,r" %[[LOW3]], %[[LOW3]]
// CHECK-NEXT: "prmt.b32 $0, $1, $2, 0xfbd9;", "=r,r,r" %[[UP4]], %[[WORD]]
// CHECK-NOT: llvm.load {{.*}} : !llvm.ptr<3> -> f16
// CHECK: nvvm.mma.sync
// CHECK: scf.yield

module {
  func.func @lowbit_matmul(%arg0: memref<?x256xf16>, %arg1: memref<256x128xi8>, %arg2: memref<?x256xf16>) attributes {llvm.emit_c_interface} {
    "lowbit.matmul"(%arg0, %arg1, %arg2) {A_dtype = "float16", K = 256 : i64, M = [1], N = 256 : i64, W_dtype = "nf4", accum_dtype = "float16", group_size = -1 : i64, layout = "nt", lowbit.schedule = {a_smem = 1 : i64, block_m = 8 : i64, stages = 3 : i64, w_prefetch = 1 : i64, warp_n_tiles = 2 : i64, warps_k = 4 : i64, scale_after = 0 : i64}, operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 1>, out_dtype = "float16", with_bias = false, with_scaling = false, with_zeros = false, zeros_mode = "original"} : (memref<?x256xf16>, memref<256x128xi8>, memref<?x256xf16>) -> ()
    return
  }
}
