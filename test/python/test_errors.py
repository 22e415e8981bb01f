"""Bad inputs give a clear TypeError/ValueError naming the culprit, never a crash or a silent result."""
from __future__ import annotations

import pytest
import torch

from lowbit import FlashAtten, FlashAttenConfig, Matmul, MatmulConfig
from reference import LOGICAL_RANGE, expect, pack_quantized_zeros

BAD = (TypeError, ValueError)


@pytest.fixture(scope="module")
def grouped():
    """int4 W, group 32 scaling, dynamic M: a valid call and its pieces."""
    cfg = MatmulConfig(M=[1, 16], N=64, K=128, W_dtype="int4", with_scaling=True, group_size=32)
    op = Matmul(cfg)
    g = torch.Generator().manual_seed(1)
    W = op.transform_weight(torch.randint(-8, 8, (64, 128), generator=g))
    scale = torch.rand(64, 4, generator=g).to(torch.float16)
    A = torch.randn(3, 128, generator=g).to(torch.float16)
    op(A, W, scale=scale)  # the valid call works (and the kernel is built once for the module)
    return op, A, W, scale


# ------------------------------------------------------------------------------------------ forward: A


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int8, torch.float64])
def test_A_wrong_dtype(grouped, dtype):
    op, A, W, s = grouped
    expect(TypeError, ["A", "float16", str(dtype).split(".")[-1]], lambda: op(A.to(dtype), W, scale=s))


def test_A_int8_config_rejects_float16_A():
    cfg = MatmulConfig(N=32, K=64, A_dtype="int8", W_dtype="int8", accum_dtype="int32", out_dtype="int32")
    op = Matmul(cfg)
    W = op.transform_weight(torch.zeros(32, 64, dtype=torch.int64))
    expect(TypeError, ["A", "int8"], lambda: op(torch.zeros(2, 64, dtype=torch.float16), W))


@pytest.mark.parametrize("shape", [(3, 64), (3, 129), (128,), (3, 128, 1), ()])
def test_A_wrong_shape(grouped, shape):
    op, A, W, s = grouped
    bad = torch.zeros(shape, dtype=torch.float16)
    if shape == (128,):  # a 1-D A of length K is m=1 and valid
        out = op(bad, W, scale=s)
        assert tuple(out.shape) == (64,)
        return
    expect(ValueError, ["A", "128"], lambda: op(bad, W, scale=s))


def test_A_not_a_tensor(grouped):
    op, A, W, s = grouped
    expect(TypeError, ["A", "Tensor"], lambda: op(A.numpy(), W, scale=s))


def test_A_non_contiguous(grouped):
    op, A, W, s = grouped
    At = torch.zeros(128, 3, dtype=torch.float16).t()
    assert not At.is_contiguous()
    expect(ValueError, ["A", "contiguous"], lambda: op(At, W, scale=s))
    strided = torch.zeros(3, 256, dtype=torch.float16)[:, ::2]
    expect(ValueError, ["A", "contiguous"], lambda: op(strided, W, scale=s))


# ------------------------------------------------------------------------------------------ forward: W, scale, zeros, bias


def test_W_wrong_shape_and_dtype(grouped):
    op, A, W, s = grouped
    expect(ValueError, ["W", "64"], lambda: op(A, W[:32].contiguous(), scale=s))
    expect(ValueError, ["W"], lambda: op(A, torch.zeros(64, 128, dtype=torch.int8), scale=s))  # unpacked
    expect(TypeError, ["W", "int8", "int32"], lambda: op(A, W.to(torch.int32), scale=s))
    expect(TypeError, ["W", "int8", "uint8"], lambda: op(A, W.view(torch.uint8), scale=s))
    expect(TypeError, ["W"], lambda: op(A, W.tolist(), scale=s))


def test_weights_checked_again_after_in_place_changes():
    """forward skips re-checking the weights it just checked (same objects, same addresses); a
    tensor whose storage was swapped since (`.data =`, `set_`) is checked again."""
    cfg = MatmulConfig(M=[1, 16], N=64, K=128, W_dtype="int4", with_scaling=True, group_size=32)
    op = Matmul(cfg)
    W = op.transform_weight(torch.randint(-8, 8, (64, 128)))
    scale = torch.rand(64, 4).to(torch.float16)
    A = torch.randn(2, 128).to(torch.float16)
    op(A, W, scale=scale)
    W.data = W.data[:32].clone()
    expect(ValueError, ["W", "64"], lambda: op(A, W, scale=scale))
    W = op.transform_weight(torch.randint(-8, 8, (64, 128)))
    op(A, W, scale=scale)
    scale.set_(torch.rand(64, 2).to(torch.float16))
    expect(ValueError, ["scale", "[64, 4]"], lambda: op(A, W, scale=scale))


def test_forward_checks_again_what_differs_from_the_last_call():
    """After a valid call, a call with A of the same shape still checks A's dtype, layout and device
    and the output's, and the next valid call computes afresh (not the remembered call's result)."""
    cfg = MatmulConfig(M=[1, 16], N=64, K=128, W_dtype="int4", with_scaling=True, group_size=32)
    op = Matmul(cfg)
    W = op.transform_weight(torch.randint(-8, 8, (64, 128)))
    scale = torch.rand(64, 4).to(torch.float16)
    A = torch.randn(2, 128).to(torch.float16)
    out = torch.empty(2, 64, dtype=torch.float16)
    op(A, W, scale=scale, output=out)
    expect(TypeError, ["A", "float16", "float32"], lambda: op(A.float(), W, scale=scale, output=out))
    expect(ValueError, ["A", "contiguous"], lambda: op(torch.empty(128, 2, dtype=torch.float16).t(), W, scale=scale))
    expect(ValueError, ["meta"], lambda: op(A.to("meta"), W, scale=scale))
    expect(TypeError, ["output", "float32"], lambda: op(A, W, scale=scale, output=out.float()))
    expect(ValueError, ["output", "meta"], lambda: op(A, W, scale=scale, output=torch.empty_like(out, device="meta")))
    A2 = torch.randn(2, 128).to(torch.float16)
    out.fill_(float("nan"))
    op(A2, W, scale=scale, output=out)
    assert torch.equal(out, Matmul(cfg)(A2, W, scale=scale))


def test_native_W_wrong_dtype():
    op = Matmul(MatmulConfig(N=32, K=64))
    A = torch.zeros(2, 64, dtype=torch.float16)
    expect(TypeError, ["W", "float16", "float32"], lambda: op(A, torch.zeros(32, 64)))
    op_nn = Matmul(MatmulConfig(N=32, K=64, layout="nn"))
    W = op_nn.transform_weight(torch.zeros(64, 32))  # logical [K, N]; the stored layout is opaque
    assert W.dtype == torch.float16
    op_nn(A, W)
    wrong = torch.zeros(W.shape[0], W.shape[1] + 8, dtype=torch.float16)
    expect(ValueError, ["W", str(list(W.shape))[1:-1]], lambda: op_nn(A, wrong))
    expect(TypeError, ["W", "float16", "int8"], lambda: op_nn(A, W.to(torch.int8)))


def test_scale_missing_wrong_or_unexpected(grouped):
    op, A, W, s = grouped
    expect(ValueError, ["scale", "required"], lambda: op(A, W))
    expect(ValueError, ["scale", "64, 4"], lambda: op(A, W, scale=s[:, :2].contiguous()))
    expect(TypeError, ["scale", "float16"], lambda: op(A, W, scale=s.float()))
    expect(ValueError, ["scale", "contiguous"], lambda: op(A, W, scale=torch.zeros(4, 64, dtype=torch.float16).t()))
    plain = Matmul(MatmulConfig(N=64, K=128, W_dtype="int4"))
    expect(ValueError, ["scale", "with_scaling"], lambda: plain(A, W, scale=s))


def test_zeros_and_bias_unexpected_or_missing(grouped):
    op, A, W, s = grouped
    expect(ValueError, ["zeros"], lambda: op(A, W, scale=s, zeros=s))
    expect(ValueError, ["bias"], lambda: op(A, W, scale=s, bias=torch.zeros(64, dtype=torch.float16)))
    zcfg = MatmulConfig(N=64, K=128, W_dtype="uint4", with_scaling=True, with_zeros=True, zeros_mode="quantized",
                        group_size=32, with_bias=True)
    zop = Matmul(zcfg)
    Wz = zop.transform_weight(torch.zeros(64, 128, dtype=torch.int64))
    codes = torch.zeros(64, 4, dtype=torch.int64)
    bias = torch.zeros(64, dtype=torch.float16)
    expect(ValueError, ["zeros", "required"], lambda: zop(A, Wz, scale=s, bias=bias))
    expect(ValueError, ["bias", "required"], lambda: zop(A, Wz, scale=s, zeros=pack_quantized_zeros(codes, 4)))
    # forward takes the packed layout, not the codes
    expect(BAD, ["zeros"], lambda: zop(A, Wz, scale=s, zeros=codes.to(torch.int8), bias=bias))
    expect(TypeError, ["bias", "float16"], lambda: zop(A, Wz, scale=s, zeros=pack_quantized_zeros(codes, 4),
                                                       bias=bias.float()))


