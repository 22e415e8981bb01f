"""FlashAtten on the GPU (lowbit-lower-attention-to-gpu) against a float64 reference and torch SDPA.

Covered: batch 1-8, heads 1-32, seq_len 1 .. 16384 (1, 17, 33, 64, 100, 129, 1000 and 4096 are not all
tile multiples), dims 16 .. 256 (16, 48, 64, 80, 112, 128, 160, 256), causal and not, layouts 'nnn' and 'ntn'
('ntn' with seq_len % 8 != 0 takes the element-copy path), grouped-query attention (kv_heads < heads),
and the non-default schedules. Every case draws fresh inputs, poisons the output with NaN and checks
every element against a float64 reference computed on the GPU; torch's float16 SDPA is a second reference.

Numerics model of the tolerance: the kernel rounds the probabilities P to float16 before P V (a relative
2^-11 per weight, at most 2^-11 max|V| on the output), computes scores in float32 (an error e moves the
output by about 2 e max|V|) and rounds the output to float16 (2^-11 |out|).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lowbit import FlashAtten, FlashAttenConfig
from lowbit.runtime.gpu_kernels import attention_kernel, prebuild_attention
from reference import assert_attention_close, attention_reference, device_target, random_attention_inputs

pytestmark = pytest.mark.gpu

# (batch, heads, kv_heads, seq_len, dim, causal, layout)
SHAPES = [
    (1, 1, None, 1, 64, False, "nnn"),
    (1, 1, None, 1, 16, True, "ntn"),
    (2, 3, None, 17, 16, True, "nnn"),
    (2, 4, 2, 17, 64, False, "ntn"),
    (1, 2, None, 33, 48, True, "ntn"),
    (1, 2, None, 64, 64, True, "nnn"),
    (1, 8, 2, 100, 80, True, "nnn"),
    (3, 2, 1, 100, 128, False, "ntn"),
    (1, 4, None, 100, 256, True, "ntn"),
    (1, 3, None, 129, 112, False, "nnn"),
    (2, 2, 1, 129, 160, True, "nnn"),
    (8, 4, None, 1000, 64, True, "nnn"),
    (2, 32, 8, 1000, 128, True, "ntn"),
    (1, 2, None, 1000, 256, False, "nnn"),
    (2, 4, 2, 4096, 128, True, "nnn"),
    (1, 2, 1, 4096, 64, False, "ntn"),
    (4, 16, None, 512, 128, False, "nnn"),
    (1, 2, 1, 16384, 64, True, "nnn"),
    (2, 32, 8, 1500, 128, False, "ntn"),  # enough blocks for the 256-row default of dim 128
]
# schedules besides the defaults: (shape, overrides)
VARIANTS = [
    ((2, 4, 2, 1000, 128, True, "nnn"), dict(warps=8, q_in_regs=True)),
    ((2, 4, 2, 1000, 128, True, "ntn"), dict(block_kv=32)),
    ((1, 4, None, 1000, 128, False, "nnn"), dict(block_q=64, q_in_regs=True)),
    ((1, 4, 1, 777, 64, True, "nnn"), dict(stages=3, block_kv=128)),
    ((1, 4, 1, 777, 64, False, "ntn"), dict(block_q=64, block_kv=32, stages=4, q_in_regs=False)),
    ((1, 2, None, 300, 256, True, "nnn"), dict(block_q=32, warps=2)),
    ((1, 4, None, 1000, 128, True, "nnn"), dict(block_q=256, warps=8)),
    # overlap: tile t+1's Q K^T before tile t's softmax (three score-tile loops: unmasked, masked, last)
    ((2, 4, 2, 1000, 128, True, "ntn"), dict(warps=8, q_in_regs=True, stages=3, overlap=True)),
    ((1, 4, None, 1000, 128, False, "nnn"), dict(block_kv=32, stages=3, overlap=True)),
    ((1, 4, 1, 777, 64, False, "nnn"), dict(block_kv=32, stages=3, overlap=True)),
    ((2, 3, 1, 129, 64, True, "nnn"), dict(block_q=64, stages=4, overlap=True)),
    ((1, 1, None, 1, 64, True, "ntn"), dict(stages=3, overlap=True)),
    ((1, 2, None, 100, 256, True, "nnn"), dict(stages=3, overlap=True)),
]


def _cfg(shape) -> FlashAttenConfig:
    b, h, hk, s, d, causal, layout = shape
    return FlashAttenConfig(batch=b, heads=h, kv_heads=hk, seq_len=s, dim=d, is_causal=causal, layout=layout)


def _id(shape, over=None) -> str:
    b, h, hk, s, d, causal, layout = shape
    kv = f"kv{hk}" if hk else ""
    extra = "-" + "-".join(f"{k}{int(v) if isinstance(v, bool) else v}" for k, v in over.items()) if over else ""
    return f"b{b}h{h}{kv}s{s}d{d}-{layout}-{'causal' if causal else 'full'}{extra}"


@pytest.fixture(scope="module", autouse=True)
def _prebuilt():
    """Compiles every kernel of this file in parallel processes first (into the kernel cache)."""
    jobs = [(_cfg(s), {}) for s in SHAPES] + [(_cfg(s), o) for s, o in VARIANTS]
    jobs.append((FlashAttenConfig(batch=1, heads=2, kv_heads=1, seq_len=70, dim=32, is_causal=True), {}))
    prebuild_attention(jobs, device_target())


def reference_gpu(cfg, Q, K, V) -> torch.Tensor:
    """float64 softmax(Q K^T / sqrt(dim) + causal mask) V on the GPU, [batch, seq_len, heads, dim],
    in chunks of query rows."""
    q = Q.double()
    k = (K.permute(0, 3, 2, 1) if cfg.layout == "ntn" else K).double()
    v = V.double()
    group = cfg.heads // cfg.kv_heads
    k = k.repeat_interleave(group, dim=2)
    v = v.repeat_interleave(group, dim=2)
    S = cfg.seq_len
    out = torch.empty(q.shape, dtype=torch.float64, device=q.device)
    chunk = max(1, min(S, (1 << 26) // (cfg.batch * cfg.heads * S)))
    keys = torch.arange(S, device=q.device)
    for i0 in range(0, S, chunk):
        i1 = min(S, i0 + chunk)
        s = torch.einsum("bihd,bjhd->bhij", q[:, i0:i1], k) / math.sqrt(cfg.dim)
        if cfg.is_causal:
            rows = torch.arange(i0, i1, device=q.device)
            s = s.masked_fill(keys[None, :] > rows[:, None], float("-inf"))
        out[:, i0:i1] = torch.einsum("bhij,bjhd->bihd", torch.softmax(s, dim=-1), v)
    return out


def tolerance(cfg, Q, K, V, ref) -> torch.Tensor:
    vmax = max(float(V.abs().max()), 1e-3)
    kmax = float((K.permute(0, 3, 2, 1) if cfg.layout == "ntn" else K).double().norm(dim=-1).max())
    # float32 scores: |error| <= 2^-24 sqrt(dim) * sum_d |q_d k_d| / sqrt(dim) <= 2^-24 |q| max|k|
    score_err = 2.0 ** -24 * Q.double().norm(dim=-1, keepdim=True) * kmax
    return 1.001 * 2.0 ** -11 * ref.abs() + (2.0 ** -10 + 8 * score_err) * vmax


def check(out, ref, tol, msg: str) -> None:
    o = out.double()
    err = (o - ref).abs()
    bad = torch.isnan(o) | ~(err <= tol)
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise AssertionError(f"{msg}: {int(bad.sum())}/{bad.numel()} outputs out of tolerance; first at {idx}: got "
                             f"{o[idx].item()!r}, reference {ref[idx].item()!r}, tolerance {tol[idx].item():.3g}; "
                             f"max error {float(err[~torch.isnan(err)].max()):.3g}")


def sdpa(cfg, Q, K, V) -> torch.Tensor:
    """torch's float16 SDPA (its default backend) on [batch, heads, seq, dim] views, back as [b, s, h, d]."""
    k = K.permute(0, 3, 2, 1) if cfg.layout == "ntn" else K
    group = cfg.heads // cfg.kv_heads
    k = k.repeat_interleave(group, dim=2)
    v = V.repeat_interleave(group, dim=2)
    out = F.scaled_dot_product_attention(Q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         is_causal=cfg.is_causal)
    return out.transpose(1, 2)


