// REQUIRES: ptxas
// The sm_80 target emits PTX ISA 7.4, the first with createpolicy and L2::cache_hint loads that the
// matmul kernel streams its weights with: ptxas accepts the PTX for sm_80 and sm_86.

// RUN: lowbit compile matmul --M 16 --N 256 --K 256 --W_dtype uint4 --group_size 128 --with_scaling true --with_zeros true --target sm_80 --emit ptx -o %t.ptx
// RUN: ptxas -arch=sm_80 %t.ptx -o %t.cubin
// RUN: lowbit compile matmul --M 16 --N 256 --K 256 --W_dtype int4 --group_size 128 --with_scaling true --target sm_86 --emit ptx -o %t86.ptx
// RUN: ptxas -arch=sm_86 %t86.ptx -o %t86.cubin