def test_int_output_bias_must_be_int32():
    cfg = MatmulConfig(N=32, K=64, A_dtype="int8", W_dtype="int4", accum_dtype="int32", out_dtype="int8",
                       with_bias=True)
    op = Matmul(cfg)
    W = op.transform_weight(torch.zeros(32, 64, dtype=torch.int64))
    A = torch.zeros(2, 64, dtype=torch.int8)
    expect(TypeError, ["bias", "int32"], lambda: op(A, W, bias=torch.zeros(32, dtype=torch.int8)))


# ------------------------------------------------------------------------------------------ forward: output, M


def test_output_wrong_shape_dtype_or_layout(grouped):
    op, A, W, s = grouped
    expect(ValueError, ["output", "3, 64"], lambda: op(A, W, scale=s, output=torch.empty(3, 32, dtype=torch.float16)))
    expect(ValueError, ["output"], lambda: op(A, W, scale=s, output=torch.empty(64, 3, dtype=torch.float16)))
    expect(ValueError, ["output"], lambda: op(A, W, scale=s, output=torch.empty(192, dtype=torch.float16)))
    expect(TypeError, ["output", "float16", "float32"], lambda: op(A, W, scale=s, output=torch.empty(3, 64)))
    expect(ValueError, ["output", "contiguous"],
           lambda: op(A, W, scale=s, output=torch.empty(64, 3, dtype=torch.float16).t()))


def test_output_untouched_when_rejected(grouped):
    op, A, W, s = grouped
    out = torch.full((3, 64), 7.0, dtype=torch.float16)
    with pytest.raises(BAD):
        op(A, W, output=out)  # scale missing
    assert bool((out == 7).all())


def test_static_M_other_m():
    cfg = MatmulConfig(M=4, N=32, K=64)
    op = Matmul(cfg)
    W = op.transform_weight(torch.zeros(32, 64))
    op(torch.zeros(4, 64, dtype=torch.float16), W)
    op(torch.zeros(2, 2, 64, dtype=torch.float16), W)  # m = 4 through leading dims
    for m in (1, 3, 5, 16):
        expect(ValueError, ["M=4", f"m={m}"], lambda: op(torch.zeros(m, 64, dtype=torch.float16), W))


# ------------------------------------------------------------------------------------------ devices


def test_device_mix_is_rejected_on_cpu():
    """A 'meta' tensor stands in for another device: the mix is caught before any launch."""
    cfg = MatmulConfig(N=32, K=64, W_dtype="int4", with_scaling=True, with_bias=True)
    op = Matmul(cfg)
    W, s, b = op.transform_weight(torch.zeros(32, 64, dtype=torch.int64), scale=torch.ones(32, 1),
                                  bias=torch.zeros(32))
    A = torch.zeros(2, 64, dtype=torch.float16)
    meta = lambda t: torch.empty_like(t, device="meta")
    expect(ValueError, ["W", "meta", "cpu"], lambda: op(A, meta(W), scale=s, bias=b))
    expect(ValueError, ["scale", "meta"], lambda: op(A, W, scale=meta(s), bias=b))
    expect(ValueError, ["bias", "meta"], lambda: op(A, W, scale=s, bias=meta(b)))
    expect(ValueError, ["output", "meta"], lambda: op(A, W, scale=s, bias=b, output=torch.empty(2, 32, device="meta",
                                                                                               dtype=torch.float16)))
    expect(ValueError, ["meta"], lambda: op(meta(A), meta(W), scale=meta(s), bias=meta(b)))  # unsupported device


@pytest.mark.gpu
def test_device_mix_cpu_cuda():
    cfg = MatmulConfig(N=32, K=64, W_dtype="int4", with_scaling=True)
    op = Matmul(cfg)
    W, s = op.transform_weight(torch.zeros(32, 64, dtype=torch.int64), scale=torch.ones(32, 1))
    A = torch.zeros(2, 64, dtype=torch.float16)
    expect(ValueError, ["W", "cuda", "cpu"], lambda: op(A, W.cuda(), scale=s))
    expect(ValueError, ["device"], lambda: op(A.cuda(), W, scale=s.cuda()))
    expect(ValueError, ["scale"], lambda: op(A.cuda(), W.cuda(), scale=s))


# ------------------------------------------------------------------------------------------ transform_weight


def _out_of_range(W_dtype):
    lo, hi = LOGICAL_RANGE[W_dtype]
    return [(lo - 1, hi), (lo, hi + 1), (lo - 7, hi + 100)]


@pytest.mark.parametrize("W_dtype", list(LOGICAL_RANGE))
def test_transform_weight_out_of_range(W_dtype):
    N, K = 16, 64
    op = Matmul(MatmulConfig(N=N, K=K, W_dtype=W_dtype))
    lo, hi = LOGICAL_RANGE[W_dtype]
    for bad_lo, bad_hi in _out_of_range(W_dtype):
        w = torch.full((N, K), hi, dtype=torch.int64)
        w[0, 0], w[N - 1, K - 1] = bad_lo, bad_hi
        expect(ValueError, [W_dtype, f"min {bad_lo}", f"max {bad_hi}"], lambda: op.transform_weight(w))
    if W_dtype == "int1":  # 0 lies inside [-1, 1] but is not a value of int1
        w = torch.ones(N, K, dtype=torch.int64)
        w[3, 5] = 0
        expect(ValueError, ["int1", "0"], lambda: op.transform_weight(w))
    ok = torch.full((N, K), hi, dtype=torch.int64)
    ok[0, 0] = lo if W_dtype != "int1" else -1
    assert op.transform_weight(ok).dtype == torch.int8  # the range ends themselves are accepted


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.uint8])
def test_transform_weight_takes_any_integer_dtype(dtype):
    op = Matmul(MatmulConfig(N=16, K=64, W_dtype="uint4"))
    w = torch.randint(0, 16, (16, 64), generator=torch.Generator().manual_seed(0))
    assert torch.equal(op.transform_weight(w.to(dtype)), op.transform_weight(w))


def test_transform_weight_bad_inputs():
    op = Matmul(MatmulConfig(N=16, K=64, W_dtype="int4"))
    expect(TypeError, ["int4", "integer"], lambda: op.transform_weight(torch.zeros(16, 64)))
    expect(ValueError, ["16, 64", "64, 16"], lambda: op.transform_weight(torch.zeros(64, 16, dtype=torch.int64)))
    expect(TypeError, ["Tensor"], lambda: op.transform_weight([[0] * 64] * 16))
    fp = Matmul(MatmulConfig(N=16, K=64))
    expect(TypeError, ["float16", "float"], lambda: fp.transform_weight(torch.zeros(16, 64, dtype=torch.int64)))
    nn = Matmul(MatmulConfig(N=16, K=64, W_dtype="int8", layout="nn"))
    expect(ValueError, ["64, 16", "nn"], lambda: nn.transform_weight(torch.zeros(16, 64, dtype=torch.int64)))


def test_transform_weight_extras_not_configured():
    w = torch.zeros(16, 64, dtype=torch.int64)
    plain = Matmul(MatmulConfig(N=16, K=64, W_dtype="int4"))
    expect(ValueError, ["scale", "with_scaling"], lambda: plain.transform_weight(w, scale=torch.ones(16, 1)))
    expect(ValueError, ["zeros", "with_zeros"], lambda: plain.transform_weight(w, zeros=torch.ones(16, 1)))
    expect(ValueError, ["bias", "with_bias"], lambda: plain.transform_weight(w, bias=torch.ones(16)))
    scaled = Matmul(MatmulConfig(N=16, K=64, W_dtype="uint4", with_scaling=True))
    expect(ValueError, ["zeros", "with_zeros"], lambda: scaled.transform_weight(w, scale=torch.ones(16, 1),
                                                                               zeros=torch.ones(16, 1)))


