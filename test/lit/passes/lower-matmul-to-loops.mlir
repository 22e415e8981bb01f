// RUN: lowbit-opt %s --split-input-file --pass-pipeline='builtin.module(lowbit-lower-matmul-to-loops)' | FileCheck %s --implicit-check-not=lowbit.matmul

// Inputs are the frontend's IR (lowbit.frontend.matmul_module). The pass replaces each lowbit.matmul by a
// call of a generated loop nest: per column n it decodes the weight row (stored in the kernel's permuted,
// LSB-first packed layout, its 64-byte superblock chunks tiled over 16 rows) into a scratch buffer, then
// takes a dot product with each row of A.

// uint4, group 128, scale and 'original' zeros: (w - zeros[n, g]) * scale[n, g].
// CHECK-LABEL: func.func @uint4_g128_zeros(
// CHECK-NEXT:    call @[[IMPL:lowbit_matmul_loops_[0-9a-f]+]](%arg0, %arg1, %arg2, %arg3, %arg4)
// CHECK-NEXT:    return
// CHECK:       func.func private @[[IMPL]](%[[A:[a-z0-9_]+]]: memref<1x256xf16>, %[[W:[a-z0-9_]+]]: memref<64x128xi8>, %[[S:[a-z0-9_]+]]: memref<64x2xf16>, %[[Z:[a-z0-9_]+]]: memref<64x2xf16>, %[[O:[a-z0-9_]+]]: memref<1x64xf16>)
// CHECK:         %[[ROW:[a-z0-9_]+]] = memref.alloca() : memref<256xf16>
// CHECK:         scf.for %[[N:[a-z0-9_]+]] = %{{.*}} to %{{.*}} step
// CHECK:           scf.for %[[K:[a-z0-9_]+]] = %{{.*}} to %{{.*}} step
// CHECK:             vector.extract %{{.*}}[%{{.*}}] : index from vector<128xindex>
// the chunk of (n, superblock s) in the tile of rows 16 (n / 16) .. : 16 * 2 * (n / 16) + 16 s + n % 16
// CHECK:             arith.divui %[[N]], %[[SIXTEEN:[a-z0-9_]+]] : index
// CHECK:             arith.remui %[[N]], %[[SIXTEEN]] : index
// CHECK:             %[[ROWW:[a-z0-9_]+]] = arith.divui %{{.*}}, %{{.*}} : index
// CHECK:             %[[BYTE:[a-z0-9_]+]] = memref.load %[[W]][%[[ROWW]], %{{.*}}] : memref<64x128xi8>
// CHECK:             %[[SHIFTED:[a-z0-9_]+]] = arith.shrui %[[BYTE]], %{{.*}} : i8
// CHECK:             %[[MASK:[a-z0-9_]+]] = arith.constant 15 : i8
// CHECK:             %[[CODE:[a-z0-9_]+]] = arith.andi %[[SHIFTED]], %[[MASK]] : i8
// CHECK:             %[[WF:[a-z0-9_]+]] = arith.uitofp %[[CODE]] : i8 to f16
// CHECK:             %[[G:[a-z0-9_]+]] = arith.divui %[[K]], %{{.*}} : index
// CHECK:             %[[SCALE:[a-z0-9_]+]] = memref.load %[[S]][%[[N]], %[[G]]] : memref<64x2xf16>
// CHECK:             %[[ZERO:[a-z0-9_]+]] = memref.load %[[Z]][%[[N]], %[[G]]] : memref<64x2xf16>
// CHECK:             %[[CENTRED:[a-z0-9_]+]] = arith.subf %[[WF]], %[[ZERO]] : f16
// CHECK:             %[[DEQ:[a-z0-9_]+]] = arith.mulf %[[CENTRED]], %[[SCALE]] : f16
// CHECK:             memref.store %[[DEQ]], %[[ROW]][%[[K]]] : memref<256xf16>
// CHECK:           scf.for %[[I:[a-z0-9_]+]] = %{{.*}} to %{{.*}} step
// CHECK:             scf.for %[[KK:[a-z0-9_]+]] = %{{.*}} to %{{.*}} step %{{.*}} iter_args(%{{.*}} = %{{.*}}) -> (f16)
// CHECK:               memref.load %[[A]][%[[I]], %[[KK]]] : memref<1x256xf16>
// CHECK:               memref.load %[[ROW]][%[[KK]]] : memref<256xf16>
// CHECK:               arith.mulf
// CHECK:               arith.addf
// CHECK:               scf.yield
// CHECK:             memref.store %{{.*}}, %[[O]][%[[I]], %[[N]]] : memref<1x64xf16>
func.func @uint4_g128_zeros(%arg0: memref<1x256xf16>, %arg1: memref<64x128xi8>, %arg2: memref<64x2xf16>, %arg3: memref<64x2xf16>, %arg4: memref<1x64xf16>) attributes {llvm.emit_c_interface} {
  "lowbit.matmul"(%arg0, %arg1, %arg2, %arg3, %arg4) {A_dtype = "float16", K = 256 : i64, M = 1 : i64, N = 64 : i64, W_dtype = "uint4", accum_dtype = "float16", group_size = 128 : i64, layout = "nt", operandSegmentSizes = array<i32: 1, 1, 1, 1, 0, 1>, out_dtype = "float16", with_bias = false, with_scaling = true, with_zeros = true, zeros_mode = "original"} : (memref<1x256xf16>, memref<64x128xi8>, memref<64x2xf16>, memref<64x2xf16>, memref<1x64xf16>) -> ()
  return
}

