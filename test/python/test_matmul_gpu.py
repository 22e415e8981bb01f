"""Matmul on the GPU: the SPEC matrix of the CPU suite, large shapes, streams and devices (H100)."""
from __future__ import annotations

import pytest
import torch
from reference import TORCH, assert_close, random_matmul_inputs
from test_matmul_cpu import CASES

from lowbit import Matmul, MatmulConfig

pytestmark = pytest.mark.gpu


def _poisoned(shape, out_dtype: str, device) -> torch.Tensor:
    if out_dtype in ("int8", "int32"):
        return torch.full(shape, 77, dtype=TORCH[out_dtype], device=device)
    return torch.full(shape, float("nan"), dtype=TORCH[out_dtype], device=device)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_matmul_matrix_gpu(case, rng, seed):
    cfg = MatmulConfig(**case.cfg)
    inp = random_matmul_inputs(cfg, case.lead, "cuda", rng, prepack_zeros=case.prepack)
    op = Matmul(cfg)
    ref = inp.reference()
    out_shape = (*inp.A.shape[:-1], cfg.N)
    output = _poisoned(out_shape, cfg.out_dtype, "cuda")
    result = inp.run(op, output=output)
    assert result is output
    assert_close(result, ref, cfg.out_dtype, cfg.accum_dtype, cfg.K, msg=f"{case.id} seed={seed} (output= given)")
    fresh = inp.run(op)
    assert fresh.device.type == "cuda" and fresh is not output
    assert_close(fresh, ref, cfg.out_dtype, cfg.accum_dtype, cfg.K, msg=f"{case.id} seed={seed} (no output=)")


def _dequant_gpu(W_logical, scale, zeros, G):
    """float64 (w - z) * s on the GPU, and the size of its float16 intermediates |w - z| * |s|."""
    w = W_logical.cuda().double()
    s = scale.cuda().double().repeat_interleave(G, dim=1)
    z = zeros.cuda().double().repeat_interleave(G, dim=1)
    return (w - z) * s, 2 * (w - z).abs() * s.abs()


@pytest.mark.parametrize("N,K", [(256, 256), (4096, 4096), (8192, 28672), (28672, 8192)])
def test_matmul_large_shapes(N, K, rng, seed):
    cfg = MatmulConfig(M=[1, 16, 64, 256], N=N, K=K, W_dtype="uint4", accum_dtype="float32", with_scaling=True,
                       with_zeros=True, group_size=128, zeros_mode="original")
    op = Matmul(cfg)
    W = torch.randint(0, 16, (N, K), generator=rng)
    scale = (torch.rand(N, K // 128, generator=rng) * 0.02 + 0.005).half()
    zeros = (torch.rand(N, K // 128, generator=rng) * 15).half()
    Wt, st, zt = (t.cuda() for t in op.transform_weight(W, scale=scale, zeros=zeros))
    deq, wmag = _dequant_gpu(W, scale, zeros, 128)
    for m in (1, 16, 64, 256):
        A = torch.randn(m, K, generator=rng).half().cuda()
        out = _poisoned((m, N), "float16", "cuda")
        op(A, Wt, scale=st, zeros=zt, output=out)
        ref = A.double() @ deq.t()
        assert not torch.isnan(out).any(), f"m={m} N={N} K={K} seed={seed}: NaN (unwritten) outputs"
        # the float16 dequantization rounds w - z and (w - z) * s (random errors: 4 sigma of their
        # A-weighted sum), float32 accumulation, then one float16 rounding of the output
        weight_err = ((A.double() ** 2) @ (wmag ** 2).t()).sqrt()
        acc_err = 1e-5 * A.double().norm(dim=1, keepdim=True) * deq.norm(dim=1)[None, :]
        err = (out.double() - ref).abs()
        tol = 2.0 ** -10 * ref.abs() + 4 * 2.0 ** -11 * weight_err + acc_err
        assert bool((err <= tol).all()), f"m={m} N={N} K={K} seed={seed}: max err {err.max().item():.4g}"


def test_gpu_agrees_with_cpu(rng, seed):
    cfg = MatmulConfig(M=[1, 16], N=256, K=512, W_dtype="int4", with_scaling=True, group_size=128,
                       accum_dtype="float32", with_bias=True)
    inp = random_matmul_inputs(cfg, (13,), "cpu", rng)
    op = Matmul(cfg)
    cpu = inp.run(op)
    gpu = op(inp.A.cuda(), inp.W.cuda(), **{k: v.cuda() for k, v in inp.kwargs().items()})
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=2e-3, atol=2e-3, msg=f"seed={seed}")


def test_non_default_stream_and_explicit_device(rng, seed):
    cfg = MatmulConfig(M=[1, 16, 64], N=512, K=1024, W_dtype="uint4", with_scaling=True, with_zeros=True,
                       group_size=128, accum_dtype="float32")
    inp = random_matmul_inputs(cfg, (33,), "cpu", rng)
    dev = torch.device("cuda:0")
    args = (inp.A.to(dev), inp.W.to(dev))
    kwargs = {k: v.to(dev) for k, v in inp.kwargs().items()}
    ref = inp.reference()
    stream = torch.cuda.Stream(device=dev)
    stream.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(stream):
        out = _poisoned((33, cfg.N), "float16", dev)
        Matmul(cfg)(*args, output=out, **kwargs)
    stream.synchronize()
    assert out.device == dev
    assert_close(out, ref, "float16", "float32", cfg.K, msg=f"seed={seed}")


def test_device_mix_is_rejected(rng):
    cfg = MatmulConfig(M=16, N=64, K=128, W_dtype="int4", with_scaling=True, group_size=32)
    inp = random_matmul_inputs(cfg, (16,), "cpu", rng)
    with pytest.raises(ValueError, match="device"):
        Matmul(cfg)(inp.A.cuda(), inp.W, **inp.kwargs())