def test_transform_weight_bad_scale_zeros_bias():
    cfg = MatmulConfig(N=16, K=64, W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=32, with_bias=True)
    op = Matmul(cfg)
    w = torch.zeros(16, 64, dtype=torch.int64)
    expect(ValueError, ["scale", "16, 2"], lambda: op.transform_weight(w, scale=torch.ones(16, 1)))
    expect(TypeError, ["scale", "float"], lambda: op.transform_weight(w, scale=torch.ones(16, 2, dtype=torch.int32)))
    expect(ValueError, ["zeros", "16, 2"], lambda: op.transform_weight(w, scale=torch.ones(16, 2),
                                                                      zeros=torch.ones(2, 16)))
    expect(ValueError, ["bias", "16"], lambda: op.transform_weight(w, bias=torch.ones(8)))


@pytest.mark.parametrize("W_dtype,bits", [("uint4", 4), ("uint2", 2), ("uint1", 1)])
def test_transform_weight_quantized_zeros_out_of_range(W_dtype, bits):
    cfg = MatmulConfig(N=16, K=64, W_dtype=W_dtype, with_scaling=True, with_zeros=True, zeros_mode="quantized",
                       group_size=32)
    op = Matmul(cfg)
    w = torch.zeros(16, 64, dtype=torch.int64)
    hi = (1 << bits) - 1
    for bad in (hi + 1, -1):
        z = torch.zeros(16, 2, dtype=torch.int64)
        z[3, 1] = bad
        expect(ValueError, [str(hi), str(bad)], lambda: op.transform_weight(w, zeros=z))
    expect(ValueError, ["zeros", "16, 2"], lambda: op.transform_weight(w, zeros=torch.zeros(3, 2, dtype=torch.int64)))
    expect(TypeError, ["zeros", "integer"], lambda: op.transform_weight(w, zeros=torch.zeros(16, 2)))  # float codes


# ------------------------------------------------------------------------------------------ FlashAtten


def test_flash_atten_bad_inputs():
    cfg = FlashAttenConfig(batch=1, heads=4, kv_heads=2, seq_len=8, dim=16, layout="ntn")
    op = FlashAtten(cfg)
    Q = torch.zeros(1, 8, 4, 16, dtype=torch.float16)
    K = torch.zeros(1, 16, 2, 8, dtype=torch.float16)
    V = torch.zeros(1, 8, 2, 16, dtype=torch.float16)
    assert op(Q, K, V).shape == Q.shape
    expect(ValueError, ["K", "1, 16, 2, 8"], lambda: op(Q, V, V))  # 'nnn' K for an 'ntn' op
    expect(ValueError, ["V", "1, 8, 2, 16"], lambda: op(Q, K, torch.zeros(1, 8, 4, 16, dtype=torch.float16)))
    expect(ValueError, ["Q"], lambda: op(Q[:, :4].contiguous(), K, V))
    expect(TypeError, ["Q", "float16", "float32"], lambda: op(Q.float(), K, V))
    expect(TypeError, ["K", "float16"], lambda: op(Q, K.float(), V))
    expect(ValueError, ["Q", "contiguous"], lambda: op(torch.zeros(1, 4, 8, 16, dtype=torch.float16).transpose(1, 2),
                                                       K, V))
    expect(ValueError, ["output"], lambda: op(Q, K, V, output=torch.zeros(1, 8, 2, 16, dtype=torch.float16)))
    expect(TypeError, ["output", "float16"], lambda: op(Q, K, V, output=torch.zeros(1, 8, 4, 16)))
    expect(ValueError, ["V", "meta"], lambda: op(Q, K, torch.empty_like(V, device="meta")))
    with pytest.raises(TypeError):
        FlashAtten(cfg.as_dict())


# ------------------------------------------------------------------------------------------ schedules


def test_wgmma_schedule_rules():
    """The warpgroup kernel: the default above 64 rows on sm_90a with float A only, and overrides it
    cannot run are refused with the field and what is allowed."""
    from lowbit.compiler.schedule import matmul_schedule

    cfg = MatmulConfig(M=[1, 4096], N=512, K=1024, W_dtype="int4", with_scaling=True, group_size=128)
    assert matmul_schedule(cfg, 4096, "sm_90a").wgmma == 1
    up_to_256 = matmul_schedule(cfg, 256, "sm_90a")
    assert up_to_256.wgmma == 1 and up_to_256.block_m == 64
    assert matmul_schedule(cfg, 64, "sm_90a").wgmma == 0
    assert matmul_schedule(cfg, 4096, "sm_80").wgmma == 0
    assert matmul_schedule(cfg, 4096, "sm_90a", wgmma=0).wgmma == 0
    assert matmul_schedule(cfg, 1, "sm_90a", wgmma=1).block_m == 64  # wgmma=1 brings its own defaults
    int8 = MatmulConfig(M=[4096], N=512, K=1024, W_dtype="int4", A_dtype="int8", accum_dtype="int32", out_dtype="int32")
    assert matmul_schedule(int8, 4096, "sm_90a").wgmma == 0
    expect(ValueError, ["wgmma", "sm_90a", "sm_89"], lambda: matmul_schedule(cfg, 4096, "sm_89", wgmma=1))
    expect(ValueError, ["wgmma", "A_dtype", "int8"], lambda: matmul_schedule(int8, 4096, "sm_90a", wgmma=1))
    odd_k = MatmulConfig(M=[4096], N=512, K=1002, W_dtype="float16")
    expect(ValueError, ["K % 8", "1002"], lambda: matmul_schedule(odd_k, 4096, "sm_90a", wgmma=1))
    expect(ValueError, ["stages=2", "3, 4, 5, 6"], lambda: matmul_schedule(cfg, 4096, "sm_90a", stages=2))
    expect(ValueError, ["block_m=32", "64, 128"], lambda: matmul_schedule(cfg, 4096, "sm_90a", block_m=32))
    expect(ValueError, ["split_k"], lambda: matmul_schedule(cfg, 4096, "sm_90a", split_k=2))
    expect(ValueError, ["warpgroups=2", "wgmma=1"], lambda: matmul_schedule(cfg, 4096, "sm_90a", wgmma=0, warpgroups=2))
    fp16 = MatmulConfig(M=[4096], N=512, K=1024, W_dtype="float16")
    expect(ValueError, ["k_unroll=1", "k_unroll >= 2"], lambda: matmul_schedule(fp16, 4096, "sm_90a", k_unroll=1))
    expect(ValueError, ["shared memory"], lambda: matmul_schedule(cfg, 4096, "sm_90a", stages=4, k_unroll=2))


def test_w_smem_schedule_rules():
    """Weights through the shared-memory stages (w_smem): decode kernels may take up to 8 stages then,
    which hold no registers; without w_smem 4; never with A fragments from global memory."""
    from lowbit.compiler.schedule import matmul_schedule, matmul_smem_bytes

    cfg = MatmulConfig(M=[1, 16], N=512, K=1024, W_dtype="int4", with_scaling=True, group_size=128)
    plain, deep = matmul_schedule(cfg, 1, "sm_90a", w_smem=0), matmul_schedule(cfg, 1, "sm_90a", w_smem=1, stages=8)
    assert deep.w_smem == 1 and deep.stages == 8
    # each stage adds 16 bytes per thread and n8 tile of weights to its A tile
    per_stage = matmul_smem_bytes(cfg, plain) // plain.stages
    assert matmul_smem_bytes(cfg, deep) == 8 * (per_stage + 128 * plain.warp_n_tiles * 16)
    expect(ValueError, ["stages=8", "w_smem=0", "2, 3, 4"], lambda: matmul_schedule(cfg, 16, "sm_90a", stages=8))
    expect(ValueError, ["w_smem=1", "a_smem=1"], lambda: matmul_schedule(cfg, 16, "sm_90a", w_smem=1, a_smem=0))