// -----

// nf4 with M buckets (dynamic rows): the code indexes the NF4 table (rounded to f16), then scales.
// CHECK-LABEL: func.func @nf4_buckets(
// CHECK-NEXT:    call @[[IMPL:lowbit_matmul_loops_[0-9a-f]+]](%arg0, %arg1, %arg2, %arg3)
// CHECK:       func.func private @[[IMPL]](%[[A:[a-z0-9_]+]]: memref<?x128xf16>, %[[W:[a-z0-9_]+]]: memref<32x64xi8>, %[[S:[a-z0-9_]+]]: memref<32x1xf16>, %[[O:[a-z0-9_]+]]: memref<?x32xf16>)
// CHECK:         %[[M:[a-z0-9_]+]] = memref.dim %[[A]], %{{.*}} : memref<?x128xf16>
// CHECK:         scf.for %[[N:[a-z0-9_]+]] = %{{.*}} to %{{.*}} step
// CHECK:           scf.for %[[K:[a-z0-9_]+]] = %{{.*}} to %{{.*}} step
// CHECK:             arith.shrui %{{.*}}, %{{.*}} : i8
// CHECK:             %[[CODE:[a-z0-9_]+]] = arith.andi %{{.*}}, %{{.*}} : i8
// CHECK:             %[[TABLE:[a-z0-9_]+]] = arith.constant dense<[-1.000000e+00, -6.962890e-01, -5.249020e-01, -3.950200e-01, -2.844240e-01, -1.848140e-01, -9.106440e-02, 0.000000e+00, 7.958980e-02, 1.608890e-01, 2.460940e-01, 3.378910e-01, 4.406740e-01, 5.625000e-01, 7.231440e-01, 1.000000e+00]> : vector<16xf16>
// CHECK:             %[[IDX:[a-z0-9_]+]] = arith.index_castui %[[CODE]] : i8 to index
// CHECK:             %[[WF:[a-z0-9_]+]] = vector.extract %[[TABLE]][%[[IDX]]] : f16 from vector<16xf16>
// CHECK:             %[[SCALE:[a-z0-9_]+]] = memref.load %[[S]][%[[N]], %{{.*}}] : memref<32x1xf16>
// CHECK:             arith.mulf %[[WF]], %[[SCALE]] : f16
// CHECK:           scf.for %[[I:[a-z0-9_]+]] = %{{.*}} to %[[M]] step
// CHECK:             memref.store %{{.*}}, %[[O]][%[[I]], %[[N]]] : memref<?x32xf16>
func.func @nf4_buckets(%arg0: memref<?x128xf16>, %arg1: memref<32x64xi8>, %arg2: memref<32x1xf16>, %arg3: memref<?x32xf16>) attributes {llvm.emit_c_interface} {
  "lowbit.matmul"(%arg0, %arg1, %arg2, %arg3) {A_dtype = "float16", K = 128 : i64, M = [1, 16], N = 32 : i64, W_dtype = "nf4", accum_dtype = "float16", group_size = -1 : i64, layout = "nt", operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 1>, out_dtype = "float16", with_bias = false, with_scaling = true, with_zeros = false, zeros_mode = "original"} : (memref<?x128xf16>, memref<32x64xi8>, memref<32x1xf16>, memref<?x32xf16>) -> ()
  return
}

