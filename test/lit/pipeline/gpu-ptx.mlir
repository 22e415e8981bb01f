// REQUIRES: ptxas
// The GPU stages end in PTX that ptxas accepts (no GPU needed). The kernels come from `lowbit compile`.

// Weights loaded straight to registers (every large grid's default; this small one asks for it):
// RUN: lowbit compile matmul --M 1,16 --N 256 --K 256 --W_dtype uint4 --group_size 128 --with_scaling true --with_zeros true --target sm_90a --emit ptx --bucket 16 --schedule w_smem=0 -o %t.mm.ptx
// RUN: FileCheck %s --check-prefix=MATMUL < %t.mm.ptx
// RUN: ptxas -arch=sm_90a %t.mm.ptx -o %t.mm.cubin
// MATMUL: .target sm_90a
// MATMUL: .visible .entry lowbit_matmul_{{[0-9a-f]+}}(
// MATMUL: createpolicy.fractional.L2::evict_first
// MATMUL: cp.async.cg.shared.global
// MATMUL: ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32
// MATMUL: lop3.b32
// MATMUL: ldmatrix.sync.aligned.m8n8.x4.shared.b16
// MATMUL: mma.sync.aligned.m16n8k16.row.col

// A grid of at most 2 blocks an SM takes the weights through the shared-memory stages by default:
// RUN: lowbit compile matmul --M 1,16 --N 256 --K 256 --W_dtype uint4 --group_size 128 --with_scaling true --with_zeros true --target sm_90a --emit ptx --bucket 16 -o %t.small.ptx
// RUN: FileCheck %s --check-prefix=SMALL < %t.small.ptx
// RUN: ptxas -arch=sm_90a %t.small.ptx -o %t.small.cubin
// SMALL: .visible .entry lowbit_matmul_{{[0-9a-f]+}}(
// SMALL-NOT: ld.global.nc.L1::no_allocate
// SMALL: cp.async.cg.shared.global
// SMALL-NOT: ld.global.nc.L1::no_allocate
// SMALL: ld.shared.v4.b32
// SMALL-NOT: ld.global.nc.L1::no_allocate
// SMALL: mma.sync.aligned.m16n8k16.row.col

// RUN: lowbit compile attention --batch 1 --heads 2 --seq_len 128 --dim 64 --is_causal true --target sm_80 --emit ptx -o %t.attn.ptx
// RUN: FileCheck %s --check-prefix=ATTN < %t.attn.ptx
// RUN: ptxas -arch=sm_80 %t.attn.ptx -o %t.attn.cubin
// ATTN: .target sm_80
// ATTN: .visible .entry
// ATTN: mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32