def test_weight_ring_schedule_rule():
    """Where decode weights default to the shared-memory stages (w_smem=1), by the grid's blocks an SM:
    at most 2 take 3 stages (4-bit and narrower weights with one group a superblock or no float-A
    scaling, at 8 and 16 rows; 8- and 16-bit weights at 8 rows), int4 and uint4 without zeros at 8 rows
    up to 6; above 6 for those and above 4 for uint4 'original' zeros at 8 rows, 2 stages with one
    iteration in registers. Other grids, small groups, prefill and any override of w_smem or stages
    keep the register path."""
    from lowbit.compiler.schedule import matmul_schedule

    def ring(N, K, bucket, target="sm_90a", **fields):
        fields = fields or dict(W_dtype="int4", with_scaling=True, group_size=128)
        sched = matmul_schedule(MatmulConfig(M=[bucket], N=N, K=K, **fields), bucket, target)
        return (sched.stages, sched.w_prefetch) if sched.w_smem else None

    small, many = (3, 2), (2, 1)
    uint4_zeros = dict(W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=128)
    assert ring(4096, 4096, 1, **uint4_zeros) == small  # 256 blocks of 16 columns
    assert ring(4224, 4096, 1, **uint4_zeros) == small and ring(4240, 4096, 1, **uint4_zeros) is None  # 264 = 2 x 132
    assert ring(8192, 8192, 1, **uint4_zeros) is None and ring(8448, 8192, 1, **uint4_zeros) is None  # 3.9, 4 an SM
    assert ring(8464, 8192, 1, **uint4_zeros) == many and ring(28672, 8192, 1, **uint4_zeros) == many  # above 4
    assert ring(2048, 4096, 1, "sm_86", **uint4_zeros) == small and ring(4096, 4096, 1, "sm_86", **uint4_zeros) is None
    assert ring(4096, 4096, 16, **uint4_zeros) == small and ring(8192, 8192, 16, **uint4_zeros) == small
    assert ring(28672, 8192, 16, **uint4_zeros) is None  # 16 rows: no ring for many waves
    # int4 and uint4 without zeros at 8 rows (the fold kernels): 3 stages up to 6 blocks an SM, then 2
    assert ring(8192, 28672, 1) == small and ring(11008, 4096, 1) == small  # 512, 688 blocks
    assert ring(12672, 4096, 1) == small and ring(12688, 4096, 1) == many  # 792 = 6 x 132, then 793
    assert ring(28672, 8192, 1) == many and ring(28672, 8192, 1, W_dtype="uint4", with_scaling=True, group_size=128) == many
    assert ring(8192, 8192, 16) == small  # 64 tiles of 128 columns x split 4
    assert ring(8192, 28672, 16) is None  # 384 blocks of 56 superblocks: no shorter split fits 2 an SM
    assert ring(4096, 4096, 64) is None and ring(4096, 4096, 4096) is None  # prefill
    # 1-bit weights run 16-row blocks at any m (their A tile): the count takes every row's blocks
    assert ring(8192, 8192, 64, W_dtype="int1") == (3, 1)  # 64 tiles x 4 row blocks = 256 (1 ahead above 16 rows)
    assert ring(14336, 4096, 64, W_dtype="int1") is None and ring(28672, 4096, 32, W_dtype="int1") is None  # 448
    assert ring(14336, 4096, 32, W_dtype="int1") == (3, 1)  # 112 tiles x 2 row blocks = 224
    assert ring(1024, 4096, 256, "sm_80", W_dtype="int1") == (3, 1) and ring(2048, 4096, 256, "sm_80", W_dtype="int1") is None
    assert ring(4096, 4096, 1, W_dtype="int2") == small and ring(4096, 4096, 1, W_dtype="nf4") == small
    assert ring(8192, 8192, 1, W_dtype="int2") is None and ring(28672, 8192, 1, W_dtype="nf4") is None
    assert ring(4096, 4096, 1, W_dtype="int4", with_scaling=True, group_size=32) is None  # 4 groups a superblock
    assert ring(28672, 8192, 1, W_dtype="uint2", with_scaling=True, with_zeros=True, group_size=128) is None
    for wide in (dict(W_dtype="float16"), dict(W_dtype="int8", A_dtype="int8", accum_dtype="int32", out_dtype="int32")):
        assert ring(4096, 4096, 1, **wide) == small and ring(4096, 4096, 16, **wide) is None
        assert ring(28672, 8192, 1, **wide) is None
    cfg = MatmulConfig(M=[1], N=4096, K=4096, W_dtype="int4", with_scaling=True, group_size=128)
    assert matmul_schedule(cfg, 1, "sm_90a", w_smem=0).w_smem == 0
    assert (matmul_schedule(cfg, 1, "sm_90a", stages=2).w_smem, matmul_schedule(cfg, 1, "sm_90a", stages=2).stages) == (0, 2)
    assert matmul_schedule(cfg, 1, "sm_90a", a_smem=0).w_smem == 0
    wide = MatmulConfig(M=[1], N=28672, K=8192, W_dtype="int4", with_scaling=True, group_size=128)
    kept = matmul_schedule(wide, 1, "sm_90a", w_prefetch=3)  # the many-waves ring keeps an explicit w_prefetch
    assert (kept.w_smem, kept.stages, kept.w_prefetch) == (1, 2, 3)
    expect(ValueError, ["target='cpu'", "no GPU schedule", "sm_80", "sm_90a"], lambda: matmul_schedule(cfg, 1, "cpu"))


def test_ring_split_schedule_rule():
    """At 16 rows, integer weights without zeros on grids of more than 2 blocks an SM split K fewer
    ways, the most that keep 2 blocks an SM and at most 40 superblocks a split, and take the 3-stage
    ring; not 4-bit weights on the wide-N schedule, zeros, decode tables, 8-bit weights or an override
    of split_k."""
    from lowbit.compiler.schedule import matmul_schedule

    int4 = dict(W_dtype="int4", with_scaling=True, group_size=128)

    def sched(N, K, fields=int4, bucket=16, target="sm_90a", **overrides):
        s = matmul_schedule(MatmulConfig(M=[bucket], N=N, K=K, **fields), bucket, target, **overrides)
        return s.split_k, (s.stages if s.w_smem else 0)

    assert sched(14336, 4096) == (2, 3)  # 112 tiles: split 4 is 448 blocks, 2 is 224 <= 264
    assert sched(11008, 4096) == (3, 3)  # 86 tiles x 3 = 258
    assert sched(16896, 4096) == (2, 3) and sched(17024, 4096) == (1, 3)  # 132 x 2 = 264, 133 x 2 = 266
    assert sched(14336, 4096, target="sm_86") == (1, 3)  # 84 SMs: 112 x 2 > 168
    assert sched(16384, 10240) == (2, 3) and sched(16384, 10368) == (4, 0)  # 40 superblocks a split, then 41
    assert sched(8704, 14336) == (3, 3)  # 68 tiles: 3 splits of 38 superblocks
    assert sched(14336, 4096, dict(W_dtype="uint4", with_scaling=True, group_size=128)) == (2, 3)
    assert sched(14336, 4096, dict(W_dtype="int2")) == (2, 3)
    assert sched(28672, 4096) == (2, 0)  # 4 bits, wide N: one wave of 4 blocks an SM already
    # the wide-N test is the grid's, not the schedule's w_prefetch: an override of it changes neither
    assert sched(14336, 4096, w_prefetch=1) == (2, 3) and sched(28672, 4096, w_prefetch=2) == (2, 0)
    assert sched(28672, 4096, dict(W_dtype="int2")) == (1, 3) and sched(28672, 8192, dict(W_dtype="int1")) == (1, 3)
    int2_a8 = dict(W_dtype="int2", A_dtype="int8", accum_dtype="int32", out_dtype="int32")
    assert sched(28672, 8192, int2_a8) == (1, 3) and sched(8192, 28672, int2_a8) == (4, 3)
    assert sched(14336, 4096, dict(int4, W_dtype="uint4", with_zeros=True, zeros_mode="original")) == (4, 0)
    assert sched(8704, 14336, dict(W_dtype="nf4")) == (8, 0)  # its own split (_table_decode_split), not the ring's 3
    assert sched(14336, 4096, dict(W_dtype="int8", A_dtype="int8", accum_dtype="int32", out_dtype="int32"))[1] == 0
    assert sched(14336, 4096, split_k=4) == (4, 0)
    assert sched(14336, 4096, w_smem=0) == (4, 0)


