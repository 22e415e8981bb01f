// RUN: lowbit-opt %s --split-input-file --pass-pipeline='builtin.module(lowbit-lower-attention-to-gpu)' | FileCheck %s
// RUN: lowbit-opt %s --split-input-file --pass-pipeline='builtin.module(lowbit-lower-attention-to-gpu)' | FileCheck %s --check-prefix=GONE
// The gpu stages of compiler/gpu_pipeline.py down to PTX (gpu-module-to-binary needs no CUDA toolkit).
// RUN: lowbit-opt %s --split-input-file --pass-pipeline='builtin.module(lowbit-lower-attention-to-gpu, nvvm-attach-target{chip=sm_90a features=+ptx80 O=3 module=lowbit_kernels}, inline, canonicalize, cse, gpu.module(convert-scf-to-cf, convert-gpu-to-nvvm, convert-nvvm-to-llvm, canonicalize, cse, reconcile-unrealized-casts), gpu-module-to-binary{format=isa})' | FileCheck %s --check-prefix=PTX

// Inputs are the frontend's IR (lowbit.frontend.attention_module) with the `lowbit.schedule` attribute that
// lowbit.compiler.gpu_pipeline records. The kernel: cp.async Q and the first K/V tile into dynamic shared
// memory, ldmatrix Q into registers, then two loops over K/V tiles (unmasked, then masked) that prefetch
// the next tile, compute S = Q K^T with mma.sync, update the online softmax (quad shuffles, exp2), and
// accumulate P V with mma.sync on ldmatrix.trans fragments of V; the epilogue divides by the row sums.

// GONE-NOT: lowbit.attention

// Causal, grouped-query (4 query heads on 2 kv heads), seq_len 100 (not a tile multiple), dim 64;
// block_q 64 on 4 warps: grid ceil(100 / 64) * 1 * 4 = 8 blocks of 128 threads; shared memory: 2 stages of
// (32 K rows + 32 V rows) * (2 * 64 + 16) bytes, the Q tile placed in the last stage.
// CHECK-LABEL: func.func @causal_gqa(
// CHECK-NEXT:    call @[[LAUNCH:lowbit_attention_launch_[0-9a-f]+]](%arg0, %arg1, %arg2, %arg3)
// CHECK:       func.func private @[[LAUNCH]](
// CHECK:         %[[SMEM:[a-z0-9_]+]] = arith.constant 18432 : i32
// CHECK:         %[[GRID:[a-z0-9_]+]] = arith.constant 8 : index
// CHECK:         %[[THREADS:[a-z0-9_]+]] = arith.constant 128 : index
// CHECK:         gpu.launch_func @lowbit_kernels::@[[KERNEL:lowbit_attention_[0-9a-f]+]] blocks in (%[[GRID]], %{{.*}}, %{{.*}}) threads in (%[[THREADS]], %{{.*}}, %{{.*}}) dynamic_shared_memory_size %[[SMEM]] args(%{{.*}} : !llvm.ptr<1>, %{{.*}} : !llvm.ptr<1>, %{{.*}} : !llvm.ptr<1>, %{{.*}} : !llvm.ptr<1>)
// CHECK:       gpu.module @lowbit_kernels
// CHECK:         llvm.mlir.global external @[[KERNEL]]_smem() {addr_space = 3 : i32, alignment = 16 : i64} : !llvm.array<0 x i8>
// CHECK:         gpu.func @[[KERNEL]](%{{.*}}: !llvm.ptr<1>, %{{.*}}: !llvm.ptr<1>, %{{.*}}: !llvm.ptr<1>, %{{.*}}: !llvm.ptr<1>) kernel
// The Q tile: rows past seq_len are zero-filled (a 0-byte source size).
// CHECK:           nvvm.cp.async.shared.global %{{.*}}, %{{.*}}, 16, cache = cg, %{{.*}} : !llvm.ptr<3>, !llvm.ptr<1>, i32
// CHECK:           nvvm.cp.async.commit.group
// CHECK:           nvvm.cp.async.commit.group
// CHECK:           nvvm.cp.async.wait.group 1
// CHECK-NEXT:      nvvm.barrier0
// CHECK:           nvvm.ldmatrix %{{.*}} {{{.*}}layout = #nvvm.mma_layout<row>{{.*}}} : (!llvm.ptr<3>) -> !llvm.struct<(i32, i32, i32, i32)>
// Unmasked tiles.
// CHECK:           %[[FULL:[a-z0-9_]+]]:36 = scf.for %{{.*}} iter_args({{.*}}) -> ({{.*}}) : i32 {
// CHECK-NEXT:        nvvm.cp.async.wait.group 0
// CHECK-NEXT:        nvvm.barrier0
// CHECK:             nvvm.cp.async.shared.global
// CHECK:             nvvm.cp.async.commit.group
// CHECK:             nvvm.ldmatrix %{{.*}} {{{.*}}layout = #nvvm.mma_layout<row>{{.*}}}
// CHECK:             nvvm.mma.sync A[{{.*}}] B[{{.*}}] C[{{.*}}] {layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, shape = #nvvm.shape<m = 16, n = 8, k = 16>} : (vector<2xf16>, vector<2xf16>, f32) -> !llvm.struct<(f32, f32, f32, f32)>
// CHECK-NOT:         arith.select {{.*}} : f32
// CHECK:             arith.maxnumf
// CHECK:             nvvm.shfl.sync bfly
// CHECK:             llvm.call_intrinsic "llvm.nvvm.ex2.approx.ftz.f"
// CHECK:             nvvm.convert.f32x2.to.f16x2 {{.*}} {rnd = #nvvm.fp_rnd_mode<rn>} : vector<2xf16>
// CHECK:             nvvm.ldmatrix %{{.*}} {{{.*}}layout = #nvvm.mma_layout<col>{{.*}}}
// CHECK:             nvvm.mma.sync
// CHECK:             scf.yield
// Masked tiles (the diagonal and the one crossing seq_len) continue from the unmasked loop's state.
// CHECK:           %[[LAST:[a-z0-9_]+]]:36 = scf.for %{{.*}} = %{{.*}} to %{{.*}} step %{{.*}} iter_args(%{{.*}} = %[[FULL]]#0,
// CHECK:             nvvm.mma.sync
// CHECK:             arith.select %{{.*}}, %{{.*}}, %{{.*}} : f32
// CHECK:             llvm.call_intrinsic "llvm.nvvm.ex2.approx.ftz.f"
// CHECK:             scf.yield
// Epilogue: row sums reduced over the quad, 1 / sum, f16 pairs stored for rows < seq_len.
// CHECK:           nvvm.shfl.sync bfly
// CHECK:           arith.divf
// CHECK:           scf.if
// CHECK:             llvm.store %{{.*}}, %{{.*}} : vector<2xf16>, !llvm.ptr<1>
// CHECK:           gpu.return
func.func @causal_gqa(%arg0: memref<1x100x4x64xf16>, %arg1: memref<1x100x2x64xf16>, %arg2: memref<1x100x2x64xf16>, %arg3: memref<1x100x4x64xf16>) {
  "lowbit.attention"(%arg0, %arg1, %arg2, %arg3) {Accu_dtype = "float32", K_dtype = "float16", Out_dtype = "float16", Q_dtype = "float16", V_dtype = "float16", batch = 1 : i64, dim = 64 : i64, heads = 4 : i64, is_causal = true, kv_heads = 2 : i64, layout = "nnn", seq_len = 100 : i64, lowbit.schedule = {block_q = 64 : i64, block_kv = 32 : i64, warps = 4 : i64, stages = 2 : i64, q_in_regs = true}} : (memref<1x100x4x64xf16>, memref<1x100x2x64xf16>, memref<1x100x2x64xf16>, memref<1x100x4x64xf16>) -> ()
  return
}