def run_case(cfg, rng, seed, msg, **schedule):
    Q, K, V = (t.cuda() for t in random_attention_inputs(cfg, "cpu", rng, scale=1.5))
    ref = reference_gpu(cfg, Q, K, V)
    tol = tolerance(cfg, Q, K, V, ref)
    output = torch.full_like(Q, float("nan"))
    msg = f"{msg} seed={seed}"
    if schedule:
        attention_kernel(cfg, Q.device, **schedule)([Q, K, V, output])
        result = output
    else:
        result = FlashAtten(cfg)(Q, K, V, output=output)
        assert result is output, f"{msg}: forward must return the given output"
    torch.cuda.synchronize()
    check(result, ref, tol, msg)
    theirs = sdpa(cfg, Q, K, V)
    check(result, theirs.double(), 2 * tol, msg + " (vs torch SDPA)")
    return Q, K, V, result


@pytest.mark.parametrize("shape", SHAPES, ids=[_id(s) for s in SHAPES])
def test_flash_atten_gpu(shape, rng, seed):
    cfg = _cfg(shape)
    Q, K, V, result = run_case(cfg, rng, seed, _id(shape))
    again = FlashAtten(cfg)(Q, K, V)
    assert torch.equal(again, result), f"{_id(shape)} seed={seed}: a second run differs"


