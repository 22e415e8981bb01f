"""lowbit.Linear, GPTQ repacking, lowbit.quantize and lowbit.replace_linear (docs/linear.md, SPEC.md "Linear").

References are independent of lowbit's own decoding: the matmul references come from reference.py (written
from SPEC.md), and the AutoGPTQ packer below is written from the AutoGPTQ layout description (qweight int32
[K/8, N] with k = 8r + j in nibble j of row r; qzeros int32 [K/G, N/8] holding zero - 1 in nibble j of column c
for n = 8c + j), not from lowbit.linear. CPU tests run the MLIR CPU backend; ``@pytest.mark.gpu`` ones need CUDA.
"""
from __future__ import annotations

import copy
import io
import logging
import math

import pytest
import torch

import lowbit
from lowbit import Linear, MatmulConfig
from reference import (LOGICAL_RANGE, SPEC_NF4, TORCH, assert_close, dequantize, e2m1_value, expect, matmul_reference,
                       poisoned_output, random_logical)

BAD = (TypeError, ValueError)


# ------------------------------------------------------------------------------------------ helpers


def random_params(cfg, g):
    """Logical (weight, scale, zeros, bias) of a config, test-side (the ranges of SPEC.md)."""
    N, K = cfg.N, cfg.K
    G = K if cfg.group_size == -1 else cfg.group_size
    W = random_logical(cfg.W_dtype, (N, K), g)
    scale = zeros = bias = None
    if cfg.with_scaling:
        amp = {"fp4_e2m1": 6.0, "nf4": 1.0}.get(cfg.W_dtype, max(map(abs, LOGICAL_RANGE.get(cfg.W_dtype, (1, 1)))))
        scale = ((0.25 + torch.rand(N, K // G, generator=g)) / amp).to(torch.float16)
    if cfg.with_zeros:
        hi = LOGICAL_RANGE[cfg.W_dtype][1]
        if cfg.zeros_mode == "quantized":
            zeros = torch.randint(0, hi + 1, (N, K // G), generator=g)
        elif cfg.zeros_mode == "rescale":
            zeros = (torch.rand(N, K // G, generator=g) * hi * scale.double()).to(torch.float16)
        else:
            zeros = (torch.rand(N, K // G, generator=g) * hi).to(torch.float16)
    if cfg.with_bias:
        if cfg.out_dtype in ("int32", "int8"):
            bias = torch.randint(-300, 301, (N,), generator=g, dtype=torch.int32)
        else:
            bias = (2 * torch.randn(N, generator=g)).to(TORCH[cfg.out_dtype])
    return W, scale, zeros, bias


def random_A(cfg, lead, g):
    if cfg.A_dtype == "int8":
        return torch.randint(-8, 9, (*lead, cfg.K), generator=g).to(torch.int8)
    return (2 * torch.rand(*lead, cfg.K, generator=g) - 1).to(torch.float16)


def weight_reference(A, Wdeq, bias=None, out_dtype="float16", accum_dtype="float16"):
    """matmul_reference for a float64 weight [N, K] (rounded to float16 once, as a float16 decoder does)."""
    N, K = Wdeq.shape
    cfg = MatmulConfig(M=None, N=N, K=K, accum_dtype=accum_dtype, out_dtype=out_dtype, with_bias=bias is not None)
    return matmul_reference(cfg, A, Wdeq, bias=bias)


# ------------------------------------------------------------------------------------------ forward

FORWARD_CASES = {
    # name: (Linear kwargs, leading dims of A)
    "uint4-g32-original-bias": (dict(in_features=128, out_features=48, bias=True, W_dtype="uint4", group_size=32,
                                     with_zeros=True), (2, 3)),
    "int4-scale-accf32": (dict(in_features=96, out_features=40, W_dtype="int4", accum_dtype="float32"), (5,)),
    "nf4-g64-out32": (dict(in_features=128, out_features=24, W_dtype="nf4", group_size=64, out_dtype="float32",
                           accum_dtype="float32"), (1,)),
    "uint2-g32-quantized": (dict(in_features=64, out_features=32, W_dtype="uint2", group_size=32, with_zeros=True,
                                 zeros_mode="quantized"), (2, 1, 3)),
    "uint1-rescale-bias": (dict(in_features=64, out_features=16, bias=True, W_dtype="uint1", with_zeros=True,
                                zeros_mode="rescale"), (4,)),
    "float16": (dict(in_features=80, out_features=24, bias=True), (3, 2)),
    "int8W-scale": (dict(in_features=64, out_features=16, W_dtype="int8"), (7,)),
    "int8A-int4W-int32": (dict(in_features=64, out_features=32, bias=True, A_dtype="int8", W_dtype="int4",
                               accum_dtype="int32", out_dtype="int32"), (2, 3)),
}


@pytest.mark.parametrize("name", sorted(FORWARD_CASES))
def test_forward_matches_reference(name, rng):
    kwargs, lead = FORWARD_CASES[name]
    lin = Linear(**kwargs)
    cfg = lin.config
    assert (cfg.N, cfg.K, cfg.layout) == (kwargs["out_features"], kwargs["in_features"], "nt")
    W, scale, zeros, bias = random_params(cfg, rng)
    assert lin.load_and_transform_weight(W, scale, zeros, bias) is lin
    A = random_A(cfg, lead, rng)
    ref = matmul_reference(cfg, A, W, scale, zeros, bias)
    out = lin(A)
    assert out.shape == (*lead, cfg.N)
    assert_close(out, ref, cfg.out_dtype, cfg.accum_dtype, cfg.K, msg=name)
    given = poisoned_output((*lead, cfg.N), cfg.out_dtype, expected=ref)
    assert lin(A, output=given) is given
    assert_close(given, ref, cfg.out_dtype, cfg.accum_dtype, cfg.K, msg=name + " output=")


def test_with_scaling_default():
    assert Linear(64, 16, W_dtype="uint4", with_zeros=True).with_scaling is True
    assert Linear(64, 16, W_dtype="int4").with_scaling is True
    assert Linear(64, 16, W_dtype="nf4").with_scaling is True
    assert Linear(64, 16, W_dtype="int8").with_scaling is True
    assert Linear(64, 16).with_scaling is False  # float16 W
    assert Linear(64, 16, A_dtype="int8", W_dtype="int4", accum_dtype="int32", out_dtype="int32").with_scaling is False
    assert Linear(64, 16, W_dtype="int4", with_scaling=False).with_scaling is False
    assert Linear(64, 16, W_dtype="uint4", with_zeros=True).zeros_mode == "original"  # None means 'original'


def test_forward_non_contiguous_and_empty(rng):
    lin = Linear(64, 32, W_dtype="int4", group_size=32)
    W, s, _, _ = random_params(lin.config, rng)
    lin.load_and_transform_weight(W, s)
    A = random_A(lin.config, (5,), rng).repeat(1, 2)[:, ::2]  # a strided [5, 64] view
    assert not A.is_contiguous()
    ref = matmul_reference(lin.config, A.contiguous(), W, s)
    assert_close(lin(A), ref, "float16", "float16", 64, msg="non-contiguous A")
    empty = lin(torch.empty(0, 3, 64, dtype=torch.float16))
    assert empty.shape == (0, 3, 32)


def test_dequantize_is_the_logical_weight(rng):
    for kwargs in (dict(W_dtype="uint4", group_size=32, with_zeros=True),
                   dict(W_dtype="uint2", group_size=32, with_zeros=True, zeros_mode="quantized"),
                   dict(W_dtype="fp4_e2m1"), dict(W_dtype="int1"), dict(W_dtype="int8"), dict()):
        lin = Linear(64, 24, **kwargs)
        W, s, z, _ = random_params(lin.config, rng)
        lin.load_and_transform_weight(W, s, z)
        expected, _ = dequantize(lin.config, W, s, z, round_weight=False)
        got = lin.dequantize(torch.float64)
        assert got.shape == (24, 64)
        assert torch.equal(got, expected), kwargs


@pytest.mark.parametrize("W_dtype", ["float16", "int4", "uint4", "nf4", "int1"])
def test_init_params(W_dtype, rng):
    kw = dict(W_dtype=W_dtype, bias=True)
    if W_dtype == "uint4":
        kw.update(with_zeros=True, group_size=32)
    lin = Linear(128, 32, **kw)
    assert all(int(b.abs().sum()) == 0 for b in lin.buffers())  # zero-filled until loaded
    assert lin.init_params(rng) is lin
    assert all(int((b != 0).sum()) > 0 for b in lin.buffers())
    A = random_A(lin.config, (4,), rng)
    out = lin(A)
    assert torch.isfinite(out).all()
    rms = float(out.double().pow(2).mean().sqrt())
    assert 0.05 < rms < 5, rms  # outputs of the size of the inputs
    ref = weight_reference(A, lin.dequantize(torch.float64), lin.bias)
    assert_close(out, ref, "float16", "float16", 128, msg=W_dtype)
    lin2 = Linear(128, 32, **kw).init_params(torch.Generator().manual_seed(5))
    lin3 = Linear(128, 32, **kw).init_params(torch.Generator().manual_seed(5))
    assert torch.equal(lin2.qweight, lin3.qweight)


# ------------------------------------------------------------------------------------------ opt_M


def test_opt_M_buckets(rng, monkeypatch):
    lin = Linear(64, 32, W_dtype="int4", opt_M=[64, 1, 16, 16])
    assert lin.config.M == (1, 16, 64) and lin.opt_M == [1, 16, 64]
    assert Linear(64, 32).config.M == (1, 16, 32, 64, 128, 256, 512)
    assert Linear(64, 32, opt_M=None).config.M == (1, 16, 32, 64, 128, 256, 512)
    single = Linear(64, 32, opt_M=32)
    assert single.config.M == (32,) and not single.config.static_M
    W, s, _, _ = random_params(lin.config, rng)
    lin.load_and_transform_weight(W, s)
    import lowbit.matmul as mm
    seen = []
    real = mm.kernel_for

    def spy(op, config, device, bucket=None, *rest, **kw):
        seen.append(bucket)
        return real(op, config, device, bucket, *rest, **kw)

    monkeypatch.setattr(mm, "kernel_for", spy)

    def run(layer, A):
        layer.matmul._kernels.clear()  # Matmul caches kernels per bucket and its last call's: look up afresh
        layer.matmul._last_call = None
        seen.clear()
        return layer(A)

    for lead, bucket in (((1,), 1), ((2,), 16), ((4, 4), 16), ((17,), 64), ((3, 30), 64), ((100,), 64)):
        assert lin.config.bucket_for(math.prod(lead)) == bucket
        A = random_A(lin.config, lead, rng)
        assert_close(run(lin, A), matmul_reference(lin.config, A, W, s), "float16", "float16", 64, msg=str(lead))
        assert seen == [bucket], (lead, seen)
    # an int opt_M still takes every m
    Ws = random_logical("float16", (32, 64), rng)
    single.load_and_transform_weight(Ws)
    for m in (1, 32, 77):
        A = random_A(single.config, (m,), rng)
        assert_close(run(single, A), matmul_reference(single.config, A, Ws), "float16", "float16", 64)
        assert seen == [32]


# ------------------------------------------------------------------------------------------ state_dict, dtypes


def _roundtrip(sd):
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf)


def test_state_dict_save_load(rng):
    kw = dict(in_features=128, out_features=32, bias=True, W_dtype="uint4", group_size=64, with_zeros=True,
              zeros_mode="quantized")
    lin = Linear(**kw)
    W, s, z, b = random_params(lin.config, rng)
    lin.load_and_transform_weight(W, s, z, b)
    sd = lin.state_dict()
    assert set(sd) == {"qweight", "scales", "zeros", "bias"}
    assert sd["qweight"].dtype == torch.int8 and sd["zeros"].dtype == torch.int8
    assert sd["scales"].dtype == torch.float16 and sd["bias"].dtype == torch.float16
    other = Linear(**kw)
    A = random_A(lin.config, (2, 3), rng)
    assert not torch.equal(other(A), lin(A))
    other.load_state_dict(_roundtrip(sd))
    for name, t in lin.state_dict().items():
        assert torch.equal(other.state_dict()[name], t), name
    assert torch.equal(other(A), lin(A))
    assert_close(other(A), matmul_reference(lin.config, A, W, s, z, b), "float16", "float16", 128)
    # the whole module pickles too
    buf = io.BytesIO()
    torch.save(lin, buf)
    buf.seek(0)
    whole = torch.load(buf, weights_only=False)
    assert torch.equal(whole(A), lin(A))
    # a state dict of another shape or config is refused
    with pytest.raises(RuntimeError):
        Linear(**{**kw, "group_size": 32}).load_state_dict(sd)
    with pytest.raises(RuntimeError):
        Linear(**{**kw, "bias": False}).load_state_dict(sd)
    with pytest.raises(RuntimeError):
        Linear(**{**kw, "zeros_mode": "original"}).load_state_dict(sd)


def test_state_dict_in_a_model(rng):
    def build():
        return torch.nn.Sequential(Linear(64, 32, W_dtype="int4", bias=True), torch.nn.ReLU(),
                                   Linear(32, 8, W_dtype="int2", group_size=32))

    a, b = build(), build()
    a[0].init_params(rng)
    a[2].init_params(rng)
    b.load_state_dict(_roundtrip(a.state_dict()))
    assert set(a.state_dict()) == {"0.qweight", "0.scales", "0.bias", "2.qweight", "2.scales"}
    A = random_A(a[0].config, (3,), rng)
    assert torch.equal(a(A), b(A))


def test_dtype_conversions_keep_buffer_dtypes(rng):
    lin = Linear(64, 32, bias=True, W_dtype="uint4", group_size=32, with_zeros=True, out_dtype="float32",
                 accum_dtype="float32")
    lin.init_params(rng)
    A = random_A(lin.config, (3,), rng)
    before = {k: v.clone() for k, v in lin.state_dict().items()}
    y = lin(A)
    dtypes = {"qweight": torch.int8, "scales": torch.float16, "zeros": torch.float16, "bias": torch.float32}
    for convert in (lambda m: m.half(), lambda m: m.float(), lambda m: m.double(), lambda m: m.bfloat16(),
                    lambda m: m.to(torch.float16), lambda m: m.to("cpu", torch.float64), lambda m: m.to("cpu")):
        assert convert(lin) is lin
        sd = lin.state_dict()
        assert {k: v.dtype for k, v in sd.items()} == dtypes
        for k, v in sd.items():
            assert torch.equal(v, before[k]), k
        assert torch.equal(lin(A), y)
    # float16 weights stay float16 too; a model's .half() leaves lowbit layers alone
    f = torch.nn.Sequential(Linear(64, 16, bias=True, out_dtype="float32", accum_dtype="float32")).float()
    assert f[0].qweight.dtype == torch.float16 and f[0].bias.dtype == torch.float32
    f.half()
    assert f[0].qweight.dtype == torch.float16 and f[0].bias.dtype == torch.float32


# ------------------------------------------------------------------------------------------ bad arguments

BAD_ARGS = [
    (dict(in_features=0), ValueError, ["in_features"]),
    (dict(in_features=64.0), TypeError, ["in_features"]),
    (dict(in_features=True), TypeError, ["in_features"]),
    (dict(out_features=-16), ValueError, ["out_features"]),
    (dict(out_features="16"), TypeError, ["out_features"]),
    (dict(bias=1), TypeError, ["bias"]),
    (dict(A_dtype="bfloat16"), ValueError, ["A_dtype"]),
    (dict(A_dtype=torch.float16), TypeError, ["A_dtype"]),
    (dict(W_dtype="int3"), ValueError, ["W_dtype"]),
    (dict(W_dtype=None), TypeError, ["W_dtype"]),
    (dict(accum_dtype="int32"), ValueError, ["accum_dtype"]),
    (dict(out_dtype="bfloat16"), ValueError, ["out_dtype"]),
    (dict(W_dtype="int4", group_size=48), ValueError, ["group_size"]),
    (dict(W_dtype="int4", group_size=128), ValueError, ["group_size"]),  # does not divide in_features=64
    (dict(W_dtype="int4", group_size="32"), TypeError, ["group_size"]),
    (dict(W_dtype="int4", group_size=32, with_scaling=False), ValueError, ["group_size", "with_scaling"]),
    (dict(W_dtype="int4", with_scaling="yes"), TypeError, ["with_scaling"]),
    (dict(with_scaling=True), ValueError, ["with_scaling"]),  # float16 W
    (dict(W_dtype="uint4", with_zeros=1), TypeError, ["with_zeros"]),
    (dict(W_dtype="int4", with_zeros=True), ValueError, ["with_zeros"]),
    (dict(W_dtype="uint4", with_zeros=True, zeros_mode="bogus"), ValueError, ["zeros_mode"]),
    (dict(W_dtype="uint4", with_zeros=True, zeros_mode=0), TypeError, ["zeros_mode"]),
    (dict(opt_M=[]), ValueError, ["opt_M"]),
    (dict(opt_M=[1, 0]), ValueError, ["opt_M"]),
    (dict(opt_M=[1, "16"]), TypeError, ["opt_M"]),
    (dict(opt_M=1.5), TypeError, ["opt_M"]),
    (dict(opt_M=True), TypeError, ["opt_M"]),
    (dict(out_features=3, W_dtype="uint1", with_zeros=True), ValueError, ["out_features"]),
    (dict(A_dtype="int8", W_dtype="nf4", accum_dtype="int32", out_dtype="int32"), ValueError, ["W_dtype"]),
]


@pytest.mark.parametrize("kwargs,exc,words", BAD_ARGS, ids=[str(i) for i in range(len(BAD_ARGS))])
def test_bad_constructor_arguments(kwargs, exc, words):
    full = dict(in_features=64, out_features=16)
    full.update(kwargs)
    expect(exc, words, lambda: Linear(**full))


def test_bad_forward_arguments(rng):
    lin = Linear(64, 16, W_dtype="int4")
    lin.init_params(rng)
    A = random_A(lin.config, (2,), rng)
    expect(TypeError, ["A", "float16", "float32"], lambda: lin(A.float()))
    expect(TypeError, ["A", "Tensor"], lambda: lin(A.tolist()))
    expect(ValueError, ["in_features=64", "[2, 32]"], lambda: lin(A[:, :32].contiguous()))
    expect(ValueError, ["in_features"], lambda: lin(torch.zeros((), dtype=torch.float16)))
    expect(ValueError, ["meta", "cpu", ".to("], lambda: lin(torch.empty(2, 64, dtype=torch.float16, device="meta")))
    expect(ValueError, ["output"], lambda: lin(A, output=torch.empty(2, 8, dtype=torch.float16)))
    expect(TypeError, ["output"], lambda: lin(A, output=torch.empty(2, 16, dtype=torch.float32)))


def test_bad_load_arguments(rng):
    lin = Linear(64, 16, bias=True, W_dtype="uint4", group_size=32, with_zeros=True)
    W, s, z, b = random_params(lin.config, rng)
    expect(ValueError, ["scales", "required"], lambda: lin.load_and_transform_weight(W))
    expect(ValueError, ["zeros", "required"], lambda: lin.load_and_transform_weight(W, s))
    expect(ValueError, ["weight", "[16, 64]"], lambda: lin.load_and_transform_weight(W.t(), s, z))
    expect(ValueError, ["uint4", "16"], lambda: lin.load_and_transform_weight(W + 1, s, z))
    expect(TypeError, ["weight"], lambda: lin.load_and_transform_weight(W.half(), s, z))
    expect(ValueError, ["scale"], lambda: lin.load_and_transform_weight(W, s[:, :1], z))
    expect(ValueError, ["bias"], lambda: lin.load_and_transform_weight(W, s, z, b[:8]))
    nob = Linear(64, 16, W_dtype="int4")
    Wi, si, _, _ = random_params(nob.config, rng)
    expect(ValueError, ["bias", "bias=False"], lambda: nob.load_and_transform_weight(Wi, si, bias=b))
    expect(ValueError, ["zeros", "with_zeros=False"], lambda: nob.load_and_transform_weight(Wi, si, zeros=z))
    expect(ValueError, ["scales", "with_scaling=False"],
           lambda: Linear(64, 16).load_and_transform_weight(W.half(), scales=s))
    # a failed load leaves the layer as it was; bias=None keeps the bias
    lin.load_and_transform_weight(W, s, z, b)
    A = random_A(lin.config, (3,), rng)
    y = lin(A)
    with pytest.raises(ValueError):
        lin.load_and_transform_weight(W + 1, s, z)
    assert torch.equal(lin(A), y)
    lin.load_and_transform_weight(W, s, z)
    assert torch.equal(lin(A), y)


# ------------------------------------------------------------------------------------------ GPTQ


def _to_int32(x: torch.Tensor) -> torch.Tensor:
    """int64 holding 32-bit patterns -> int32 with the same bits."""
    x = x & 0xFFFFFFFF
    return torch.where(x >= 2 ** 31, x - 2 ** 32, x).to(torch.int32)


def autogptq_pack(q, zero, scale, bits, g_idx=None, bias=None, zero_minus_one=True):
    """The AutoGPTQ layout, from its description.

    q: [N, K] integer codes in [0, 2^bits); zero: [N, K/G] integer zero points; scale: [N, K/G].
    The dequantized weight is (q[n, k] - zero[n, g_idx[k]]) * scale[n, g_idx[k]].
    """
    per = 32 // bits
    N, K = q.shape
    groups = zero.shape[1]
    intweight = q.t().to(torch.int64)  # [K, N]
    qweight = torch.zeros(K // per, N, dtype=torch.int64)
    for r in range(K // per):
        for j in range(per):
            qweight[r] |= intweight[r * per + j] << (bits * j)
    stored = (zero - 1 if zero_minus_one else zero).t().to(torch.int64)  # [K/G, N]
    qzeros = torch.zeros(groups, N // per, dtype=torch.int64)
    for c in range(N // per):
        for j in range(per):
            qzeros[:, c] |= (stored[:, c * per + j] & ((1 << bits) - 1)) << (bits * j)
    out = {"qweight": _to_int32(qweight), "qzeros": _to_int32(qzeros),
           "scales": scale.t().contiguous().to(torch.float16), "bits": bits}
    out["g_idx"] = g_idx if g_idx is not None else torch.arange(K, dtype=torch.int32) // (K // groups)
    if bias is not None:
        out["bias"] = bias
    return out


class GPTQModule(torch.nn.Module):
    """Stands for an AutoGPTQ QuantLinear: the packed tensors as buffers."""

    def __init__(self, packed):
        super().__init__()
        self.bits = packed["bits"]
        for k, v in packed.items():
            if isinstance(v, torch.Tensor):
                self.register_buffer(k, v)
        if "bias" not in packed:
            self.bias = None


def gptq_weight(q, zero, scale, g_idx):
    """float64 [N, K]: (q - zero[g_idx]) * scale[g_idx], with scale rounded to float16 as stored."""
    gi = g_idx.long()
    return (q.double() - zero.double()[:, gi]) * scale.half().double()[:, gi]


def test_autogptq_packer_layout():
    """The test-side packer itself: nibble j of qweight row r is k = 8r + j; qzeros holds zero - 1."""
    K, N = 16, 8
    q = (torch.arange(K) % 16).repeat(N, 1)  # q[n, k] = k
    zero = torch.arange(1, N + 1)[:, None].repeat(1, 1)  # zero[n] = n + 1, one group
    p = autogptq_pack(q, zero, torch.ones(N, 1), 4)
    assert p["qweight"].shape == (2, 8) and p["qweight"].dtype == torch.int32
    assert int(p["qweight"][0, 3]) == 0x76543210
    assert int(p["qweight"][1, 0]) == _to_int32(torch.tensor([0xFEDCBA98])).item()
    assert int(p["qzeros"][0, 0]) == 0x76543210  # zero - 1 = n
    p2 = autogptq_pack(torch.full((16, 32), 3), torch.full((16, 1), 2), torch.ones(16, 1), 2)
    assert p2["qweight"].shape == (2, 16) and int(p2["qweight"][1, 5]) == -1  # sixteen 2-bit 3s
    assert p2["qzeros"].shape == (1, 1) and int(p2["qzeros"][0, 0]) == 0x55555555  # sixteen 2 - 1


def _gptq_case(rng, bits, K, N, G, act_order, zero_hi, bias):
    hi = (1 << bits) - 1
    groups = K // G
    q = torch.randint(0, hi + 1, (N, K), generator=rng)
    zero = torch.randint(1, zero_hi + 1, (N, groups), generator=rng)
    zero[0, 0] = zero_hi
    scale = (0.01 + 0.05 * torch.rand(N, groups, generator=rng)).to(torch.float16)
    if act_order:
        P = torch.randperm(K, generator=rng)
        g_idx = torch.empty(K, dtype=torch.int32)
        g_idx[P] = (torch.arange(K) // G).to(torch.int32)
        assert not torch.equal(g_idx, (torch.arange(K) // G).to(torch.int32))
    else:
        g_idx = (torch.arange(K) // G).to(torch.int32)
    b = (0.5 * torch.randn(N, generator=rng)).to(torch.float16) if bias else None
    return q, zero, scale, g_idx, b


GPTQ_CASES = [  # bits, K, N, group_size, act_order, zeros_mode, bias
    (4, 256, 64, 128, False, "original", True),
    (4, 256, 64, 64, True, "original", False),
    (4, 128, 32, -1, False, "quantized", False),
    (4, 256, 48, 32, True, "quantized", True),
    (2, 128, 32, 32, False, "original", False),
    (2, 128, 64, 64, True, "quantized", True),
]


@pytest.mark.parametrize("bits,K,N,G,act_order,zeros_mode,bias", GPTQ_CASES)
def test_gptq_round_trip(bits, K, N, G, act_order, zeros_mode, bias, rng):
    hi = (1 << bits) - 1
    # 'original' takes every stored zero, including qzeros = hi (a zero point of hi + 1)
    zero_hi = hi + 1 if zeros_mode == "original" else hi
    q, zero, scale, g_idx, b = _gptq_case(rng, bits, K, N, K if G == -1 else G, act_order, zero_hi, bias)
    packed = autogptq_pack(q, zero, scale, bits, g_idx, b)
    lin = Linear(K, N, bias=bias, W_dtype=f"uint{bits}", group_size=G, with_zeros=True, zeros_mode=zeros_mode)
    assert lin.repack_from_gptq(GPTQModule(packed)) is lin
    assert (lin.perm is not None) == act_order
    Wref = gptq_weight(q, zero, scale, g_idx)
    assert torch.equal(lin.dequantize(torch.float64), Wref)
    A = random_A(lin.config, (2, 3), rng)
    ref = weight_reference(A, Wref, b)
    assert_close(lin(A), ref, "float16", "float16", K, msg="repack_from_gptq")
    # from a mapping (a state dict) and with everything inferred from the shapes
    inferred = Linear.from_gptq(packed, zeros_mode=zeros_mode)
    assert (inferred.in_features, inferred.out_features, inferred.W_dtype, inferred.group_size,
            inferred.with_bias) == (K, N, f"uint{bits}", G, bias)
    assert torch.equal(inferred(A), lin(A))
    # state dict round trip, act-order permutation included
    sd = _roundtrip(lin.state_dict())
    assert ("perm" in sd) == act_order
    fresh = Linear(K, N, bias=bias, W_dtype=f"uint{bits}", group_size=G, with_zeros=True, zeros_mode=zeros_mode)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh(A), lin(A))
    if act_order:  # loading a plain state dict drops the permutation again
        plain = Linear(K, N, bias=bias, W_dtype=f"uint{bits}", group_size=G, with_zeros=True, zeros_mode=zeros_mode)
        plain.init_params(rng)
        fresh.load_state_dict(plain.state_dict())
        assert fresh.perm is None
        assert torch.equal(fresh(A), plain(A))


def test_gptq_v2_format_and_no_g_idx(rng):
    q, zero, scale, g_idx, _ = _gptq_case(rng, 4, 128, 32, 32, False, 15, False)
    packed = autogptq_pack(q, zero, scale, 4, zero_minus_one=False)
    del packed["g_idx"]
    lin = Linear.from_gptq(packed, checkpoint_format="gptq_v2")
    assert torch.equal(lin.dequantize(torch.float64), gptq_weight(q, zero, scale, g_idx))
    # read as AutoGPTQ's zero - 1, every zero point is one higher
    lin1 = Linear.from_gptq(packed)
    assert torch.equal(lin1.dequantize(torch.float64), gptq_weight(q, zero + 1, scale, g_idx))


def test_gptq_rejections(rng):
    q, zero, scale, g_idx, _ = _gptq_case(rng, 4, 128, 32, 32, False, 16, False)
    packed = autogptq_pack(q, zero, scale, 4, g_idx)
    mk = lambda **kw: Linear(128, 32, **{**dict(W_dtype="uint4", group_size=32, with_zeros=True), **kw})
    expect(ValueError, ["16", "quantized", "original"], lambda: mk(zeros_mode="quantized").repack_from_gptq(packed))
    expect(ValueError, ["rescale"], lambda: mk(zeros_mode="rescale").repack_from_gptq(packed))
    expect(ValueError, ["uint4", "int4"], lambda: Linear(128, 32, W_dtype="int4").repack_from_gptq(packed))
    expect(ValueError, ["with_zeros"], lambda: Linear(128, 32, W_dtype="uint4", group_size=32, with_zeros=False)
           .repack_from_gptq(packed))
    expect(ValueError, ["bits=4", "uint2"], lambda: mk(W_dtype="uint2").repack_from_gptq(packed))
    expect(ValueError, ["4 groups", "group size 32", "group_size=64"], lambda: mk(group_size=64).repack_from_gptq(packed))
    expect(ValueError, ["qzeros"], lambda: mk().repack_from_gptq({k: v for k, v in packed.items() if k != "qzeros"}))
    expect(TypeError, ["qweight", "int32"], lambda: mk().repack_from_gptq({**packed, "qweight": packed["qweight"].long()}))
    expect(ValueError, ["qweight", "[16, 32]"], lambda: mk().repack_from_gptq({**packed, "qweight": packed["qweight"][:8]}))
    expect(ValueError, ["bias", "bias=False"], lambda: mk().repack_from_gptq({**packed, "bias": torch.zeros(32)}))
    expect(ValueError, ["checkpoint_format"], lambda: mk().repack_from_gptq(packed, checkpoint_format="awq"))
    # act-order g_idx that AutoGPTQ cannot produce
    expect(ValueError, ["g_idx", "group_size=32"], lambda: mk().repack_from_gptq({**packed, "g_idx": torch.zeros(128, dtype=torch.int32)}))
    expect(ValueError, ["g_idx", "[0, 4)"], lambda: mk().repack_from_gptq({**packed, "g_idx": g_idx + 1}))
    expect(ValueError, ["g_idx", "[128]"], lambda: mk().repack_from_gptq({**packed, "g_idx": g_idx[:64]}))
    expect(TypeError, ["g_idx"], lambda: mk().repack_from_gptq({**packed, "g_idx": g_idx.float()}))
    # 3-bit and 8-bit checkpoints have no lowbit type
    expect(ValueError, ["8-bit"], lambda: Linear.from_gptq({"qweight": torch.zeros(32, 32, dtype=torch.int32),
                                                           "qzeros": torch.zeros(1, 8, dtype=torch.int32),
                                                           "scales": torch.ones(1, 32)}))
    expect(ValueError, ["bits"], lambda: Linear.from_gptq({**packed, "bits": 2}))
    # a partly loaded layer is not left behind by a rejected repack
    lin = mk()
    lin.repack_from_gptq(packed)
    before = {k: v.clone() for k, v in lin.state_dict().items()}
    with pytest.raises(ValueError):
        lin.repack_from_gptq({**packed, "g_idx": torch.zeros(128, dtype=torch.int32)})
    assert all(torch.equal(before[k], v) for k, v in lin.state_dict().items())


# ------------------------------------------------------------------------------------------ quantize

QUANTIZE_CASES = [("int8", False, None), ("int4", False, None), ("int2", False, None), ("int1", False, None),
                  ("fp4_e2m1", False, None), ("nf4", False, None)] + [
    (u, True, m) for u in ("uint4", "uint2", "uint1") for m in ("original", "rescale", "quantized")]
# the largest gap between neighbouring grid values, in units of the scale
MAX_GAP = {name: max(b - a for a, b in zip(sorted(t), sorted(t)[1:]))
           for name, t in (("fp4_e2m1", [e2m1_value(c) for c in range(16)]), ("nf4", SPEC_NF4))}


def test_quantize_scales_span_each_group(rng):
    """Scales round up to float16, so that the grid covers each group's range (a float16 scale rounded
    to nearest falls short of it in about half the groups, and with integer zeros a weight at a
    group's edge then lands more than half a step from the grid)."""
    N, K, G = 64, 1024, 32
    w = torch.randn(N, K, generator=rng, dtype=torch.float64) * (1 + torch.rand(N, 1, generator=rng, dtype=torch.float64))
    groups = w.float().double().reshape(N, K // G, G)
    for W_dtype, zeros_mode in (("int4", None), ("int2", None), ("uint4", "quantized"), ("uint2", "original")):
        kw = {} if zeros_mode is None else dict(with_zeros=True, zeros_mode=zeros_mode)
        _, scale, _ = lowbit.quantize(w.float(), W_dtype, G, **kw)
        top = LOGICAL_RANGE[W_dtype][1]  # the largest code: scale = range / top before rounding
        if zeros_mode is None:
            span = groups.abs().amax(-1)
        else:
            lo, hi = groups.amin(-1), groups.amax(-1)
            span = hi.clamp(min=0) - lo.clamp(max=0) if zeros_mode == "quantized" else hi - lo
        assert bool((scale.double() * top >= span).all()), f"{W_dtype}: a scale rounded below its group's range"


@pytest.mark.parametrize("W_dtype,with_zeros,zeros_mode", QUANTIZE_CASES)
def test_quantize_every_dtype(W_dtype, with_zeros, zeros_mode, rng):
    N, K, G = 24, 128, 32
    w = torch.randn(N, K, generator=rng, dtype=torch.float64) * (1 + torch.rand(N, 1, generator=rng, dtype=torch.float64))
    kw = {} if zeros_mode is None else dict(zeros_mode=zeros_mode)
    values, scale, zeros = lowbit.quantize(w.float(), W_dtype, G, with_zeros=with_zeros, **kw)
    lo, hi = LOGICAL_RANGE[W_dtype]
    assert values.shape == (N, K) and not values.is_floating_point()
    assert int(values.min()) >= lo and int(values.max()) <= hi
    assert scale.shape == (N, K // G) and scale.dtype == torch.float16
    if with_zeros:
        assert zeros.shape == (N, K // G)
        if zeros_mode == "quantized":
            assert not zeros.is_floating_point() and int(zeros.min()) >= 0 and int(zeros.max()) <= hi
        else:
            assert zeros.dtype == torch.float16
    else:
        assert zeros is None
    cfg = MatmulConfig(M=None, N=N, K=K, W_dtype=W_dtype, group_size=G, with_scaling=True, with_zeros=with_zeros,
                       zeros_mode=zeros_mode)
    deq, _ = dequantize(cfg, values, scale, zeros, round_weight=False)
    s = scale.double().abs().repeat_interleave(G, dim=1)
    err = (deq - w.float().double()).abs()
    if W_dtype == "int1":
        assert torch.equal(values, torch.where(w.float() >= 0, 1, -1).to(values.dtype))
        mean_abs = w.float().double().abs().reshape(N, K // G, G).mean(-1)
        assert torch.allclose(scale.double(), mean_abs, rtol=2 ** -10)
    else:
        bound = 0.5 * MAX_GAP.get(W_dtype, 1.0) * s * 1.01 + 1e-6
        assert bool((err <= bound).all()), f"{W_dtype}: worst error / bound {float((err / bound).max()):.3g}"
    # the result loads into a Linear as it is
    lin = Linear(K, N, W_dtype=W_dtype, group_size=G, with_zeros=with_zeros, zeros_mode=zeros_mode)
    lin.load_and_transform_weight(values, scale, zeros)
    A = random_A(lin.config, (3,), rng)
    assert_close(lin(A), matmul_reference(lin.config, A, values, scale, zeros), "float16", "float16", K, msg=W_dtype)


def test_quantize_bad_arguments(rng):
    w = torch.randn(8, 64, generator=rng)
    expect(ValueError, ["with_zeros"], lambda: lowbit.quantize(w, "uint4", 32))
    expect(ValueError, ["with_zeros"], lambda: lowbit.quantize(w, "int4", 32, with_zeros=True))
    expect(ValueError, ["group_size"], lambda: lowbit.quantize(w, "int4", 48))
    expect(ValueError, ["W_dtype"], lambda: lowbit.quantize(w, "int3"))
    expect(ValueError, ["float16"], lambda: lowbit.quantize(w, "float16"))
    expect(TypeError, ["weight"], lambda: lowbit.quantize(w.int(), "int4"))
    expect(ValueError, ["zeros_mode"], lambda: lowbit.quantize(w, "uint4", with_zeros=True, zeros_mode="x"))


# ------------------------------------------------------------------------------------------ replace_linear


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.up = torch.nn.Linear(256, 128, bias=True)
        self.act = torch.nn.ReLU()
        self.block = torch.nn.Sequential(torch.nn.Linear(128, 256), torch.nn.GELU(), torch.nn.Linear(256, 96))
        self.odd = torch.nn.Linear(96, 128)  # 96 is no multiple of 128 (nor of 64): stays float
        self.lm_head = torch.nn.Linear(128, 32, bias=False)

    def forward(self, x):
        return self.lm_head(self.odd(self.block(self.act(self.up(x)))))


def _dequantized_copy(model, names, W_dtype="uint4", G=128, with_zeros=True, zeros_mode="original"):
    """float64 copy of `model` whose layers `names` hold the dequantized round-to-nearest weights (test-side)."""
    ref = copy.deepcopy(model).double()
    for name in names:
        lin = ref.get_submodule(name)
        values, scale, zeros = lowbit.quantize(model.get_submodule(name).weight.detach(), W_dtype, G,
                                               with_zeros=with_zeros, zeros_mode=zeros_mode)
        cfg = MatmulConfig(M=None, N=lin.out_features, K=lin.in_features, W_dtype=W_dtype, group_size=G,
                           with_scaling=True, with_zeros=with_zeros, zeros_mode=zeros_mode)
        with torch.no_grad():
            lin.weight.copy_(dequantize(cfg, values, scale, zeros, round_weight=False)[0])
    return ref


def test_replace_linear_sequential(rng, caplog):
    torch.manual_seed(int(torch.randint(0, 2 ** 31, (1,), generator=rng)))
    model = Tiny().half()
    original = copy.deepcopy(model)
    with caplog.at_level(logging.WARNING, logger="lowbit"):
        out, skipped = lowbit.replace_linear(model, return_skipped=True)
    assert out is model
    replaced = ["up", "block.0", "block.2", "lm_head"]
    for name in replaced:
        m = model.get_submodule(name)
        assert isinstance(m, Linear), name
        assert (m.W_dtype, m.group_size, m.with_zeros, m.zeros_mode, m.with_scaling) == ("uint4", 128, True, "original", True)
        ref_lin = original.get_submodule(name)
        assert m.with_bias == (ref_lin.bias is not None)
    assert type(model.odd) is torch.nn.Linear and model.odd.weight.dtype == torch.float16
    assert set(skipped) == {"odd"} and "group_size=128" in skipped["odd"] and "in_features=96" in skipped["odd"]
    assert "odd" in caplog.text
    ref = _dequantized_copy(original, replaced)
    for name in replaced:  # each layer multiplies by the dequantized weight of the test-side reference
        assert torch.allclose(model.get_submodule(name).dequantize(torch.float64), ref.get_submodule(name).weight,
                              rtol=0, atol=1e-12)
    x = (2 * torch.rand(4, 7, 256, generator=rng) - 1).half()
    with torch.no_grad():
        y, want, fp = model(x).double(), ref(x.double()), original.double()(x.double())
    rel = float((y - want).norm() / want.norm())
    assert rel < 3e-3, rel
    assert float((fp - want).norm() / want.norm()) > 3 * rel  # the quantization error is far larger


def test_replace_linear_skip_and_options(rng):
    outer = torch.nn.ModuleDict({"inner": Tiny().half()})
    _, skipped = lowbit.replace_linear(outer, skip=["lm_head", "inner.block.*"], group_size=64, return_skipped=True)
    model = outer["inner"]
    assert isinstance(model.up, Linear) and isinstance(model.odd, torch.nn.Linear)  # 96 % 64
    assert isinstance(model.block[0], torch.nn.Linear) and isinstance(model.lm_head, torch.nn.Linear)
    assert set(skipped) == {"inner.lm_head", "inner.block.0", "inner.block.2", "inner.odd"}
    assert skipped["inner.lm_head"] == "matched skip" and "in_features=96" in skipped["inner.odd"]
    assert model.up.group_size == 64
    m2 = Tiny().half()
    lowbit.replace_linear(m2, W_dtype="int4", group_size=-1, with_zeros=False, skip=lambda n, m: m.out_features == 32)
    assert all(isinstance(m2.get_submodule(n), Linear) for n in ("up", "block.0", "block.2", "odd"))
    assert isinstance(m2.lm_head, torch.nn.Linear) and m2.up.W_dtype == "int4" and not m2.up.with_zeros
    # a bare Linear comes back replaced; a shared layer stays shared
    bare = lowbit.replace_linear(torch.nn.Linear(128, 16).half())
    assert isinstance(bare, Linear)
    shared = torch.nn.Linear(128, 128).half()
    seq = torch.nn.Sequential(shared, torch.nn.ReLU(), shared)
    lowbit.replace_linear(seq)
    assert isinstance(seq[0], Linear) and seq[0] is seq[2]


def test_replace_linear_state_dict(rng):
    torch.manual_seed(int(torch.randint(0, 2 ** 31, (1,), generator=rng)))
    a = lowbit.replace_linear(Tiny().half())
    b = lowbit.replace_linear(Tiny().half())
    x = (2 * torch.rand(3, 256, generator=rng) - 1).half()
    assert not torch.equal(a(x), b(x))
    b.load_state_dict(_roundtrip(a.state_dict()))
    assert torch.equal(a(x), b(x))


def test_replace_linear_bad_arguments():
    expect(TypeError, ["model"], lambda: lowbit.replace_linear("model"))
    expect(ValueError, ["group_size"], lambda: lowbit.replace_linear(Tiny(), group_size=100))
    expect(TypeError, ["group_size"], lambda: lowbit.replace_linear(Tiny(), group_size=None))
    expect(ValueError, ["float16"], lambda: lowbit.replace_linear(Tiny(), W_dtype="float16"))
    expect(ValueError, ["W_dtype"], lambda: lowbit.replace_linear(Tiny(), W_dtype="int3"))
    expect(ValueError, ["with_zeros"], lambda: lowbit.replace_linear(Tiny(), W_dtype="int4"))
    expect(ValueError, ["zeros_mode"], lambda: lowbit.replace_linear(Tiny(), zeros_mode="bogus"))
    expect(ValueError, ["accum_dtype"], lambda: lowbit.replace_linear(Tiny(), accum_dtype="int32"))
    expect(TypeError, ["skip"], lambda: lowbit.replace_linear(Tiny(), skip=[1]))
    model = Tiny()
    with pytest.raises(BAD):
        lowbit.replace_linear(model, opt_M=[])
    assert isinstance(model.up, torch.nn.Linear)  # nothing was replaced


def _tiny_llama(transformers, vocab=256):
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                      tie_word_embeddings=False)
    return transformers.LlamaForCausalLM(config).half().eval()


def test_replace_linear_llama_cpu(rng):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(int(torch.randint(0, 2 ** 31, (1,), generator=rng)))
    model = _tiny_llama(transformers)
    qmodel = lowbit.replace_linear(copy.deepcopy(model), accum_dtype="float32")
    names = [n for n, m in qmodel.named_modules() if isinstance(m, Linear)]
    assert len(names) == 2 * 7 + 1
    deq = copy.deepcopy(model)
    for n in names:
        with torch.no_grad():
            deq.get_submodule(n).weight.copy_(qmodel.get_submodule(n).dequantize(torch.float16))
    ids = torch.randint(3, 256, (2, 9), generator=rng)
    with torch.no_grad():
        lq, ld, lf = (m(input_ids=ids).logits.double() for m in (qmodel, deq, model))
    rel = float((lq - ld).norm() / ld.norm())
    assert rel < 1e-2, rel
    assert float((lf - ld).norm() / ld.norm()) > 3 * rel
    out = qmodel.generate(input_ids=ids[:1], attention_mask=torch.ones_like(ids[:1]), max_new_tokens=3,
                          min_new_tokens=3, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 12)


# ------------------------------------------------------------------------------------------ GPU


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["uint4-g32-original-bias", "int4-scale-accf32", "uint2-g32-quantized",
                                  "float16", "int8A-int4W-int32"])
def test_gpu_forward_matches_reference(name, rng):
    kwargs, lead = FORWARD_CASES[name]
    lin = Linear(**kwargs)
    W, scale, zeros, bias = random_params(lin.config, rng)
    lin.load_and_transform_weight(W, scale, zeros, bias)
    cpu = copy.deepcopy(lin)
    assert lin.cuda() is lin and lin.qweight.is_cuda and all(b.is_cuda for b in lin.buffers())
    A = random_A(lin.config, lead, rng)
    ref = matmul_reference(lin.config, A, W, scale, zeros, bias)
    out = lin(A.cuda())
    assert out.is_cuda
    assert_close(out, ref, lin.out_dtype, lin.accum_dtype, lin.in_features, msg=name)
    expect(ValueError, ["cpu", "cuda"], lambda: lin(A))
    # a CUDA state dict loads into a CPU layer and back
    cpu2 = Linear(**kwargs)
    cpu2.load_state_dict(lin.state_dict())
    assert all(b.device.type == "cpu" for b in cpu2.buffers())
    assert torch.equal(cpu2(A), cpu(A))
    lin.half()
    assert {k: v.dtype for k, v in lin.state_dict().items()} == {k: v.dtype for k, v in cpu.state_dict().items()}


@pytest.mark.gpu
def test_gpu_buckets_and_gptq(rng):
    q, zero, scale, g_idx, b = _gptq_case(rng, 4, 512, 256, 128, True, 16, True)
    packed = {k: (v.cuda() if isinstance(v, torch.Tensor) else v)
              for k, v in autogptq_pack(q, zero, scale, 4, g_idx, b).items()}
    lin = Linear.from_gptq(packed, opt_M=[1, 16, 64])
    assert lin.qweight.is_cuda and lin.perm is not None and lin.perm.is_cuda
    Wref = gptq_weight(q, zero, scale, g_idx)
    for lead in ((1,), (3,), (16,), (2, 20), (200,)):
        A = random_A(lin.config, lead, rng)
        assert_close(lin(A.cuda()), weight_reference(A, Wref, b), "float16", "float16", 512, msg=str(lead))


@pytest.mark.gpu
def test_gpu_replace_linear_model(rng):
    torch.manual_seed(int(torch.randint(0, 2 ** 31, (1,), generator=rng)))
    model = Tiny().half().cuda()
    original = copy.deepcopy(model).cpu()
    lowbit.replace_linear(model)
    assert model.up.qweight.is_cuda
    names = [n for n, m in model.named_modules() if isinstance(m, Linear)]
    ref = _dequantized_copy(original, names)
    x = (2 * torch.rand(4, 7, 256, generator=rng) - 1).half()
    with torch.no_grad():  # the reference's parameters require grad: its output would too
        y, want = model(x.cuda()).double().cpu(), ref(x.double())
    assert float((y - want).norm() / want.norm()) < 3e-3


@pytest.mark.gpu
def test_gpu_llama_logits(rng):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(int(torch.randint(0, 2 ** 31, (1,), generator=rng)))
    model = _tiny_llama(transformers, vocab=512).cuda()
    qmodel = lowbit.replace_linear(copy.deepcopy(model))
    deq = copy.deepcopy(model)
    for n, m in qmodel.named_modules():
        if isinstance(m, Linear):
            with torch.no_grad():
                deq.get_submodule(n).weight.copy_(m.dequantize(torch.float16))
    ids = torch.randint(3, 512, (2, 17), generator=rng).cuda()
    with torch.no_grad():
        lq, ld = (m(input_ids=ids).logits.double() for m in (qmodel, deq))
    assert float((lq - ld).norm() / ld.norm()) < 1e-2
    out = qmodel.generate(input_ids=ids[:1], attention_mask=torch.ones_like(ids[:1]), max_new_tokens=8,
                          min_new_tokens=8, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 25)
