"""The SPEC.md matmul matrix on the CPU backend, against an independent float64 reference.

The cases are generated, not a full cartesian product: every value of every config axis occurs, and the
pairs that interact (W_dtype x A_dtype, W_dtype x accum/out, W_dtype x layout, zeros mode x group size x
uint W_dtype, int8 A x every output) are covered. Inputs are fresh random tensors per run (see the seed
in a failure report); outputs are poisoned (NaN, or the bitwise complement of the expected integers)
before the kernel runs, and each case also runs without ``output=``. Tolerances: see reference.py.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Tuple

import pytest
import torch

from lowbit import Matmul, MatmulConfig
from reference import (TORCH, assert_close, matmul_reference, pack_quantized_zeros, poisoned_output,
                       random_matmul_inputs, unpack_lsb_first)

W_DTYPES = ("int8", "int4", "int2", "int1", "uint4", "uint2", "uint1", "fp4_e2m1", "nf4", "float16")
INT_W = ("int8", "int4", "int2", "int1", "uint4", "uint2", "uint1")
UINT_W = ("uint4", "uint2", "uint1")
FP_ACC_OUT = (("float16", "float16"), ("float16", "float32"), ("float32", "float16"), ("float32", "float32"))
INT8_OUT = ("int32", "int8", "float16", "float32")


@dataclass(frozen=True)
class Case:
    fields: Tuple[Tuple[str, object], ...]
    lead: Tuple[int, ...]  # leading dims of A (their product is m)
    prepack: bool = False  # quantized zeros given already packed
    tag: str = ""

    @property
    def cfg(self) -> dict:
        return dict(self.fields)

    @property
    def id(self) -> str:
        c = self.cfg
        parts = [c["W_dtype"], f"A{c['A_dtype']}", f"acc{c['accum_dtype']}", f"out{c['out_dtype']}", c["layout"],
                 f"N{c['N']}K{c['K']}", f"g{c['group_size']}"]
        if c.get("with_scaling"):
            parts.append("scale")
        if c.get("with_zeros"):
            parts.append(str(c["zeros_mode"]) + ("-packed" if self.prepack else ""))
        if c.get("with_bias"):
            parts.append("bias")
        M = c["M"]
        parts.append("Mnone" if M is None else f"M{M}" if isinstance(M, int) else "M" + "-".join(map(str, M)))
        parts.append("m" + "x".join(map(str, self.lead)))
        return "-".join(parts + ([self.tag] if self.tag else []))


def _case(lead, prepack=False, tag="", **cfg) -> Case:
    base = dict(M=None, A_dtype="float16", accum_dtype="float16", out_dtype="float16", layout="nt", with_bias=False,
                group_size=-1, with_scaling=False, with_zeros=False, zeros_mode="original")
    base.update(cfg)
    if base["M"] == "static":
        base["M"] = int(torch.tensor(lead).prod())
    return Case(tuple(sorted(base.items())), tuple(lead), prepack, tag)


M_VARIANTS = (None, "static", [1, 16, 64])
LEADS = ((1,), (5,), (16,), (33,), (2, 3))


def generate_cases():
    cases = []
    t = itertools.count()
    # 1. float16 A: every W_dtype x every (accum, out); scaling for every quantized type, group sizes and
    #    layouts rotate, bias alternates.
    for W in W_DTYPES:
        layouts = ("nt", "nn") if W in ("float16", "int8") else ("nt",)
        for acc, out in FP_ACC_OUT:
            i = next(t)
            scaling = W != "float16"
            g = (-1, 32, 128)[i % 3] if scaling else -1
            K = {-1: 128, 32: 160, 128: 256}[g]
            cases.append(_case(LEADS[i % 5], W_dtype=W, accum_dtype=acc, out_dtype=out,
                               layout=layouts[i % len(layouts)], with_bias=bool(i % 2), group_size=g,
                               with_scaling=scaling, N=(64, 96, 128)[i % 3], K=K, M=M_VARIANTS[i % 3]))
    # 2. float16 A without scaling for every quantized W_dtype (the decoded value itself), both layouts
    #    of int8 W.
    for W in W_DTYPES[:-1] + ("int8",):
        i = next(t)
        acc, out = FP_ACC_OUT[i % 4]
        cases.append(_case(LEADS[i % 5], W_dtype=W, accum_dtype=acc, out_dtype=out, with_bias=bool(i % 2),
                           layout="nn" if W == "int8" and i % 2 else "nt", N=(64, 96)[i % 2], K=(64, 192)[i % 2],
                           M=M_VARIANTS[i % 3], tag="noscale"))
    # 3. int8 A: every integer W_dtype x every output dtype (accum int32), int8 W in both layouts.
    for W in INT_W:
        for out in INT8_OUT:
            i = next(t)
            layout = ("nt", "nn")[i % 2] if W == "int8" else "nt"
            cases.append(_case(LEADS[i % 5], W_dtype=W, A_dtype="int8", accum_dtype="int32", out_dtype=out,
                               layout=layout, with_bias=bool(i % 2 == 0), N=(64, 96, 128)[i % 3],
                               K=(128, 256, 96)[i % 3], M=M_VARIANTS[i % 3]))
    # 4. zeros: every uint W_dtype x every zeros mode (quantized as codes and pre-packed) x group sizes.
    for W in UINT_W:
        for mode, prepack in (("original", False), ("rescale", False), ("quantized", False), ("quantized", True)):
            for g in (-1, 32, 128):
                i = next(t)
                acc, out = FP_ACC_OUT[i % 4]
                K = {-1: 128, 32: 160, 128: 256}[g]
                cases.append(_case(LEADS[i % 5], prepack=prepack, W_dtype=W, accum_dtype=acc, out_dtype=out,
                                   with_bias=bool(i % 2), group_size=g, with_scaling=True, with_zeros=True,
                                   zeros_mode=mode, N=(64, 96, 128)[i % 3], K=K, M=M_VARIANTS[i % 3]))
    # zeros_mode=None means 'original'
    cases.append(_case((3,), W_dtype="uint4", with_scaling=True, with_zeros=True, zeros_mode=None, group_size=32,
                       N=64, K=128, tag="zeros_mode_None"))
    return cases


CASES = generate_cases()


def _run_and_check(cfg: MatmulConfig, inp, msg: str):
    op = Matmul(cfg)
    ref = inp.reference()
    out_shape = (*inp.A.shape[:-1], cfg.N)
    A_before = inp.A.clone()
    output = poisoned_output(out_shape, cfg.out_dtype, expected=ref)
    result = inp.run(op, output=output)
    assert result is output, f"{msg}: forward must return the given output tensor"
    assert_close(result, ref, cfg.out_dtype, cfg.accum_dtype, cfg.K, msg=msg + " (output= given)")
    fresh = inp.run(op)
    assert fresh is not output
    assert fresh.dtype == TORCH[cfg.out_dtype] and tuple(fresh.shape) == out_shape, msg
    assert_close(fresh, ref, cfg.out_dtype, cfg.accum_dtype, cfg.K, msg=msg + " (no output=)")
    assert torch.equal(inp.A, A_before), f"{msg}: forward modified A"
    return ref


def test_case_matrix_covers_every_axis_value():
    seen = {}
    for c in CASES:
        for k, v in c.cfg.items():
            seen.setdefault(k, set()).add(repr(v))
    assert {eval(v) for v in seen["W_dtype"]} == set(W_DTYPES)
    assert {eval(v) for v in seen["A_dtype"]} == {"float16", "int8"}
    assert {eval(v) for v in seen["accum_dtype"]} == {"float16", "float32", "int32"}
    assert {eval(v) for v in seen["out_dtype"]} == {"float16", "float32", "int32", "int8"}
    assert {eval(v) for v in seen["layout"]} == {"nt", "nn"}
    assert {eval(v) for v in seen["group_size"]} == {-1, 32, 128}
    assert {eval(v) for v in seen["zeros_mode"]} >= {"original", "rescale", "quantized", None}
    assert {eval(v) for v in seen["with_bias"]} == {True, False}
    pairs = {(c.cfg["W_dtype"], c.cfg["A_dtype"], c.cfg["accum_dtype"], c.cfg["out_dtype"]) for c in CASES}
    for W in W_DTYPES:
        for acc, out in FP_ACC_OUT:
            assert (W, "float16", acc, out) in pairs
    for W in INT_W:
        for out in INT8_OUT:
            assert (W, "int8", "int32", out) in pairs
    assert any(c.prepack for c in CASES)
    assert 100 <= len(CASES) <= 200


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_matmul_matrix(case, rng, seed):
    cfg = MatmulConfig(**case.cfg)
    inp = random_matmul_inputs(cfg, case.lead, "cpu", rng, prepack_zeros=case.prepack)
    assert inp.W.dtype == TORCH[cfg.storage_dtype]
    _run_and_check(cfg, inp, f"{case.id} seed={seed}")


PARTIAL_TILE_CASES = [
    dict(W_dtype="int4", with_scaling=True, group_size=64),
    dict(W_dtype="uint2", with_scaling=True, with_zeros=True, group_size=64, zeros_mode="quantized"),
    dict(W_dtype="int8", A_dtype="int8", accum_dtype="int32", out_dtype="int32", layout="nn"),
    dict(W_dtype="float16"),
]


@pytest.mark.parametrize("N", [8, 44])
@pytest.mark.parametrize("fields", PARTIAL_TILE_CASES, ids=[f["W_dtype"] for f in PARTIAL_TILE_CASES])
def test_partial_row_tile_cpu(fields, N, rng, seed):
    """N not a multiple of the 16-row weight tile (lowbit.layout): the CPU loops read the last, partial
    tile with its own superblock stride."""
    cfg = MatmulConfig(M=[3], N=N, K=192, **fields)
    _run_and_check(cfg, random_matmul_inputs(cfg, 3, "cpu", rng), f"{fields} N={N} seed={seed}")


# ---------------------------------------------------------------------------------------- M handling

DYN_CFG = dict(N=64, K=128, W_dtype="int4", with_scaling=True, group_size=32, with_bias=True)


@pytest.mark.parametrize("m", [1, 7, 16, 33, 40])
def test_dynamic_M_list(m, rng, seed):
    """M=[1, 16]: every m >= 1 is correct, m=33 and m=40 lie beyond the largest bucket."""
    cfg = MatmulConfig(M=[16, 1], **DYN_CFG)
    assert cfg.M == (1, 16)
    assert cfg.bucket_for(m) == (1 if m == 1 else 16)
    inp = random_matmul_inputs(cfg, m, "cpu", rng)
    _run_and_check(cfg, inp, f"M=[1,16] m={m} seed={seed}")


@pytest.mark.parametrize("lead", [(1,), (7,), (16,), (33,), (1025,), (2, 3), (2, 1, 4)])
def test_dynamic_M_default_buckets(lead, rng, seed):
    cfg = MatmulConfig(M=None, N=32, K=64, W_dtype="uint2", with_scaling=True, with_zeros=True,
                       zeros_mode="quantized")
    inp = random_matmul_inputs(cfg, lead, "cpu", rng)
    _run_and_check(cfg, inp, f"M=None lead={lead} seed={seed}")


@pytest.mark.parametrize("lead", [(7,), (2, 3)])
def test_static_M(lead, rng, seed):
    m = int(torch.tensor(lead).prod())
    cfg = MatmulConfig(M=m, N=48, K=64, W_dtype="nf4", with_scaling=True, accum_dtype="float32")
    assert cfg.M == m and cfg.bucket_for(m) == m
    inp = random_matmul_inputs(cfg, lead, "cpu", rng)
    _run_and_check(cfg, inp, f"static M={m} lead={lead} seed={seed}")


def test_empty_A_returns_empty_output(rng):
    cfg = MatmulConfig(M=[1, 16], N=32, K=64, W_dtype="int4")
    op = Matmul(cfg)
    W = op.transform_weight(torch.randint(-8, 8, (32, 64), generator=rng))
    out = op(torch.zeros(0, 64, dtype=torch.float16), W)
    assert tuple(out.shape) == (0, 32) and out.dtype == torch.float16


# ---------------------------------------------------------------------------------------- saturation / exactness

def test_int8_output_saturates(rng, seed):
    cfg = MatmulConfig(M=[1, 16], N=64, K=128, A_dtype="int8", W_dtype="int8", accum_dtype="int32",
                       out_dtype="int8", with_bias=True)
    inp = random_matmul_inputs(cfg, 16, "cpu", rng)
    raw = matmul_reference(MatmulConfig(**{**cfg.as_dict(), "out_dtype": "int32"}), inp.A, inp.W_logical,
                           bias=inp.bias)
    msg = f"seed={seed}"
    assert bool((raw > 127).any()) and bool((raw < -128).any()), f"{msg}: test data does not saturate"
    assert bool((raw.abs() < 100).any()), f"{msg}: test data saturates everywhere"
    _run_and_check(cfg, inp, msg)
    out = inp.run(Matmul(cfg))
    assert int(out.max()) == 127 and int(out.min()) == -128, msg


def test_int32_output_exact_at_large_magnitude(rng, seed):
    """Full-range int8 A and W: sums far beyond float16/float32-exact territory of products must be exact."""
    cfg = MatmulConfig(M=4, N=32, K=1024, A_dtype="int8", W_dtype="int8", accum_dtype="int32", out_dtype="int32")
    op = Matmul(cfg)
    A = torch.full((4, 1024), -128, dtype=torch.int8)
    A[1] = 127
    A[2:] = torch.randint(-128, 128, (2, 1024), generator=rng, dtype=torch.int8)
    W = torch.randint(-128, 128, (32, 1024), generator=rng)
    W[0] = -128
    W[1] = 127
    out = op(A, op.transform_weight(W))
    expected = A.to(torch.int64) @ W.t().to(torch.int64)
    assert expected[0, 0] == 128 * 128 * 1024
    assert torch.equal(out.to(torch.int64), expected), f"seed={seed}"


# ---------------------------------------------------------------------------------------- transform_weight

def test_transform_weight_returns_list_in_order(rng):
    cfg = MatmulConfig(N=64, K=128, W_dtype="uint4", with_scaling=True, with_zeros=True, zeros_mode="quantized",
                       group_size=32, with_bias=True)
    op = Matmul(cfg)
    W = torch.randint(0, 16, (64, 128), generator=rng)
    s = torch.rand(64, 4, generator=rng).to(torch.float16)
    z = torch.randint(0, 16, (64, 4), generator=rng)
    b = torch.randn(64, generator=rng).to(torch.float16)
    alone = op.transform_weight(W)
    assert isinstance(alone, torch.Tensor) and alone.dtype == torch.int8
    full = op.transform_weight(W, scale=s, zeros=z, bias=b)
    assert isinstance(full, list) and len(full) == 4
    assert torch.equal(full[0], alone)
    assert torch.equal(full[1], s)
    # the quantized-zeros layout is user-visible: [K//G, N*bits/8], LSB-first along N
    assert full[2].dtype == torch.int8 and tuple(full[2].shape) == (4, 32)
    assert torch.equal(full[2], pack_quantized_zeros(z, 4))
    assert torch.equal(unpack_lsb_first(full[2], 4).t(), z)
    assert torch.equal(full[3], b)
    only_scale = op.transform_weight(W, scale=s)
    assert isinstance(only_scale, list) and len(only_scale) == 2
    only_bias = op.transform_weight(W, bias=b)
    assert isinstance(only_bias, list) and len(only_bias) == 2 and torch.equal(only_bias[1], b)
    prepacked = op.transform_weight(W, zeros=pack_quantized_zeros(z, 4))
    assert torch.equal(prepacked[1], full[2])


@pytest.mark.parametrize("bits,W_dtype", [(4, "uint4"), (2, "uint2"), (1, "uint1")])
def test_quantized_zeros_packing_matches_spec(bits, W_dtype, rng):
    N, K, G = 64, 128, 32
    cfg = MatmulConfig(N=N, K=K, W_dtype=W_dtype, with_scaling=True, with_zeros=True, zeros_mode="quantized",
                       group_size=G)
    op = Matmul(cfg)
    z = torch.randint(0, 1 << bits, (N, K // G), generator=rng)
    W = torch.randint(0, 1 << bits, (N, K), generator=rng)
    _, packed = op.transform_weight(W, zeros=z)
    assert tuple(packed.shape) == (K // G, N * bits // 8)
    # element n of row g sits at bits (n % (8/bits))*bits of byte n // (8/bits)
    per = 8 // bits
    for n in (0, 1, per - 1, per, N - 1):
        byte = int(packed[1, n // per]) & 0xFF
        assert (byte >> ((n % per) * bits)) & ((1 << bits) - 1) == int(z[n, 1])