@pytest.mark.parametrize("shape,over", VARIANTS, ids=[_id(s, o) for s, o in VARIANTS])
def test_schedules(shape, over, rng, seed):
    run_case(_cfg(shape), rng, seed, _id(shape, over), **over)


def test_matches_cpu_backend_and_float64_cpu_reference(rng, seed):
    cfg = FlashAttenConfig(batch=1, heads=2, kv_heads=1, seq_len=70, dim=32, is_causal=True)
    Q, K, V = random_attention_inputs(cfg, "cpu", rng, scale=1.5)
    cpu = FlashAtten(cfg)(Q, K, V)
    gpu = FlashAtten(cfg)(Q.cuda(), K.cuda(), V.cuda()).cpu()
    ref = attention_reference(cfg, Q, K, V)
    assert_attention_close(cpu, ref, V, cfg.dim, f"cpu seed={seed}")
    check(gpu, ref, tolerance(cfg, Q, K, V, ref), f"gpu vs cpu reference seed={seed}")
    check(gpu, cpu.double(), 2 * tolerance(cfg, Q, K, V, ref), f"gpu vs cpu backend seed={seed}")


def test_tolerance_catches_errors(rng, seed):
    """The check is tight enough to see a wrong softmax scale or one key too many under the mask."""
    cfg = FlashAttenConfig(batch=1, heads=2, kv_heads=1, seq_len=70, dim=32, is_causal=True)
    Q, K, V = (t.cuda() for t in random_attention_inputs(cfg, "cpu", rng, scale=1.5))
    ref = reference_gpu(cfg, Q, K, V)
    tol = tolerance(cfg, Q, K, V, ref)
    wrong_scale = reference_gpu(FlashAttenConfig(batch=1, heads=2, kv_heads=1, seq_len=70, dim=32, is_causal=True),
                                Q * 1.01, K, V).half()
    with pytest.raises(AssertionError):
        check(wrong_scale, ref, tol, "scale")
    full = reference_gpu(FlashAttenConfig(batch=1, heads=2, kv_heads=1, seq_len=70, dim=32), Q, K, V).half()
    with pytest.raises(AssertionError):
        check(full, ref, tol, "mask")


def test_non_default_stream_and_device_index(rng, seed):
    cfg = FlashAttenConfig(batch=2, heads=4, kv_heads=2, seq_len=100, dim=64, is_causal=True)
    Q, K, V = (t.to("cuda:0") for t in random_attention_inputs(cfg, "cpu", rng))
    ref = reference_gpu(cfg, Q, K, V)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out = FlashAtten(cfg)(Q, K, V)
    stream.synchronize()
    check(out, ref, tolerance(cfg, Q, K, V, ref), f"seed={seed}")


def test_misaligned_view_is_rejected(rng):
    cfg = FlashAttenConfig(batch=1, heads=1, seq_len=17, dim=16)
    base = torch.randn(17 * 16 + 1, device="cuda").half()
    Q = base[1:].view(1, 17, 1, 16)  # contiguous but 2 bytes past a 16-byte boundary
    K = V = torch.randn(1, 17, 1, 16, device="cuda").half()
    with pytest.raises(ValueError, match="16-byte aligned"):
        FlashAtten(cfg)(Q, K, V)
