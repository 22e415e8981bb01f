// REQUIRES: ptxas
// The GPU stages end in PTX that ptxas accepts (no GPU needed). The kernels come from `lowbit compile`.

// RUN: lowbit compile matmul --M 1,16 --N 256 --K 256 --W_dtype uint4 --group_size 128 --with_scaling true --with_zeros true --target sm_90a --emit ptx --bucket 16 -o %t.mm.ptx
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

// RUN: lowbit compile attention --batch 1 --heads 2 --seq_len 128 --dim 64 --is_causal true --target sm_80 --emit ptx -o %t.attn.ptx
// RUN: FileCheck %s --check-prefix=ATTN < %t.attn.ptx
// RUN: ptxas -arch=sm_80 %t.attn.ptx -o %t.attn.cubin
// ATTN: .target sm_80
// ATTN: .visible .entry
// ATTN: mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32
