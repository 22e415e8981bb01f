// The lowbit dialect, loaded at run time by lowbit.dialects.load_dialect.
// Ops use destination passing on memrefs: the last operand is the output buffer.
// Every MatmulConfig / FlashAttenConfig field is an attribute; a schedule may ride
// along as the discardable attribute `lowbit.schedule`.
irdl.dialect @lowbit {
  irdl.operation @matmul {
    %a = irdl.base "!builtin.memref"
    %w = irdl.base "!builtin.memref"
    %scale = irdl.base "!builtin.memref"
    %zeros = irdl.base "!builtin.memref"
    %bias = irdl.base "!builtin.memref"
    %out = irdl.base "!builtin.memref"
    irdl.operands(a: %a, w: %w, scale: optional %scale, zeros: optional %zeros, bias: optional %bias, out: %out)

    // M is an integer (one static size) or an array of bucket sizes; any_of over irdl.base
    // constraints aborts this MLIR build's IRDL loader, so the frontend checks M.
    %m = irdl.any
    %n = irdl.base "#builtin.integer"
    %k = irdl.base "#builtin.integer"
    %a_f16 = irdl.is "float16"
    %a_i8 = irdl.is "int8"
    %a_dtype = irdl.any_of(%a_f16, %a_i8)
    %w_i8 = irdl.is "int8"
    %w_i4 = irdl.is "int4"
    %w_i2 = irdl.is "int2"
    %w_i1 = irdl.is "int1"
    %w_u4 = irdl.is "uint4"
    %w_u2 = irdl.is "uint2"
    %w_u1 = irdl.is "uint1"
    %w_fp4 = irdl.is "fp4_e2m1"
    %w_nf4 = irdl.is "nf4"
    %w_f16 = irdl.is "float16"
    %w_dtype = irdl.any_of(%w_i8, %w_i4, %w_i2, %w_i1, %w_u4, %w_u2, %w_u1, %w_fp4, %w_nf4, %w_f16)
    %acc_f16 = irdl.is "float16"
    %acc_f32 = irdl.is "float32"
    %acc_i32 = irdl.is "int32"
    %accum_dtype = irdl.any_of(%acc_f16, %acc_f32, %acc_i32)
    %out_f16 = irdl.is "float16"
    %out_f32 = irdl.is "float32"
    %out_i32 = irdl.is "int32"
    %out_i8 = irdl.is "int8"
    %out_dtype = irdl.any_of(%out_f16, %out_f32, %out_i32, %out_i8)
    %nt = irdl.is "nt"
    %nn = irdl.is "nn"
    %layout = irdl.any_of(%nt, %nn)
    %with_bias = irdl.base "#builtin.integer"
    %group_size = irdl.base "#builtin.integer"
    %with_scaling = irdl.base "#builtin.integer"
    %with_zeros = irdl.base "#builtin.integer"
    %z_original = irdl.is "original"
    %z_rescale = irdl.is "rescale"
    %z_quantized = irdl.is "quantized"
    %zeros_mode = irdl.any_of(%z_original, %z_rescale, %z_quantized)
    irdl.attributes {
      "M" = %m, "N" = %n, "K" = %k,
      "A_dtype" = %a_dtype, "W_dtype" = %w_dtype, "accum_dtype" = %accum_dtype, "out_dtype" = %out_dtype,
      "layout" = %layout, "with_bias" = %with_bias, "group_size" = %group_size,
      "with_scaling" = %with_scaling, "with_zeros" = %with_zeros, "zeros_mode" = %zeros_mode
    }
  }

  irdl.operation @attention {
    %q = irdl.base "!builtin.memref"
    %k = irdl.base "!builtin.memref"
    %v = irdl.base "!builtin.memref"
    %out = irdl.base "!builtin.memref"
    irdl.operands(q: %q, k: %k, v: %v, out: %out)

    %batch = irdl.base "#builtin.integer"
    %heads = irdl.base "#builtin.integer"
    %seq_len = irdl.base "#builtin.integer"
    %dim = irdl.base "#builtin.integer"
    %q_dtype = irdl.is "float16"
    %k_dtype = irdl.is "float16"
    %v_dtype = irdl.is "float16"
    %accu_dtype = irdl.is "float32"
    %out_dtype = irdl.is "float16"
    %nnn = irdl.is "nnn"
    %ntn = irdl.is "ntn"
    %layout = irdl.any_of(%nnn, %ntn)
    %is_causal = irdl.base "#builtin.integer"
    %kv_heads = irdl.base "#builtin.integer"
    irdl.attributes {
      "batch" = %batch, "heads" = %heads, "seq_len" = %seq_len, "dim" = %dim,
      "Q_dtype" = %q_dtype, "K_dtype" = %k_dtype, "V_dtype" = %v_dtype,
      "Accu_dtype" = %accu_dtype, "Out_dtype" = %out_dtype,
      "layout" = %layout, "is_causal" = %is_causal, "kv_heads" = %kv_heads
    }
  }
}
