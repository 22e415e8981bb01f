"""FlashAtten on the CPU backend against a float64 reference and torch's scaled_dot_product_attention.

Covered: batch 1-2, heads 1-4, seq_len 1/5/17/64, dim 16/64, causal and not, layouts 'nnn' and 'ntn'
(K given as [batch, dim, kv_heads, seq_len]), grouped-query attention (kv_heads 1 and 2 with heads 4).
Outputs are poisoned with NaN before each run.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from lowbit import FlashAtten, FlashAttenConfig
from reference import assert_attention_close, attention_reference, random_attention_inputs


def _cases():
    cases = []
    shapes = [  # (batch, heads, kv_heads, seq_len, dim)
        (1, 1, None, 1, 16), (1, 1, 1, 5, 64), (2, 2, None, 17, 16), (1, 4, 2, 17, 64), (2, 4, 1, 5, 16),
        (1, 4, 4, 64, 64), (2, 3, None, 64, 16), (1, 4, 2, 1, 64), (2, 4, 2, 64, 16), (1, 2, 1, 17, 64),
    ]
    for i, (b, h, kvh, s, d) in enumerate(shapes):
        for causal, layout in itertools.product((False, True), ("nnn", "ntn")):
            cases.append(dict(batch=b, heads=h, kv_heads=kvh, seq_len=s, dim=d, is_causal=causal, layout=layout))
    return cases


CASES = _cases()


def _id(c):
    kv = "" if c["kv_heads"] is None else f"kv{c['kv_heads']}"
    return f"b{c['batch']}h{c['heads']}{kv}s{c['seq_len']}d{c['dim']}-{c['layout']}-{'causal' if c['is_causal'] else 'full'}"


def test_case_list_covers_the_axes():
    assert {c["batch"] for c in CASES} == {1, 2}
    assert {c["heads"] for c in CASES} >= {1, 2, 3, 4}
    assert {c["seq_len"] for c in CASES} == {1, 5, 17, 64}
    assert {c["dim"] for c in CASES} == {16, 64}
    assert {(c["heads"], c["kv_heads"]) for c in CASES} >= {(4, 2), (4, 1)}
    assert {(c["is_causal"], c["layout"]) for c in CASES} == set(itertools.product((False, True), ("nnn", "ntn")))


def _sdpa(cfg, Q, K, V):
    """torch's attention in float32 on [batch, heads, seq, dim] tensors (K/V heads repeated for GQA)."""
    if cfg.layout == "ntn":
        K = K.permute(0, 3, 2, 1)
    group = cfg.heads // cfg.kv_heads
    q = Q.float().transpose(1, 2)
    k = K.float().repeat_interleave(group, dim=2).transpose(1, 2)
    v = V.float().repeat_interleave(group, dim=2).transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v, is_causal=cfg.is_causal).transpose(1, 2)


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_flash_atten(case, rng, seed):
    cfg = FlashAttenConfig(**case)
    op = FlashAtten(cfg)
    Q, K, V = random_attention_inputs(cfg, "cpu", rng, scale=1.5)
    msg = f"{_id(case)} seed={seed}"
    ref = attention_reference(cfg, Q, K, V)
    output = torch.full_like(Q, float("nan"))
    result = op(Q, K, V, output=output)
    assert result is output, f"{msg}: forward must return the given output"
    assert_attention_close(result, ref, V, cfg.dim, msg)
    fresh = op.forward(Q, K, V)
    assert fresh.dtype == torch.float16 and fresh.shape == Q.shape
    assert torch.equal(fresh, result), f"{msg}: a second run differs"
    # torch's float32 attention as a second, independent reference
    sdpa = _sdpa(cfg, Q, K, V).to(torch.float64)
    assert float((sdpa - ref).abs().max()) < 1e-4, f"{msg}: the two references disagree (test bug)"
    assert_attention_close(result, sdpa, V, cfg.dim, msg + " vs sdpa", factor=2.0)


def test_causal_first_row_is_v0(rng, seed):
    """With the causal mask, query 0 sees only key 0: its output is V[:, 0] (rounded to float16)."""
    cfg = FlashAttenConfig(batch=2, heads=4, kv_heads=2, seq_len=17, dim=16, is_causal=True)
    Q, K, V = random_attention_inputs(cfg, "cpu", rng, scale=3.0)
    out = FlashAtten(cfg)(Q, K, V)
    expected = V[:, 0].repeat_interleave(2, dim=1)
    assert torch.equal(out[:, 0], expected), f"seed={seed}"


def test_causal_mask_hides_future_keys(rng, seed):
    """Changing key/value j must not change the output of any query i < j when causal, and must when not."""
    S = 17
    for causal in (True, False):
        cfg = FlashAttenConfig(batch=1, heads=2, seq_len=S, dim=16, is_causal=causal)
        op = FlashAtten(cfg)
        Q, K, V = random_attention_inputs(cfg, "cpu", rng)
        before = op(Q, K, V).clone()
        K2, V2 = K.clone(), V.clone()
        K2[:, 9:] = -K2[:, 9:] * 2
        V2[:, 9:] = V2[:, 9:] + 1
        after = op(Q, K2, V2)
        if causal:
            assert torch.equal(before[:, :9], after[:, :9]), f"seed={seed}: a future key leaked"
        else:
            assert not torch.equal(before[:, :9], after[:, :9]), f"seed={seed}: keys beyond 9 were ignored"
        assert not torch.equal(before[:, 9:], after[:, 9:]), f"seed={seed}"


def test_gqa_groups_consecutive_query_heads(rng, seed):
    """heads=4, kv_heads=2: query heads 0, 1 read kv head 0 and heads 2, 3 read kv head 1."""
    cfg = FlashAttenConfig(batch=1, heads=4, kv_heads=2, seq_len=5, dim=16)
    op = FlashAtten(cfg)
    Q, K, V = random_attention_inputs(cfg, "cpu", rng)
    Q[:, :, 1] = Q[:, :, 0]
    Q[:, :, 3] = Q[:, :, 2]
    out = op(Q, K, V)
    assert torch.equal(out[:, :, 0], out[:, :, 1]) and torch.equal(out[:, :, 2], out[:, :, 3]), f"seed={seed}"
    assert not torch.equal(out[:, :, 0], out[:, :, 2]), f"seed={seed}"


def test_large_scores_are_stable(rng, seed):
    """Scores of several hundred (exp overflows without the max subtraction) still give a finite softmax."""
    cfg = FlashAttenConfig(batch=1, heads=1, seq_len=17, dim=64)
    Q, K, V = random_attention_inputs(cfg, "cpu", rng, scale=20.0)
    ref = attention_reference(cfg, Q, K, V)
    assert float((Q.double()[0, :, 0] @ K.double()[0, :, 0].t()).abs().max()) / math.sqrt(64) > 200
    out = FlashAtten(cfg)(Q, K, V)
    assert bool(torch.isfinite(out).all()), f"seed={seed}"
    assert_attention_close(out, ref, V, cfg.dim, f"seed={seed}")