def test_small_m_schedule_rule():
    """17-64 rows: 32 or 64 rows x 128 columns a block, K split by the most ways, up to 8, that keep at
    most 2 blocks an SM and 8 iterations a split (2-bit weights: or 8 iterations of 128 k at 1 block an
    SM, whichever is more); 4-bit float-A weights and grids of several blocks of rows take the least
    loaded split instead; from 33 rows on sm_90a, weights of 4 bits or fewer with float A take the
    warpgroup kernel where N has a 128-row tile for every SM."""
    from lowbit.compiler.schedule import matmul_schedule

    int4 = dict(W_dtype="int4", with_scaling=True, group_size=128)
    fp16 = dict(W_dtype="float16")

    def sched(N, K, bucket=64, fields=int4, target="sm_90a", **overrides):
        s = matmul_schedule(MatmulConfig(M=[bucket], N=N, K=K, **fields), bucket, target, **overrides)
        return s.block_m, s.block_n, s.split_k, s.wgmma

    # the most splits that keep 2 blocks an SM (float16 weights)
    assert sched(8192, 8192, fields=fp16) == (64, 128, 4, 0) and sched(8192, 8192, 32, fp16) == (32, 128, 4, 0)
    assert sched(8192, 8192, fields=fp16, target="sm_80") == (64, 128, 3, 0)  # 108 SMs: 64 x 4 > 216
    assert sched(4096, 4096, fields=fp16)[2] == 4 and sched(4096, 3968, fields=fp16)[2] == 3  # 32 iterations, then 31
    assert sched(4096, 14336, fields=fp16)[2] == 8 and sched(4096, 14336, 32, fp16) == (32, 128, 8, 0)  # 32 x 8 tiles
    assert sched(4096, 8192, fields=fp16)[2] == 8 and sched(4096, 8064, fields=fp16)[2] == 6  # 64 iterations, then 63
    assert sched(1024, 28672, fields=fp16)[2] == 8  # 224 iterations and 8 tiles: at most 8 splits
    assert sched(4224, 14336, fields=fp16)[2] == 8 and sched(4352, 14336, fields=fp16)[2] == 6  # 33 x 8 <= 264 < 34 x 8
    assert sched(6144, 8192, fields=fp16)[2] == 4 and sched(1024, 1024, fields=fp16)[2] == 1
    assert sched(16768, 8192, fields=fp16) == (64, 128, 2, 0)
    # 4-bit float A, one group a superblock: the split whose busiest SM carries the least, the fewest
    # splits on a tie, counting 2 blocks an SM as fast as 1 at 64 rows, 2.5 at 32, within one wave (3
    # blocks an SM at 64 rows, 4 at 32)
    assert sched(6144, 8192) == (64, 128, 8, 0) and sched(6144, 8192, 32)[2] == 8  # 48 tiles x 8: 3 an SM
    assert sched(8192, 8192) == (64, 128, 4, 0)  # 4 (2 an SM) and 6 (3 an SM, 1.5 / 6) tie; 8: a second wave
    assert sched(8192, 8192, 32) == (32, 128, 6, 0)  # 4 an SM fit: 8 splits (1.6 / 8) tie with 6 (1.2 / 6)
    assert sched(12288, 8192) == (64, 128, 4, 0) and sched(12672, 8192)[2] == 4  # 96, 99 tiles x 4 <= 396
    assert sched(12800, 8192)[2] == 2 and sched(12800, 8192, 32)[2] == 3  # 100 x 4 > 396; at 32 rows 0.4 ties
    assert sched(11008, 8192)[2] == 3  # 86 tiles: 4 splits put 3 blocks on an SM (1.5 / 4 > 1 / 3)
    assert sched(11008, 8192, 32)[2] == 6  # 516 blocks: 1.6 / 6 below 4 splits' 1.2 / 4
    assert sched(8192, 8192, target="sm_80")[2] == 3  # 108 SMs: 4 splits put 3 blocks on an SM
    assert sched(4096, 4096)[2] == 4 and sched(4096, 3968)[2] == 3  # 8 steps of 128 k a split
    assert sched(6144, 8192, fields=dict(W_dtype="nf4"))[2] == 8 and sched(6144, 8192, fields=fp16)[2] == 4
    assert sched(6144, 8192, fields=dict(int4, group_size=32))[2] == 4  # 4 groups a superblock: the rule above
    assert sched(16768, 8192) == (64, 128, 2, 0)  # 131 tiles: the mma.sync kernel
    assert sched(16896, 8192) == (64, 64, 1, 1)  # 132 tiles: the warpgroup kernel, 64 x 64 (2 x 132 <= 396)
    assert sched(25344, 8192) == (64, 64, 1, 1) and sched(25472, 8192) == (64, 128, 1, 1)  # 198 and 199 tiles
    int2 = matmul_schedule(MatmulConfig(M=[64], N=16896, K=8192, W_dtype="int2"), 64, "sm_90a")
    assert (int2.wgmma, int2.warp_n_tiles, int2.warpgroups) == (1, 2, 2)  # 2-bit: two warpgroups of 64 weight rows
    assert sched(16896, 8192, 32) == (32, 128, 3, 0)  # up to 32 rows: mma.sync
    assert sched(28672, 8192, fields=dict(W_dtype="int2"))[3] == 1
    assert sched(28672, 8192, fields=fp16) == (64, 128, 1, 0)  # 16-bit weights: mma.sync
    int2_a8 = dict(W_dtype="int2", A_dtype="int8", accum_dtype="int32", out_dtype="int32")
    assert sched(28672, 8192, fields=int2_a8) == (64, 128, 1, 0)  # int8 A: no warpgroup kernel
    # 2-bit weights: also 8 iterations of 128 k a split at 1 block an SM, whichever is more
    assert sched(4096, 4096, fields=int2_a8)[2] == 4  # 16 superblocks (2 splits), 32 steps of 128 k, 32 tiles
    assert sched(4224, 4096, fields=int2_a8)[2] == 4 and sched(4352, 4096, fields=int2_a8)[2] == 3  # 33, 34 tiles
    assert sched(2048, 8192, fields=int2_a8)[2] == 8 and sched(4096, 14336, fields=int2_a8)[2] == 6
    assert sched(8192, 8192, fields=int2_a8)[2] == 4 and sched(8192, 4096, fields=int2_a8)[2] == 2  # 2 an SM
    assert sched(4096, 4096, fields=int2_a8, target="sm_80")[2] == 3  # 108 SMs: 32 x 3
    # several blocks of rows a column tile (float-A 2-bit at 33-64 rows: 32-row blocks; 1-bit: 16 rows with
    # float A, 32 with int8 A): the fewest splits whose busiest SM carries at most 15% more than the least
    # loaded choice, counting 2 blocks an SM as fast as 1, at 8 iterations of 128 k a split or more
    int2 = dict(W_dtype="int2")
    assert sched(1024, 4096, fields=int2)[2] == 4 and sched(2048, 8192, fields=int2)[2] == 8  # 32 and 64 steps of 128 k
    assert sched(8192, 8192, fields=int2) == (32, 128, 2, 0) and sched(8192, 8192, 32, int2)[2] == 4  # 128 x 2 blocks
    assert sched(8448, 8192, fields=int2)[2] == 2  # 132 blocks a split: 2 on each SM
    assert sched(8576, 8192, fields=int2)[2] == 4  # 134: 4 splits put 5 on the busiest SM, within 15% of 8's 9
    assert sched(6144, 8192, fields=int2)[2] == 4 and sched(14336, 4096, fields=int2)[2] == 1  # 96 x 4 = 384; 224
    assert sched(8192, 8192, fields=int2, target="sm_80")[2] == 3 and sched(1024, 1024, fields=int2)[2] == 1
    int1 = dict(W_dtype="int1")
    assert sched(1024, 4096, fields=int1) == (16, 128, 4, 0) and sched(4096, 4096, fields=int1)[2] == 2  # 32 x 4 x 2
    assert sched(4096, 4096, 32, int1)[2] == 4 and sched(8192, 8192, fields=int1)[2] == 1  # 64 x 4 = 256 blocks
    int1_a8 = dict(int2_a8, W_dtype="int1")
    assert sched(4096, 4096, fields=int1_a8) == (32, 128, 4, 0) and sched(8192, 28672, fields=int1_a8)[2] == 2
    assert sched(4096, 4096, 32, int1_a8)[2] == 1  # one block of rows: the superblock count
    assert sched(28672, 8192, target="sm_80") == (64, 128, 1, 0)
    assert sched(28672, 8192, wgmma=0) == (64, 128, 1, 0) and sched(8192, 8192, wgmma=1)[3] == 1
    assert sched(8192, 8192, split_k=2, warp_n_tiles=2) == (64, 64, 2, 0)