// PTX: .extern .shared .align 16 .b8 lowbit_attention_{{[0-9a-f]+}}_smem[]
// PTX: cp.async.cg.shared.global
// PTX: ldmatrix.sync.aligned.m8n8.x4.shared.b16
// PTX: mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32
// PTX: shfl.sync.bfly.b32
// PTX: ex2.approx.ftz.f32
// PTX: cvt.rn.f16x2.f32
// PTX: ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16

// -----

// Layout 'ntn' (K is [batch, dim, kv_heads, seq_len]), not causal, no schedule attribute: the default one of
// dim 32 (128 query rows on 4 warps, Q in registers, 3 stages, overlap). The K tile is stored [dim][key] and
// read with ldmatrix.trans (col layout). With overlap the scores of tile 0 are computed before the loops,
// each iteration computes the next tile's scores (carried: 64 output + 4 max + 4 sum + 32 score values),
// and the last tile's softmax and P V follow the loops.
// CHECK-LABEL: func.func @ntn(
// CHECK:         gpu.launch_func @lowbit_kernels::@{{.*}} threads in (%{{.*}}, %{{.*}}, %{{.*}}) dynamic_shared_memory_size
// CHECK:         gpu.func @lowbit_attention_{{[0-9a-f]+}}(
// CHECK:           nvvm.cp.async.wait.group 1
// CHECK-NEXT:      nvvm.barrier0
// CHECK:           nvvm.ldmatrix %{{.*}} {{{.*}}layout = #nvvm.mma_layout<row>{{.*}}}
// CHECK:           nvvm.ldmatrix %{{.*}} {{{.*}}layout = #nvvm.mma_layout<col>{{.*}}}
// CHECK:           nvvm.mma.sync
// CHECK:           %[[FULL:[a-z0-9_]+]]:104 = scf.for
// CHECK-NEXT:        nvvm.cp.async.wait.group 0
// CHECK-NEXT:        nvvm.barrier0
// CHECK:             nvvm.cp.async.commit.group
// CHECK-NOT:         nvvm.ldmatrix {{.*}}mma_layout<row>
// CHECK:             nvvm.ldmatrix %{{.*}} {{{.*}}layout = #nvvm.mma_layout<col>{{.*}}}
// CHECK:             nvvm.mma.sync
// CHECK:             llvm.call_intrinsic "llvm.nvvm.ex2.approx.ftz.f"
// CHECK:             scf.yield
// CHECK:           %[[LAST:[a-z0-9_]+]]:104 = scf.for %{{.*}} iter_args(%{{.*}} = %[[FULL]]#0,
// CHECK:             scf.yield
// CHECK:           llvm.call_intrinsic "llvm.nvvm.ex2.approx.ftz.f"
// CHECK:           nvvm.mma.sync
// CHECK:           arith.divf
func.func @ntn(%arg0: memref<2x64x2x32xf16>, %arg1: memref<2x32x2x64xf16>, %arg2: memref<2x64x2x32xf16>, %arg3: memref<2x64x2x32xf16>) {
  "lowbit.attention"(%arg0, %arg1, %arg2, %arg3) {Accu_dtype = "float32", K_dtype = "float16", Out_dtype = "float16", Q_dtype = "float16", V_dtype = "float16", batch = 2 : i64, dim = 32 : i64, heads = 2 : i64, is_causal = false, kv_heads = 2 : i64, layout = "ntn", seq_len = 64 : i64} : (memref<2x64x2x32xf16>, memref<2x32x2x64xf16>, memref<2x64x2x32xf16>, memref<2x64x2x32xf16>) -> ()
  return
}

// PTX: ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16
// PTX: mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32