// -----

// int8 A, int2 W, int32 accumulation and bias: the 2-bit code is sign-extended (shli/shrsi) to i32.
// CHECK-LABEL: func.func @int8a_int2_bias(
// CHECK-NEXT:    call @[[IMPL:lowbit_matmul_loops_[0-9a-f]+]](%arg0, %arg1, %arg2, %arg3)
// CHECK:       func.func private @[[IMPL]](%[[A:[a-z0-9_]+]]: memref<4x128xi8>, %[[W:[a-z0-9_]+]]: memref<32x64xi8>, %[[B:[a-z0-9_]+]]: memref<32xi32>, %[[O:[a-z0-9_]+]]: memref<4x32xi32>)
// CHECK:         memref.alloca() : memref<128xi32>
// CHECK:         scf.for %[[N:[a-z0-9_]+]] = %{{.*}} to %{{.*}} step
// CHECK:             arith.shrui %{{.*}}, %{{.*}} : i8
// CHECK:             %[[MASK:[a-z0-9_]+]] = arith.constant 3 : i8
// CHECK:             %[[CODE:[a-z0-9_]+]] = arith.andi %{{.*}}, %[[MASK]] : i8
// CHECK:             %[[UP:[a-z0-9_]+]] = arith.shli %[[CODE]], %[[SH:[a-z0-9_]+]] : i8
// CHECK:             %[[SEXT:[a-z0-9_]+]] = arith.shrsi %[[UP]], %[[SH]] : i8
// CHECK:             arith.extsi %[[SEXT]] : i8 to i32
// CHECK:           scf.for %[[I:[a-z0-9_]+]] = %{{.*}} to %{{.*}} step
// CHECK:             %[[DOT:[a-z0-9_]+]] = scf.for {{.*}} -> (i32)
// CHECK:               arith.extsi %{{.*}} : i8 to i32
// CHECK:               arith.muli %{{.*}}, %{{.*}} : i32
// CHECK:               arith.addi %{{.*}}, %{{.*}} : i32
// CHECK:             %[[BIAS:[a-z0-9_]+]] = memref.load %[[B]][%[[N]]] : memref<32xi32>
// CHECK:             %[[SUM:[a-z0-9_]+]] = arith.addi %[[DOT]], %[[BIAS]] : i32
// CHECK:             memref.store %[[SUM]], %[[O]][%[[I]], %[[N]]] : memref<4x32xi32>
func.func @int8a_int2_bias(%arg0: memref<4x128xi8>, %arg1: memref<32x64xi8>, %arg2: memref<32xi32>, %arg3: memref<4x32xi32>) attributes {llvm.emit_c_interface} {
  "lowbit.matmul"(%arg0, %arg1, %arg2, %arg3) {A_dtype = "int8", K = 128 : i64, M = 4 : i64, N = 32 : i64, W_dtype = "int2", accum_dtype = "int32", group_size = -1 : i64, layout = "nt", operandSegmentSizes = array<i32: 1, 1, 0, 0, 1, 1>, out_dtype = "int32", with_bias = true, with_scaling = false, with_zeros = false, zeros_mode = "original"} : (memref<4x128xi8>, memref<32x64xi8>, memref<32xi32>, memref<4x32xi32>) -> ()
  return
}