def test_prefill_tile_schedule_rule():
    """65-256 rows (variant 55): the warpgroup tile by the grid of 64 x 128 default tiles (4-bit: 64 x 64,
    the default, two warpgroups of 64 x 128 rows, one of 128 x 128; 2-bit: two warpgroups or 4 stages;
    16-bit: 4 stages, the default, two warpgroups); 128-row tiles only where the bucket is a whole
    number of them; the mma.sync kernel (int8 A) splits K in 2 below one wave of 64-row blocks and
    takes 128-row blocks for int8 weights where those fill the SMs."""
    from lowbit.compiler.schedule import matmul_schedule

    int4 = dict(W_dtype="int4", with_scaling=True, group_size=128)
    uint4z = dict(W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=128)
    int8a = dict(A_dtype="int8", accum_dtype="int32", out_dtype="int32")

    def tile(N, bucket, fields, K=8192):
        s = matmul_schedule(MatmulConfig(M=[bucket], N=N, K=K, **fields), bucket, "sm_90a")
        return (s.block_m, s.warp_n_tiles, s.warpgroups, s.stages, s.split_k) if s.wgmma else \
            ("sync", s.block_m, s.stages, s.split_k)

    default, small, two_groups, one_group = (64, 4, 1, 3, 1), (64, 2, 1, 3, 1), (128, 2, 2, 3, 1), (128, 4, 1, 3, 1)
    # integer codes without zeros, one group a superblock: 64 x 64 up to 1.5 waves (198 default blocks)
    assert tile(6272, 256, int4) == small and tile(6400, 256, int4) == default  # 196 and 200 blocks
    assert tile(12672, 128, int4) == small and tile(12800, 128, int4) == default  # 198 and 200 blocks
    assert tile(8192, 256, int4) == default and tile(12672, 256, int4) == default  # 256 and 396 blocks
    assert tile(12800, 256, int4) == one_group and tile(28672, 128, int4) == one_group  # 400 and 448 blocks
    assert tile(20480, 192, int4) == default  # 480 blocks, but 192 rows are not a whole number of 128-row tiles
    assert tile(4096, 256, dict(W_dtype="uint4", with_scaling=True, group_size=128)) == small
    # zeros, tables or several groups a superblock: 64 x 64 below 132 blocks, two warpgroups below 264
    for fields in (uint4z, dict(W_dtype="nf4"), dict(int4, group_size=32)):
        assert tile(4096, 256, fields) == small and tile(4224, 256, fields) == two_groups  # 128 and 132 blocks
        assert tile(8192, 256, fields) == two_groups and tile(8448, 256, fields) == one_group  # 256 and 264
    assert tile(11008, 192, uint4z) == default and tile(7168, 192, uint4z) == small  # 258 and 168 blocks at 192 rows
    # 2-bit: two warpgroups of 64 weight rows from 132 blocks, else 4 stages
    assert tile(8192, 256, dict(W_dtype="int2")) == (64, 2, 2, 3, 1) and tile(8192, 128, dict(W_dtype="int2")) == (64, 4, 1, 4, 1)
    assert tile(8448, 128, dict(W_dtype="int2")) == (64, 2, 2, 3, 1) and tile(8320, 128, dict(W_dtype="int2"))[3] == 4  # 132, 130
    # 16-bit: 4 stages up to 264 blocks, the default up to 396, then two warpgroups (4 stages at 192 rows)
    fp16 = dict(W_dtype="float16")
    assert tile(8448, 256, fp16)[3] == 4 and tile(8576, 256, fp16)[:4] == (64, 4, 1, 3)  # 264 and 268 blocks
    assert tile(12672, 256, fp16)[:4] == (64, 4, 1, 3) and tile(12800, 256, fp16)[:3] == (128, 2, 2)  # 396 and 400
    assert tile(20480, 192, fp16)[:4] == (64, 4, 1, 4)
    # other widths keep the default
    assert tile(28672, 256, dict(W_dtype="int8")) == tile(4096, 256, dict(W_dtype="int8")) == (64, 4, 1, 3, 1)
    # int8 A (mma.sync): K split in 2 below 132 blocks of 64 rows, 128-row blocks for int8 weights from 132 of them
    assert tile(8192, 128, dict(W_dtype="int8", **int8a)) == ("sync", 64, 4, 2)  # 128 blocks
    assert tile(8448, 128, dict(W_dtype="int8", **int8a)) == ("sync", 64, 4, 1)  # 132 blocks
    assert tile(16896, 128, dict(W_dtype="int8", **int8a)) == ("sync", 128, 2, 1)  # 132 blocks of 128 rows
    assert tile(16768, 128, dict(W_dtype="int8", **int8a)) == ("sync", 64, 4, 1)  # 131
    assert tile(28672, 192, dict(W_dtype="int8", **int8a)) == ("sync", 64, 4, 1)  # 192 rows: no 128-row blocks
    assert tile(28672, 256, dict(W_dtype="int2", **int8a)) == ("sync", 64, 2, 1)  # 2 stages: 256-k superblocks
    assert tile(4096, 256, dict(W_dtype="int2", **int8a)) == ("sync", 64, 2, 2)
    assert tile(28672, 256, dict(W_dtype="int4", **int8a)) == ("sync", 64, 4, 1)  # 128 rows for int8 weights only
    # measured with int8 A only: float A on the other targets keeps 64-row blocks
    fp16_a = matmul_schedule(MatmulConfig(M=[256], N=28672, K=8192, W_dtype="int8"), 256, "sm_80")
    int8_a = matmul_schedule(MatmulConfig(M=[256], N=28672, K=8192, W_dtype="int8", **int8a), 256, "sm_80")
    assert (fp16_a.block_m, int8_a.block_m) == (64, 128)


def test_decode_split_k_fills_a_wave():
    """m <= 16 splits K over up to 4 blocks (8 superblocks a split or more); a long K (16 or more) is
    split further while one wave of the kernel (3 blocks an SM of the target's reference device) holds
    the blocks: 8192x28672 on sm_90a (132 SMs) 64 column tiles x 6, on sm_80 (108 SMs) 64 x 4."""
    from lowbit.compiler.schedule import matmul_schedule

    def split(N, K, target="sm_90a"):
        cfg = MatmulConfig(M=[16], N=N, K=K, W_dtype="int4", with_scaling=True, group_size=128)
        return matmul_schedule(cfg, 16, target).split_k

    assert split(8192, 8192) == 4
    assert split(8192, 28672) == 6
    assert split(8192, 28672, "sm_80") == 4
    assert split(1024, 16384) == 8
    assert split(512, 1024) == 1


def test_decode_split_128k_steps_and_4bit_long_k():
    """16 rows: 1- and 2-bit weights may split K down to 8 iterations of 128 k and up to 2 blocks an SM
    (with int8 A from K = 4096), and take the split with the fewest rounds of blocks an SM per split;
    4-bit weights with float A and one group a superblock or none take 8 splits where K has 64
    superblocks and 8 splits fit one wave of 3 blocks an SM (int4 and uint4 without zeros then take the
    ring split above 2 an SM); small groups and int8 A keep the superblock count."""
    from lowbit.compiler.schedule import matmul_schedule

    def split(N, K, target="sm_90a", **fields):
        return matmul_schedule(MatmulConfig(M=[16], N=N, K=K, **fields), 16, target).split_k

    int4 = dict(W_dtype="int4", with_scaling=True, group_size=128)
    uint4_zeros = dict(int4, W_dtype="uint4", with_zeros=True)
    int8_a = dict(A_dtype="int8", accum_dtype="int32", out_dtype="int32")
    assert split(4096, 14336, **int4) == 8 and split(4096, 11008, **int4) == 8  # 112, 86 superblocks
    assert split(4096, 8192, **int4) == 8 and split(4096, 8064, **int4) == 4  # 64, then 63
    assert split(6272, 8192, **uint4_zeros) == 8 and split(6400, 8192, **uint4_zeros) == 4  # 49 x 8 <= 396 < 50 x 8
    assert split(4096, 14336, **uint4_zeros) == 8 and split(4096, 14336, W_dtype="nf4") == 8
    assert split(6144, 14336, **int4) == 4 and split(6144, 14336, **uint4_zeros) == 8  # 48 tiles: the ring split
    assert split(6272, 14336, **uint4_zeros) == 8 and split(6400, 14336, **uint4_zeros) == 6  # 49 x 8 <= 396 < 50 x 8
    assert split(4096, 14336, "sm_80", **uint4_zeros) == 8 and split(4096, 14336, "sm_80", **int4) == 6  # 32 x 8 > 216
    assert split(4096, 14336, **dict(int4, group_size=32)) == 6 and split(4096, 14336, W_dtype="int4", **int8_a) == 6
    assert split(4096, 4096, W_dtype="int2") == 4 and split(4096, 4096, W_dtype="int2", **int8_a) == 4  # 32 steps of 128 k
    uint2 = dict(W_dtype="uint2", with_scaling=True, group_size=128)  # 2 groups a superblock: no ring split after
    assert split(4096, 4096, **uint2) == 4 and split(14336, 4096, **uint2) == 2  # 112 x 4 > 264
    assert split(17024, 4096, **uint2) == 2  # 133 tiles: more splits than the superblocks' 2 exceed 2 blocks an SM
    assert split(4096, 2048, W_dtype="int2") == 2 and split(4096, 3968, W_dtype="int2") == 3  # 16, 31 steps
    assert split(4096, 2048, W_dtype="int2", **int8_a) == 1 and split(4096, 3968, W_dtype="int2", **int8_a) == 2
    # the fewest rounds of blocks an SM per split, ceil(tiles x split / 132) / split, then the fewest splits
    assert split(8448, 4096, W_dtype="int2") == 2  # 66 tiles: 1 round for 2 splits, 2 for 4, a tie
    assert split(8576, 4096, W_dtype="int2") == 3  # 67 tiles: 2 rounds for 3 splits beat 2 for 2
    assert split(14336, 4096, W_dtype="int2") == 2 and split(14336, 2048, W_dtype="int2") == 1  # 2 rounds for 2: a tie
    assert split(10240, 4096, W_dtype="int2") == 3 and split(8192, 2048, W_dtype="int2") == 2  # 80 tiles: 2/3 < 2/2
    assert split(4096, 4096, W_dtype="int1") == 4 and split(2048, 8192, W_dtype="int1") == 4  # 8, 16 superblocks
    assert split(8192, 4096, W_dtype="int1") == 2  # 64 tiles: 4 splits are 2 rounds
    assert split(4096, 2048, W_dtype="int1", **int8_a) == 1 and split(4096, 4096, W_dtype="int1", **int8_a) == 4


