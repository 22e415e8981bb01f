"""Float64 references, random inputs and dtype-aware tolerances for the lowbit operator tests.

Shared by the CPU tests and the GPU tests (``from reference import ...``; pytest puts this folder on
``sys.path``). Everything here is written from SPEC.md, independently of ``lowbit.formats``: the decoded
value of a weight comes from its *logical* value (the value itself for integer types, the E2M1 formula
for fp4_e2m1, the SPEC table for nf4), and the quantized-zeros packing is re-implemented from the SPEC's
LSB-first description.

Numerics model (what :func:`assert_close` allows for)
-----------------------------------------------------
* The implementation dequantizes weights in float16. :func:`matmul_reference` therefore rounds each
  dequantized weight ``deq(n, k)`` (computed exactly in float64) to float16 once, by default. For
  no scaling, scale only and 'quantized' zeros (``w - qz`` is an exact small integer) one rounding is
  exactly what any correct float16 decoder produces, so no weight error is allowed there (nf4: the
  decoded value is the table entry rounded to float16, as a float16 table holds it). 'original'
  ``(w - z) * s`` and 'rescale' ``w * s - z`` round an intermediate too; for them the reference records
  a per-weight magnitude of the intermediates and the tolerance allows one float16 rounding of each.
  With scaling, the GPU decode kernels (up to 16 rows) never round the dequantized weight: they sum
  ``a * code`` in float32 and apply scale and zero to the sums (docs/api.md). The reference still
  rounds, and the tolerance allows one float16 rounding of every scaled weight, in either direction.
* Accumulation error is modelled probabilistically: ``lam * u_acc * sqrt(K) * spread`` where ``spread``
  is ``max(||p||_2, max_j |S_j|)`` over the products ``p_k = A[i, k] * deq(n, k)`` and their prefix sums
  ``S_j``. Each rounding of an addition is at most ``u_acc * |partial sum|``; for any summation order the
  partial sums are of the size of ``spread``, and K independent roundings add up like ``sqrt(K)``.
  ``u`` is the unit roundoff (2^-11 for float16, 2^-24 for float32, 0 for int32).
* The output conversion adds ``u_out * |ref|``; int32 / int8 outputs must be exact (int8 saturating).

The float64 reference runs on A's device, in chunks of at most 2^24 products, so GPU tests can use
large shapes; its result is always a CPU tensor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

import lowbit

# --------------------------------------------------------------------------- dtypes

TORCH = {"float16": torch.float16, "float32": torch.float32, "int8": torch.int8, "int32": torch.int32}
UNIT_ROUNDOFF = {"float16": 2.0 ** -11, "float32": 2.0 ** -24, "int32": 0.0, "int8": 0.0}
INT_OUT = ("int32", "int8")

# SPEC "Data types and their codes": logical range of each integer-coded W_dtype (fp4/nf4: codes).
LOGICAL_RANGE = {
    "int8": (-128, 127), "int4": (-8, 7), "int2": (-2, 1), "int1": (-1, 1),
    "uint4": (0, 15), "uint2": (0, 3), "uint1": (0, 1), "fp4_e2m1": (0, 15), "nf4": (0, 15),
}
BITS = {"int8": 8, "int4": 4, "int2": 2, "int1": 1, "uint4": 4, "uint2": 2, "uint1": 1,
        "fp4_e2m1": 4, "nf4": 4, "float16": 16}
# Copied from SPEC.md, not from lowbit.formats.
SPEC_NF4 = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
            -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
            0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
            0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0)


def e2m1_value(code: int) -> float:
    """OCP MX E2M1: code = s<<3 | e<<1 | m; e == 0 is subnormal (m * 0.5), else 2^(e-1) * (1 + m/2)."""
    s, e, m = code >> 3 & 1, code >> 1 & 3, code & 1
    mag = m * 0.5 if e == 0 else 2.0 ** (e - 1) * (1 + m / 2)
    return -mag if s else mag


def decode_logical(W_logical: torch.Tensor, W_dtype: str) -> torch.Tensor:
    """Decoded float64 value of logical weights (SPEC table); float16 weights are returned as they are."""
    if W_dtype == "float16":
        return W_logical.to(torch.float64)
    w = W_logical.to(torch.int64).cpu()
    lo, hi = LOGICAL_RANGE[W_dtype]
    assert int(w.min()) >= lo and int(w.max()) <= hi, f"test bug: {W_dtype} logical weights out of range"
    if W_dtype == "fp4_e2m1":
        return torch.tensor([e2m1_value(c) for c in range(16)], dtype=torch.float64)[w]
    if W_dtype == "nf4":
        return torch.tensor(SPEC_NF4, dtype=torch.float64)[w]
    return w.to(torch.float64)


def pack_lsb_first(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """SPEC packing along the last axis: element j at bits (j % (8/bits))*bits of byte j // (8/bits)."""
    per = 8 // bits
    c = codes.to(torch.int64).cpu()
    assert c.shape[-1] % per == 0
    out = torch.zeros(*c.shape[:-1], c.shape[-1] // per, dtype=torch.int64)
    for j in range(per):
        out |= (c[..., j::per] & ((1 << bits) - 1)) << (j * bits)
    return out.to(torch.uint8).view(torch.int8)


def unpack_lsb_first(packed: torch.Tensor, bits: int) -> torch.Tensor:
    per = 8 // bits
    p = packed.cpu().view(torch.uint8).to(torch.int64)
    parts = [(p >> (j * bits)) & ((1 << bits) - 1) for j in range(per)]
    return torch.stack(parts, dim=-1).reshape(*p.shape[:-1], p.shape[-1] * per)


def pack_quantized_zeros(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """'quantized' zeros codes [N, K//G] -> the SPEC layout int8 [K//G, N*bits/8], packed along N."""
    return pack_lsb_first(codes.t(), bits).contiguous()


# --------------------------------------------------------------------------- matmul reference

def _group(cfg) -> int:
    return cfg.K if cfg.group_size == -1 else cfg.group_size


def dequantize(cfg, W_logical, scale=None, zeros=None, round_weight: bool = True):
    """(deq [N, K] float64, wmag [N, K] or None): SPEC semantics; ``wmag`` bounds the float16
    intermediates that a float16 decoder rounds before the final value (zero with scaling and no such
    intermediate, None without scaling); the tolerance adds the final value's own rounding to it."""
    W = W_logical.cpu()
    if cfg.layout == "nn":
        W = W.t()
    w = decode_logical(W, cfg.W_dtype)
    N, K = w.shape
    G = _group(cfg)
    wmag = None
    if cfg.W_dtype == "nf4" and cfg.A_dtype == "float16" and round_weight:
        # a float16 decoder holds the NF4 table in float16 (every other type decodes exactly)
        w = w.to(torch.float16).to(torch.float64)
    if scale is None:
        deq = w
    else:
        s = scale.cpu().to(torch.float64).repeat_interleave(G, dim=1)
        if zeros is None:
            deq = w * s
        else:
            if cfg.zeros_mode == "quantized":
                z = zeros.cpu()
                if tuple(z.shape) != (N, K // G):  # given packed in the SPEC layout
                    z = unpack_lsb_first(z, BITS[cfg.W_dtype]).t()
                z = z.to(torch.float64).repeat_interleave(G, dim=1)
                deq = (w - z) * s  # w - qz is an exact small integer: one rounding
            else:
                z = zeros.cpu().to(torch.float64).repeat_interleave(G, dim=1)
                if cfg.zeros_mode == "rescale":
                    deq = w * s - z
                    wmag = (w * s).abs() + z.abs()
                else:
                    deq = (w - z) * s
                    wmag = (w.abs() + z.abs()) * s.abs()
    if scale is not None and wmag is None:
        wmag = torch.zeros_like(deq)  # the final rounding may be skipped (see the module doc)
    if round_weight and cfg.A_dtype == "float16":
        deq = deq.to(torch.float16).to(torch.float64)
    if wmag is not None:
        wmag = wmag + deq.abs()
    return deq, wmag


def matmul_reference(cfg, A, W_logical, scale=None, zeros=None, bias=None, *, round_weight: bool = True):
    """Float64 ``convert(A @ deq(W)^T + bias)`` before the output conversion, shape [..., N].

    ``W_logical`` is what was given to ``transform_weight`` ([N, K] for 'nt', [K, N] for 'nn'),
    ``scale`` / ``zeros`` / ``bias`` the logical tensors (quantized zeros as codes [N, K//G] or already
    packed). For int8 outputs the result is saturated to [-128, 127]; for other outputs it is not rounded.

    The returned tensor carries two attributes used by :func:`assert_close`: ``acc_spread`` (the size of
    the partial sums, see the module doc) and ``weight_err`` (``||A * wmag||_2`` per element, or None).
    """
    dev = A.device  # the float64 work runs where A lives (a GPU is much faster at large shapes)
    A64 = A.detach().to(torch.float64)
    lead = A64.shape[:-1]
    A2 = A64.reshape(-1, cfg.K)
    m = A2.shape[0]
    deq, wmag = dequantize(cfg, W_logical, scale, zeros, round_weight)
    deq = deq.to(dev)
    wmag = None if wmag is None else wmag.to(dev)
    acc = torch.empty(m, cfg.N, dtype=torch.float64, device=dev)
    spread = torch.empty_like(acc)
    weight_err = None if wmag is None else torch.empty_like(acc)
    # [rows, cols, K] products in chunks of at most 2^24 elements
    cols = max(1, min(cfg.N, 2 ** 24 // max(cfg.K, 1)))
    rows = max(1, 2 ** 24 // (cols * max(cfg.K, 1)))
    for r0 in range(0, m, rows):
        a = A2[r0:r0 + rows, None, :]
        for c0 in range(0, cfg.N, cols):
            prods = a * deq[None, c0:c0 + cols, :]
            acc[r0:r0 + rows, c0:c0 + cols] = prods.sum(-1)
            spread[r0:r0 + rows, c0:c0 + cols] = torch.maximum(prods.norm(dim=-1), prods.cumsum(-1).abs().amax(-1))
            if wmag is not None:
                weight_err[r0:r0 + rows, c0:c0 + cols] = (a.abs() * wmag[None, c0:c0 + cols, :]).norm(dim=-1)
    acc, spread = acc.cpu(), spread.cpu()
    weight_err = None if weight_err is None else weight_err.cpu()
    if bias is not None:
        acc = acc + bias.detach().cpu().to(torch.float64)
    if cfg.out_dtype == "int8":
        acc = acc.clamp(-128, 127)
    ref = acc.reshape(*lead, cfg.N)
    ref.acc_spread = spread.reshape(*lead, cfg.N)
    ref.weight_err = None if weight_err is None else weight_err.reshape(*lead, cfg.N)
    return ref


def matmul_tolerance(ref, out_dtype: str, accum_dtype: str, K: int, lam: float = 4.0) -> torch.Tensor:
    """Per-element absolute tolerance of an output against ``ref`` (see the module doc)."""
    if out_dtype in INT_OUT:
        return torch.zeros_like(ref)
    spread = getattr(ref, "acc_spread", None)
    if spread is None:  # a reference without the attribute: estimate the partial sums' size
        spread = torch.full_like(ref, float(ref.abs().max()) if ref.numel() else 0.0)
    u_acc, u_out = UNIT_ROUNDOFF[accum_dtype], UNIT_ROUNDOFF[out_dtype]
    tol = 1.001 * u_out * ref.abs() + lam * u_acc * math.sqrt(K + 1) * spread
    if accum_dtype != "int32":  # the float32 epilogue that adds the bias
        tol = tol + 2 * 2.0 ** -24 * ref.abs()
    weight_err = getattr(ref, "weight_err", None)
    if weight_err is not None:
        tol = tol + lam * 2.0 ** -11 * weight_err
    # float16 subnormals: absolute errors of half the smallest subnormal per rounding
    floor = (2.0 ** -25) * ((K + 1) if accum_dtype == "float16" else 1) if "float16" in (out_dtype, accum_dtype) else 1e-30
    return tol + floor


def assert_close(out, ref, out_dtype: str, accum_dtype: str, K: int, *, lam: float = 4.0, msg: str = "") -> None:
    """Check an operator output against a float64 reference with a tolerance set by the dtypes.

    Integer outputs must match exactly. Float outputs: NaN never passes; where the reference overflows
    the output dtype, the output must be the same infinity; elsewhere ``|out - ref| <= tol``
    (:func:`matmul_tolerance`; pass a plain float64 tensor for a generic ``sqrt(K)`` estimate).
    """
    assert out.dtype == TORCH[out_dtype], f"{msg}: output dtype {out.dtype}, expected {out_dtype}"
    assert tuple(out.shape) == tuple(ref.shape), f"{msg}: output shape {tuple(out.shape)} != {tuple(ref.shape)}"
    o = out.detach().cpu().to(torch.float64)
    if out_dtype in INT_OUT:
        expected = ref.round() if accum_dtype == "int32" else ref
        bad = o != expected
        if bool(bad.any()):
            idx = tuple(int(i) for i in bad.nonzero()[0])
            raise AssertionError(f"{msg}: {int(bad.sum())}/{bad.numel()} {out_dtype} outputs differ; first at {idx}: "
                                 f"got {o[idx].item()}, expected {expected[idx].item()}")
        return
    tol = matmul_tolerance(ref, out_dtype, accum_dtype, K, lam)
    as_out = ref.to(TORCH[out_dtype]).to(torch.float64)
    overflow = torch.isinf(as_out)
    err = (o - ref).abs()
    bad = torch.isnan(o) | torch.where(overflow, o != as_out, ~(err <= tol))
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        ratio = (err / tol)[~overflow]
        ratio = ratio[~torch.isnan(ratio)]
        worst = float(ratio.max()) if ratio.numel() else float("nan")
        raise AssertionError(
            f"{msg}: {int(bad.sum())}/{bad.numel()} outputs out of tolerance ({out_dtype} out, {accum_dtype} accum, "
            f"K={K}); first at {idx}: got {o[idx].item()!r}, reference {ref[idx].item()!r}, tolerance "
            f"{tol[idx].item():.3g}; worst error/tolerance {worst:.3g}; nan outputs {int(torch.isnan(o).sum())}")


# --------------------------------------------------------------------------- random inputs

def random_logical(W_dtype: str, shape, generator: torch.Generator) -> torch.Tensor:
    """Random logical weights over the full range of ``W_dtype`` (int1: -1/+1; float16: N(0, 1))."""
    if W_dtype == "float16":
        return torch.randn(shape, generator=generator).to(torch.float16)
    if W_dtype == "int1":
        return torch.randint(0, 2, shape, generator=generator) * 2 - 1
    lo, hi = LOGICAL_RANGE[W_dtype]
    w = torch.randint(lo, hi + 1, shape, generator=generator)
    # make sure both ends of the range occur (the decoder's extreme codes are the bug-prone ones)
    flat = w.view(-1)
    if flat.numel() >= 2:
        flat[0], flat[-1] = lo, hi
    return w


def _uniform(shape, lo, hi, g) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)


def _max_abs_decoded(W_dtype: str) -> float:
    if W_dtype == "float16":
        return 3.0
    if W_dtype == "fp4_e2m1":
        return 6.0
    if W_dtype == "nf4":
        return 1.0
    lo, hi = LOGICAL_RANGE[W_dtype]
    return float(max(abs(lo), abs(hi), 1))


def random_A(cfg, lead: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """float16 A: uniform [-1, 1]. int8 A: the full range, except for outputs that could overflow or
    saturate everything: int8 outputs get rows of amplitude 1, 4, 16, 127 in turn (some rows saturate,
    others do not); float16 outputs an amplitude keeping |acc| far below 65504."""
    shape = (*lead, cfg.K)
    if cfg.A_dtype == "float16":
        return _uniform(shape, -1, 1, generator).to(torch.float16)
    m = math.prod(lead)
    A = torch.randint(-128, 128, (m, cfg.K), generator=generator)
    if cfg.out_dtype == "int8":
        amps = torch.tensor([1, 4, 16, 127])[torch.arange(m) % 4]
    elif cfg.out_dtype == "float16":
        # 8 standard deviations of the sum of K products with a uniform A of amplitude a stay < 60000
        w_rms = _max_abs_decoded(cfg.W_dtype) / math.sqrt(3)
        a = int(max(1, min(127, 60000 * math.sqrt(3) / (8 * math.sqrt(cfg.K) * w_rms))))
        amps = torch.full((m,), a)
    else:
        return A.reshape(shape).to(torch.int8)
    A = torch.remainder(A + 128, 2 * amps[:, None] + 1) - amps[:, None]  # about uniform over [-a, a]
    return A.reshape(shape).to(torch.int8)


@dataclass
class MatmulInputs:
    """Logical inputs (CPU; A on ``device``) and what ``transform_weight`` made of them (on ``device``)."""

    cfg: object
    A: torch.Tensor
    W_logical: torch.Tensor
    scale: Optional[torch.Tensor] = None
    zeros: Optional[torch.Tensor] = None  # float16 [N, K//G], or integer codes [N, K//G] for 'quantized'
    bias: Optional[torch.Tensor] = None
    W: torch.Tensor = None  # transformed
    scale_t: Optional[torch.Tensor] = None
    zeros_t: Optional[torch.Tensor] = None
    bias_t: Optional[torch.Tensor] = None

    def kwargs(self) -> dict:
        """The keyword arguments of ``forward`` besides A and W (only those the config takes)."""
        kw = {}
        for name in ("scale", "zeros", "bias"):
            t = getattr(self, name + "_t")
            if t is not None:
                kw[name] = t
        return kw

    def run(self, op, output=None):
        return op(self.A, self.W, output=output, **self.kwargs())

    def reference(self, round_weight: bool = True):
        return matmul_reference(self.cfg, self.A, self.W_logical, self.scale, self.zeros, self.bias,
                                round_weight=round_weight)


def random_matmul_inputs(cfg, m: Union[int, Sequence[int]], device="cpu", generator: torch.Generator = None,
                         *, op=None, prepack_zeros: bool = False) -> MatmulInputs:
    """Random inputs of ``cfg`` with ``m`` rows (an int, or the leading dims of A).

    Weights span the full logical range of ``W_dtype``; scales are float16 of either sign with
    |scale * w| up to about 1.5; 'original' zeros are float16 in [0, hi], 'rescale' zeros float16 in
    scale * [0, hi], 'quantized' zeros random codes (given to ``transform_weight`` as codes, or packed
    here in the SPEC layout when ``prepack_zeros``). Bias: N(0, 4) in the output dtype for float
    outputs, int32 in [-300, 300] for integer outputs. The weights are transformed with ``op``
    (default ``lowbit.Matmul(cfg)``) and everything is moved to ``device``.
    """
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    op = op if op is not None else lowbit.Matmul(cfg)
    lead = (m,) if isinstance(m, int) else tuple(m)
    N, K, G = cfg.N, cfg.K, _group(cfg)
    wshape = (N, K) if cfg.layout == "nt" else (K, N)
    inp = MatmulInputs(cfg, random_A(cfg, lead, g), random_logical(cfg.W_dtype, wshape, g))
    if cfg.with_scaling:
        mag = _uniform((N, K // G), 0.25, 1.5, g) / _max_abs_decoded(cfg.W_dtype)
        sign = torch.where(torch.rand((N, K // G), generator=g) < 0.2, -1.0, 1.0)
        inp.scale = (mag * sign).to(torch.float16)
    if cfg.with_zeros:
        hi = LOGICAL_RANGE[cfg.W_dtype][1]
        if cfg.zeros_mode == "quantized":
            inp.zeros = torch.randint(0, hi + 1, (N, K // G), generator=g)
        elif cfg.zeros_mode == "rescale":
            inp.zeros = (_uniform((N, K // G), 0, hi, g) * inp.scale.to(torch.float64)).to(torch.float16)
        else:
            inp.zeros = _uniform((N, K // G), 0, hi, g).to(torch.float16)
    if cfg.with_bias:
        if cfg.out_dtype in INT_OUT:
            inp.bias = torch.randint(-300, 301, (N,), generator=g, dtype=torch.int32)
        else:
            inp.bias = (4 * torch.randn(N, generator=g)).to(TORCH[cfg.out_dtype])
    zeros_in = inp.zeros
    if zeros_in is not None and cfg.zeros_mode == "quantized" and prepack_zeros:
        zeros_in = pack_quantized_zeros(zeros_in, BITS[cfg.W_dtype])
    extras = [t for t in (inp.scale, zeros_in, inp.bias) if t is not None]
    if extras:
        res = op.transform_weight(inp.W_logical, scale=inp.scale, zeros=zeros_in, bias=inp.bias)
        inp.W = res[0]
        rest = list(res[1:])
        if inp.scale is not None:
            inp.scale_t = rest.pop(0)
        if zeros_in is not None:
            inp.zeros_t = rest.pop(0)
        if inp.bias is not None:
            inp.bias_t = rest.pop(0)
    else:
        inp.W = op.transform_weight(inp.W_logical)
    inp.A = inp.A.to(device)
    for name in ("W", "scale_t", "zeros_t", "bias_t"):
        t = getattr(inp, name)
        if t is not None:
            setattr(inp, name, t.to(device))
    return inp


def poisoned_output(shape, out_dtype: str, device="cpu", expected: Optional[torch.Tensor] = None) -> torch.Tensor:
    """An output buffer no correct kernel leaves as it is: NaN for floats; for integers the bitwise
    complement of ``expected`` (never equal to it) or 12345 / 77 without one."""
    dt = TORCH[out_dtype]
    if out_dtype in INT_OUT:
        if expected is not None:
            return (~expected.round().to(torch.int64)).to(dt).reshape(shape).to(device).contiguous()
        return torch.full(shape, 12345 if out_dtype == "int32" else 77, dtype=dt, device=device)
    return torch.full(shape, float("nan"), dtype=dt, device=device)


def device_target() -> str:
    """The lowbit target of the current CUDA device (the one its default schedules are chosen for)."""
    from lowbit.compiler.target import target_for_capability

    return target_for_capability(*torch.cuda.get_device_capability()).name


# --------------------------------------------------------------------------- attention

def attention_reference(cfg, Q, K, V) -> torch.Tensor:
    """Float64 ``softmax(Q K^T / sqrt(dim) + causal mask) V`` per (batch, head): [batch, seq_len, heads, dim].

    K is [batch, seq_len, kv_heads, dim] ('nnn') or [batch, dim, kv_heads, seq_len] ('ntn'); query head h
    reads kv head ``h // (heads // kv_heads)``.
    """
    q = Q.detach().cpu().to(torch.float64)
    k = K.detach().cpu().to(torch.float64)
    v = V.detach().cpu().to(torch.float64)
    if cfg.layout == "ntn":
        k = k.permute(0, 3, 2, 1)
    group = cfg.heads // cfg.kv_heads
    k = k.repeat_interleave(group, dim=2)
    v = v.repeat_interleave(group, dim=2)
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(cfg.dim)
    if cfg.is_causal:
        S = cfg.seq_len
        hide = torch.ones(S, S, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(hide, float("-inf"))
    p = torch.softmax(scores, dim=-1)
    out = torch.einsum("bhij,bjhd->bihd", p, v)
    # size of the float32 rounding of the scores, for attention_tolerance: sqrt(dim) * u32 * sum |q_d k_d| / sqrt(dim)
    qk = torch.einsum("bihd,bjhd->bhij", q.abs(), k.abs()) / math.sqrt(cfg.dim)
    out.score_err = (2.0 ** -24 * math.sqrt(cfg.dim) * qk.amax(-1)).permute(0, 2, 1).unsqueeze(-1)
    return out


def random_attention_inputs(cfg, device="cpu", generator: torch.Generator = None, scale: float = 1.0):
    """Q, K, V float16 with N(0, scale^2) entries in the shapes of ``cfg`` (K transposed for 'ntn')."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    b, s, h, hk, d = cfg.batch, cfg.seq_len, cfg.heads, cfg.kv_heads, cfg.dim
    Q = (scale * torch.randn(b, s, h, d, generator=g)).to(torch.float16)
    Kt = (scale * torch.randn(b, s, hk, d, generator=g)).to(torch.float16)
    V = torch.randn(b, s, hk, d, generator=g).to(torch.float16)
    if cfg.layout == "ntn":
        Kt = Kt.permute(0, 3, 2, 1).contiguous()
    return Q.to(device), Kt.to(device), V.to(device)


def attention_tolerance(ref: torch.Tensor, V: torch.Tensor, dim: int) -> torch.Tensor:
    """float16 output rounding plus float32 work: the scores (``ref.score_err`` from
    :func:`attention_reference`), exp/softmax and the weighted sum of V."""
    vmax = float(V.detach().abs().max().cpu()) if V.numel() else 1.0
    score_err = getattr(ref, "score_err", 0.0)  # an error e in the scores moves the output by up to ~2e * vmax
    return 1.001 * 2.0 ** -11 * ref.abs() + (2.0 ** -16 + 8 * score_err) * max(vmax, 1.0)


def assert_attention_close(out, ref, V, dim: int, msg: str = "", factor: float = 1.0) -> None:
    assert out.dtype == torch.float16, f"{msg}: output dtype {out.dtype}"
    assert tuple(out.shape) == tuple(ref.shape), f"{msg}: output shape {tuple(out.shape)} != {tuple(ref.shape)}"
    o = out.detach().cpu().to(torch.float64)
    tol = factor * attention_tolerance(ref, V, dim)
    err = (o - ref).abs()
    bad = torch.isnan(o) | ~(err <= tol)
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        finite = err[~torch.isnan(err)]
        worst = float(finite.max()) if finite.numel() else float("nan")
        raise AssertionError(f"{msg}: {int(bad.sum())}/{bad.numel()} attention outputs out of tolerance; first at "
                             f"{idx}: got {o[idx].item()!r}, reference {ref[idx].item()!r}, tolerance "
                             f"{tol[idx].item():.3g}; max error {worst:.3g}; nan outputs {int(torch.isnan(o).sum())}")


# --------------------------------------------------------------------------- errors

def expect(exc, words, fn):
    """Runs `fn`, which must raise `exc` with every one of `words` in its message; returns the message."""
    import pytest

    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    for w in words:
        assert w in msg, f"message {msg!r} lacks {w!r}"
    return msg