def test_decode_split_table_formats():
    """16 rows, nf4 and fp4 (float A, one group a superblock or none): the least loaded split, the
    fewest on a tie, counting 2 blocks an SM as fast as 1 (variant 61); scaled grids of more tiles than
    SMs and small groups keep the superblock rule."""
    from lowbit.compiler.schedule import matmul_schedule

    def split(N, K, **fields):
        return matmul_schedule(MatmulConfig(M=[16], N=N, K=K, **fields), 16, "sm_90a").split_k

    for table in ("nf4", "fp4_e2m1"):
        assert split(1024, 6144, W_dtype=table) == 6  # 48 steps of 128 k: 6 splits of 8
        assert split(10240, 12288, W_dtype=table) == 8  # 80 tiles: 5 blocks an SM, (5/2) / 8 < 1 / 3 for 3 or 6 splits
        assert split(22016, 11008, W_dtype=table) == 3  # 172 tiles: 4 blocks an SM, (4/2) / 3, a tie with 6 splits' 4 / 6
        assert split(32000, 5120, W_dtype=table) == 1  # 250 tiles: 1 and 2 splits load an SM alike
        assert split(8192, 8192, W_dtype=table) == 4  # 64 tiles: 4 and 8 splits tie
        scaled = dict(W_dtype=table, with_scaling=True, group_size=128)
        assert split(1024, 6144, **scaled) == 6 and split(8192, 8192, **scaled) == 4  # 64 tiles: 4, 6 and 8 tie
        assert split(11008, 14336, **scaled) == 3  # 86 tiles: 2 blocks an SM, 1 / 3, a tie with 6 splits' 2 / 6
        assert split(8192, 28672, **scaled) == 4  # 56 superblocks a split: no limit on a split's length
        assert split(16896, 5120, **scaled) == 2 and split(17024, 5120, **scaled) == 4  # 132 tiles, then 133
        assert split(11008, 14336, **dict(scaled, group_size=64)) == 4  # 2 groups a superblock


def test_decode_wide_n_fits_one_wave():
    """m <= 16 with more column tiles than half a wave: integer weights without zeros take one iteration
    of weights ahead (4 blocks an SM) and 2 splits, one wave, and so do g128 'original' zeros (applied
    before the mma); float16 takes the 2 splits with two iterations ahead; other zeros and decode tables
    keep the 4 splits, and so do small groups, whose parameters already hold the prefetch to one
    iteration (no registers to free for a 4th block); an N too wide for one wave either way takes one
    split (test_decode_wider_than_wave_split)."""
    from lowbit.compiler.schedule import matmul_schedule

    def sched(N, fields, target="sm_90a", K=8192, **overrides):
        s = matmul_schedule(MatmulConfig(M=[16], N=N, K=K, **fields), 16, target, **overrides)
        return s.split_k, s.w_prefetch

    int4 = dict(W_dtype="int4", with_scaling=True, group_size=128)
    assert sched(28672, int4) == (2, 1)
    assert sched(28672, int4, K=2048) == (2, 1) and sched(28672, int4, K=1920) == (1, 2)  # 16 superblocks, then 15
    assert sched(28672, dict(int4, group_size=64)) == (2, 1)
    assert sched(28672, dict(int4, group_size=32)) == (4, 1)  # the parameters already hold the prefetch to 1
    # on the register path: by default the ring rule splits it once (test_ring_split_schedule_rule)
    assert sched(28672, dict(W_dtype="int2", A_dtype="int8", accum_dtype="int32", out_dtype="int32"), w_smem=0) == (2, 1)
    uint4_zeros = dict(int4, W_dtype="uint4", with_zeros=True)
    assert sched(28672, uint4_zeros) == (2, 1)  # 'original' zeros applied before the mma: registers to free
    assert sched(28672, dict(uint4_zeros, zeros_mode="rescale")) == (4, 2)  # zeros folded after the mma
    assert sched(28672, dict(W_dtype="nf4")) == (4, 2)
    assert sched(28672, dict(W_dtype="float16")) == (2, 2)  # 2 splits, both iterations ahead
    assert sched(8192, dict(W_dtype="float16"), split_k=3) == (3, 2)
    assert sched(128256, int4) == (1, 1)  # wider than the wave (test_decode_wider_than_wave_split)
    assert sched(8192, int4) == (4, 2)
    assert sched(28672, int4, "sm_80") == (1, 2)  # 108 SMs: 224 tiles are wider than a wave of 2 splits


def test_decode_one_wave_split():
    """m <= 16, 4-bit integer weights on more 128-column tiles than SMs but too few for the wide-N
    schedule: one iteration of weights ahead and the most splits, 3 or 2, that fit one wave of 4
    blocks an SM; not where K has at most 40 superblocks (the ring's single split, or the old 4 splits
    with zeros), nor small groups, decode tables or 16-bit weights."""
    from lowbit.compiler.schedule import matmul_schedule

    def sched(N, fields, K=8192, target="sm_90a"):
        s = matmul_schedule(MatmulConfig(M=[16], N=N, K=K, **fields), 16, target)
        return s.split_k, s.w_prefetch, s.w_smem

    int4 = dict(W_dtype="int4", with_scaling=True, group_size=128)
    uint4_zeros = dict(int4, W_dtype="uint4", with_zeros=True)
    assert sched(16896, int4) == (2, 2, 1) and sched(16896, uint4_zeros) == (4, 2, 0)  # 132 tiles: as before
    assert sched(17024, int4) == (3, 1, 0) and sched(22528, int4) == (3, 1, 0)  # 133 and 176 tiles x 3 <= 528
    assert sched(22656, int4) == (2, 1, 0) and sched(25344, int4) == (2, 1, 0)  # 177 and 198 tiles x 2
    assert sched(25344, uint4_zeros) == (2, 1, 0) and sched(17920, uint4_zeros, K=28672) == (3, 1, 0)
    assert sched(17920, dict(int4, W_dtype="uint4")) == (3, 1, 0)
    assert sched(17920, int4, K=5120) == (1, 2, 1) and sched(17920, uint4_zeros, K=5120) == (4, 2, 0)  # 40 superblocks
    assert sched(17920, int4, K=5248) == (3, 1, 0)  # 41
    assert sched(17920, dict(int4, group_size=32)) == (4, 1, 0)
    assert sched(17920, dict(W_dtype="nf4")) == (8, 2, 0) and sched(17920, dict(W_dtype="float16")) == (4, 2, 0)
    assert sched(17920, int4, target="sm_80") == (3, 1, 0)  # 108 SMs: 140 x 3 = 420 <= 432


def test_decode_wider_than_wave_split():
    """m <= 16, 2-, 4- and 8-bit integer and 16-bit weights on more 128-column tiles than the wide-N
    schedule's 2 splits fit in a wave of 4 blocks an SM (above 264 tiles on 132 SMs): one split; int4
    with groups one iteration of weights ahead where 4 blocks an SM run fewer rounds of the tiles than
    3, else two; not decode tables or 1-bit weights."""
    from lowbit.compiler.schedule import matmul_schedule

    def sched(N, fields, K=8192, target="sm_90a"):
        s = matmul_schedule(MatmulConfig(M=[16], N=N, K=K, **fields), 16, target)
        return s.split_k, s.w_prefetch

    int4 = dict(W_dtype="int4", with_scaling=True, group_size=128)
    assert sched(33792, int4) == (2, 1) and sched(33920, int4) == (1, 2)  # 264 tiles (wide N), then 265
    assert sched(50688, int4) == (1, 2) and sched(50816, int4) == (1, 1)  # 396 tiles: 3 an SM; 397: 4 an SM
    assert sched(67584, int4) == (1, 1) and sched(67712, int4) == (1, 2)  # 528 tiles: 1 round of 4; 529: 2 and 2
    assert sched(128256, int4, K=4096) == (1, 1) and sched(151936, int4, K=3584) == (1, 2)  # 8 an SM; 9
    assert sched(41472, int4, target="sm_80") == (1, 2) and sched(41600, int4, target="sm_80") == (1, 1)  # 108 SMs
    assert sched(41600, int4) == (1, 2)  # 325 tiles on 132 SMs: 3 an SM
    for fields in (dict(int4, W_dtype="uint4"), dict(int4, W_dtype="uint4", with_zeros=True), dict(W_dtype="int4"),
                   dict(W_dtype="int2"), dict(W_dtype="uint2"),
                   dict(W_dtype="int2", A_dtype="int8", accum_dtype="int32", out_dtype="int32"),
                   dict(W_dtype="int8"), dict(W_dtype="int8", A_dtype="int8", accum_dtype="int32", out_dtype="int32"),
                   dict(W_dtype="float16")):
        assert sched(57344, fields) == (1, 2), fields
    assert sched(57344, dict(int4, group_size=32)) == (1, 1)  # small groups: their parameters hold one ahead
    assert sched(57344, dict(W_dtype="nf4")) == (2, 2) and sched(57344, dict(W_dtype="fp4_e2m1"))[0] > 1
    assert sched(57344, dict(W_dtype="int1")) == (2, 2)  # _decode_split's


def test_attention_default_fits_every_target():
    """The default attention schedule fits the shared memory a block may use on every target: where the
    H100's choice does not (head dim 128 on sm_80's 163 KB with 8 warps, on sm_86/89's 99 KB with 64-key
    tiles), 4 warps and smaller K/V tiles; the H100 keeps its measured choice."""
    from lowbit.compiler.schedule import SHARED_OPTIN, attention_schedule, attention_smem_bytes

    for target, limit in SHARED_OPTIN.items():
        for dim in (64, 80, 128, 256):
            for causal in (False, True):
                for batch, seq_len in ((1, 512), (8, 8192)):
                    cfg = FlashAttenConfig(batch=batch, heads=32, seq_len=seq_len, dim=dim, is_causal=causal)
                    assert attention_smem_bytes(cfg, attention_schedule(cfg, target)) <= limit, (target, cfg)
    big = FlashAttenConfig(batch=8, heads=32, seq_len=8192, dim=128)
    assert (attention_schedule(big, "sm_90a").warps, attention_schedule(big, "sm_90a").block_kv) == (8, 64)
    assert (attention_schedule(big, "sm_80").warps, attention_schedule(big, "sm_80").block_kv) == (4, 64)
    assert (attention_schedule(big, "sm_86").warps, attention_schedule(big, "sm_86").block_kv) == (4, 32)
    expect(ValueError, ["shared memory", "sm_86"], lambda: attention_schedule(big, "sm_86", block_kv=64))


def test_scale_after_schedule_rule():
    """scale_after=0 (dequantize before the mma) is a choice of the decode blocks only. It is the default
    for 16-row blocks whose superblock spans several groups and for decode blocks with g128 'original'
    zeros (with min_blocks 5 at 8 rows, 4 at 16); 1 elsewhere; 0 is refused for prefill blocks and the
    wgmma kernel, other values never."""
    from lowbit.compiler.schedule import matmul_schedule

    def cfg(W_dtype="int4", group_size=32, **kw):
        return MatmulConfig(M=[1, 16, 4096], N=512, K=1024, W_dtype=W_dtype, with_scaling=True,
                            group_size=group_size, **kw)

    def place(c, bucket, **overrides):
        sched = matmul_schedule(c, bucket, "sm_90a", **overrides)
        return sched.scale_after, sched.min_blocks

    assert [place(cfg(), b) for b in (1, 16, 4096)] == [(1, 0), (0, 0), (1, 0)]
    several = [cfg(group_size=64), cfg("int2", 128), cfg("uint2", 64, with_zeros=True), cfg("int1", 256),
               cfg("nf4", 64), cfg("fp4_e2m1", 32), cfg("int8", 32)]
    assert all(place(c, 16) == (0, 0) for c in several)
    rescale = cfg("uint4", 128, with_zeros=True, zeros_mode="rescale")
    one = [cfg(group_size=128), rescale, cfg("int2", 256), cfg("int1", 512), cfg("int8", 64), cfg(group_size=-1),
           MatmulConfig(M=[16], N=512, K=1024, W_dtype="int4")]
    assert all(place(c, 16) == (1, 0) for c in one)
    zeros = cfg("uint4", 128, with_zeros=True)  # one group a superblock, 'original' zeros
    assert (place(zeros, 1), place(zeros, 16)) == ((0, 5), (0, 4))
    assert all(place(c, 1) == (1, 0) for c in (cfg(group_size=128), rescale, cfg("uint4", 64, with_zeros=True)))
    assert place(zeros, 1, min_blocks=0) == (0, 0) and place(cfg(), 16, scale_after=1) == (1, 0)
    assert place(cfg(), 1, scale_after=0) == (0, 0)
    assert place(cfg(), 16, block_m=32) == (1, 0)  # prefill blocks keep the fold
    expect(ValueError, ["min_blocks=9", "allowed"], lambda: place(cfg(), 1, min_blocks=9))
    expect(ValueError, ["scale_after=0", "block_m <= 16"], lambda: place(cfg(), 4096, scale_after=0))
    expect(ValueError, ["scale_after=0"], lambda: place(cfg(), 1, wgmma=1, scale_after=0))
    expect(ValueError, ["scale_after=2", "allowed"], lambda: place(cfg(), 1, scale_after=2))


def test_offset_decode_schedule_rule():
    """offset_decode=1 (uint4 codes decoded to 16 + code, scale and zero in one fma) is the default for
    g128 'original' zeros in 8-row blocks and in 16-row blocks holding one iteration of weights ahead
    (the wide-N schedule), 0 elsewhere; 1 is refused outside uint4 'original' zeros scaled before the
    mma, naming what is allowed."""
    from lowbit.compiler.schedule import matmul_schedule

    def cfg(W_dtype="uint4", N=512, zeros_mode="original", group_size=128):
        return MatmulConfig(M=[1, 16, 4096], N=N, K=8192, W_dtype=W_dtype, with_scaling=True, with_zeros=True,
                            zeros_mode=zeros_mode, group_size=group_size)

    def offset(c, bucket, **overrides):
        sched = matmul_schedule(c, bucket, "sm_90a", **overrides)
        return sched.offset_decode, sched.w_prefetch

    assert offset(cfg(), 1) == (1, 2)
    assert offset(cfg(N=28672), 16) == (1, 1)  # wide N: one iteration ahead
    assert offset(cfg(N=8192), 16) == (0, 2)  # two ahead: the 128-register cap would spill
    assert offset(cfg(group_size=-1), 1)[0] == 1
    assert offset(cfg(), 4096)[0] == 0
    others = [cfg("uint2", group_size=256), cfg(zeros_mode="rescale"), cfg(zeros_mode="quantized"), cfg(group_size=64)]
    assert [offset(c, 1)[0] for c in others] == [0, 0, 0, 0]
    assert offset(cfg(), 1, offset_decode=0)[0] == 0 and offset(cfg(N=8192), 16, offset_decode=1)[0] == 1
    expect(ValueError, ["offset_decode=1", "uint4", "scale_after=0"], lambda: offset(cfg(), 1, scale_after=1, offset_decode=1))
    expect(ValueError, ["offset_decode=1", "W_dtype=uint2"], lambda: offset(cfg("uint2", group_size=256), 1, offset_decode=1))
    expect(ValueError, ["offset_decode=1", "block_m <= 16"], lambda: offset(cfg(), 4096, offset_decode=1))
    expect(ValueError, ["offset_decode=2", "allowed: 0, 1"], lambda: offset(cfg(), 1, offset_decode=2))
    # int4 (scale only) may take it when asked, before the mma; its default stays the fold (variant 39)
    int4 = MatmulConfig(M=[1], N=512, K=8192, W_dtype="int4", with_scaling=True, group_size=128)
    assert offset(int4, 1)[0] == 0 and offset(int4, 1, scale_after=0, offset_decode=1)[0] == 1
    expect(ValueError, ["offset_decode=1", "int4", "scale_after=0"], lambda: offset(int4, 1, offset_decode=1))
    expect(ValueError, ["offset_decode=1", "zeros_mode=rescale"],
           lambda: offset(cfg(zeros_mode="rescale"), 1, scale_after=0, offset_decode=1))
