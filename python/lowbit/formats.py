"""Quantization formats of lowbit: ranges, storage codes, packing and reference math.

This module is the single source of truth for the weight data types of the operator
contract (SPEC.md, "Data types and their codes"). It is pure torch and knows nothing
about MLIR or kernels:

* logical values (what users pass to ``transform_weight``) -> storage codes: :func:`to_codes`
* storage codes -> decoded values (the reference decoder): :func:`decode_codes`
* LSB-first bit packing of codes into ``int8`` bytes: :func:`pack` / :func:`unpack`
* the packed layout of 'quantized'-mode zeros: :func:`pack_zeros_quantized`
* the reference dequantization of every scaling/zeros mode: :func:`dequantize_reference`
* a round-to-nearest quantizer producing test and example data: :func:`quantize`
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

WEIGHT_DTYPES = ('int8', 'int4', 'int2', 'int1', 'uint4', 'uint2', 'uint1',
                 'fp4_e2m1', 'nf4', 'float16')

ZEROS_MODES = ('original', 'rescale', 'quantized')

NF4_TABLE = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)

# OCP MX E2M1, code = s<<3 | e<<1 | m; code 8 is -0.0.
FP4_E2M1_TABLE = (
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
    -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
)

_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_PACK_BITS = (1, 2, 4, 8)


@dataclass(frozen=True)
class Format:
    """A weight data type: its name, storage width in bits and kind of values.

    ``kind`` is one of 'int' (two's complement; int1 is the sign format -1/+1),
    'uint', 'fp4' (E2M1 codes), 'nf4' (NF4 codes) or 'float' (float16, not quantized).
    """

    name: str
    bits: int
    kind: str

    @property
    def packed(self) -> bool:
        """True when several values share one storage byte (bits < 8)."""
        return self.bits < 8

    @property
    def per_byte(self) -> int:
        """How many values one storage byte holds (1 for unpacked types)."""
        return 8 // self.bits if self.packed else 1

    @property
    def lo(self) -> Optional[int]:
        """Smallest logical value (the code 0 for fp4/nf4); None for float16."""
        if self.kind == 'float':
            return None
        if self.kind == 'int':
            return -(1 << (self.bits - 1))
        return 0

    @property
    def hi(self) -> Optional[int]:
        """Largest logical value (the code 15 for fp4/nf4); None for float16."""
        if self.kind == 'float':
            return None
        if self.kind == 'int':
            return max(1, (1 << (self.bits - 1)) - 1)  # int1 is -1..+1 (0 excluded)
        return (1 << self.bits) - 1


_FORMATS = {f.name: f for f in (
    Format('int8', 8, 'int'), Format('int4', 4, 'int'), Format('int2', 2, 'int'),
    Format('int1', 1, 'int'), Format('uint4', 4, 'uint'), Format('uint2', 2, 'uint'),
    Format('uint1', 1, 'uint'), Format('fp4_e2m1', 4, 'fp4'), Format('nf4', 4, 'nf4'),
    Format('float16', 16, 'float'),
)}


def format_of(W_dtype: str) -> Format:
    """Return the :class:`Format` of a W_dtype name; ValueError for unknown names."""
    if W_dtype not in _FORMATS:
        raise ValueError(f"unknown W_dtype {W_dtype!r}; allowed: {', '.join(WEIGHT_DTYPES)}")
    return _FORMATS[W_dtype]


def _quantized_format(W_dtype: str) -> Format:
    """The Format of a low-bit (integer-coded) W_dtype; ValueError for float16."""
    fmt = format_of(W_dtype)
    if fmt.kind == 'float':
        raise ValueError(f"W_dtype {W_dtype!r} is not a quantized type: it has no "
                         f"integer values or codes")
    return fmt


def _require_integer(tensor: torch.Tensor, what: str) -> None:
    """Raise TypeError unless ``tensor`` is a torch tensor of an integer dtype."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype not in _INTEGER_DTYPES:
        raise TypeError(f"{what} must have an integer dtype, got {tensor.dtype}")


def _require_codes(codes: torch.Tensor, bits: int, what: str) -> None:
    """Raise unless ``codes`` is an integer tensor with values in [0, 2**bits)."""
    _require_integer(codes, what)
    if codes.numel() == 0:
        return
    lo, hi = codes.min().item(), codes.max().item()
    if lo < 0 or hi >= (1 << bits):
        raise ValueError(f"{what} must be {bits}-bit codes in [0, {(1 << bits) - 1}]; "
                         f"got min {lo}, max {hi}")


def check_range(weight: torch.Tensor, W_dtype: str) -> None:
    """Check that ``weight`` holds valid logical values of ``W_dtype``.

    ``weight`` must be an integer tensor (TypeError otherwise). A value outside
    ``[lo, hi]`` raises ValueError naming the dtype, the range and the tensor's
    min and max; for int1 the only allowed values are -1 and +1.
    """
    fmt = _quantized_format(W_dtype)
    _require_integer(weight, f"{W_dtype} weight")
    if weight.numel() == 0:
        return
    lo, hi = weight.min().item(), weight.max().item()
    if lo < fmt.lo or hi > fmt.hi:
        allowed = '{-1, +1}' if W_dtype == 'int1' else f"[{fmt.lo}, {fmt.hi}]"
        raise ValueError(f"{W_dtype} weight values must be in {allowed}; "
                         f"got min {lo}, max {hi}")
    if W_dtype == 'int1' and bool((weight == 0).any()):
        raise ValueError(f"int1 weight values must be in {{-1, +1}} (0 is not allowed); "
                         f"got min {lo}, max {hi} and a 0")


def random_values(W_dtype: str, shape, **randint_kwargs) -> torch.Tensor:
    """Uniformly random valid logical values of an integer or code ``W_dtype`` (int1: -1 and +1 only);
    ``randint_kwargs`` (generator, device) go to torch.randint."""
    fmt = format_of(W_dtype)
    if fmt.kind == 'float':
        raise ValueError(f"random_values draws integer values or codes; W_dtype={W_dtype!r} is a float type")
    if W_dtype == 'int1':
        return torch.randint(0, 2, shape, **randint_kwargs) * 2 - 1
    return torch.randint(fmt.lo, fmt.hi + 1, shape, **randint_kwargs)


def to_codes(weight: torch.Tensor, W_dtype: str) -> torch.Tensor:
    """Map logical values to ``bits``-bit storage codes (a uint8 tensor).

    Signed ints become their two's complement truncated to ``bits`` (int4 -3 -> 13,
    int8 -1 -> 255); uint values and fp4/nf4 codes are kept; int1 maps -1 -> 0, +1 -> 1.
    The values are checked with :func:`check_range` first.
    """
    check_range(weight, W_dtype)
    if W_dtype == 'int1':
        return (weight > 0).to(torch.uint8)
    mask = (1 << format_of(W_dtype).bits) - 1
    return (weight.to(torch.int64) & mask).to(torch.uint8)


def decode_codes(codes: torch.Tensor, W_dtype: str) -> torch.Tensor:
    """Reference decoder: storage codes -> decoded values as a float64 tensor.

    int1: code 0 -> -1.0, 1 -> +1.0; other ints: sign extension; uint: the value;
    fp4_e2m1 / nf4: :data:`FP4_E2M1_TABLE` / :data:`NF4_TABLE`. Codes outside
    ``[0, 2**bits)`` raise ValueError.
    """
    fmt = _quantized_format(W_dtype)
    _require_codes(codes, fmt.bits, f"{W_dtype} codes")
    c = codes.to(torch.int64)
    if fmt.kind in ('fp4', 'nf4'):
        table = FP4_E2M1_TABLE if fmt.kind == 'fp4' else NF4_TABLE
        return torch.tensor(table, dtype=torch.float64, device=codes.device)[c]
    if W_dtype == 'int1':
        c = 2 * c - 1
    elif fmt.kind == 'int':
        c = torch.where(c >= (1 << (fmt.bits - 1)), c - (1 << fmt.bits), c)
    return c.to(torch.float64)


def _pack_layout(bits: int) -> Tuple[int, int]:
    """Validate ``bits`` and return (values per byte, mask of one value)."""
    if bits not in _PACK_BITS:
        raise ValueError(f"bits must be one of {_PACK_BITS}, got {bits}")
    return 8 // bits, (1 << bits) - 1


def pack(codes: torch.Tensor, bits: int, dim: int = -1) -> torch.Tensor:
    """Pack ``bits``-bit codes LSB-first along ``dim`` into an int8 tensor.

    Element ``j`` along ``dim`` lands at bits ``(j % (8 // bits)) * bits`` of byte
    ``j // (8 // bits)``, so that axis shrinks by ``8 // bits``; its size must be a
    multiple of ``8 // bits``. Codes must lie in ``[0, 2**bits)``.
    """
    per_byte, _ = _pack_layout(bits)
    _require_codes(codes, bits, "codes")
    c = codes.movedim(dim, -1).to(torch.int32)
    n = c.shape[-1]
    if n % per_byte:
        raise ValueError(f"size {n} along dim {dim} is not a multiple of {per_byte} "
                         f"({bits}-bit values per byte)")
    c = c.reshape(*c.shape[:-1], n // per_byte, per_byte)
    shifts = torch.arange(per_byte, dtype=torch.int32, device=c.device) * bits
    packed = (c << shifts).sum(dim=-1)  # disjoint bit fields: sum == bitwise or
    return packed.to(torch.uint8).view(torch.int8).movedim(-1, dim).contiguous()


def unpack(packed: torch.Tensor, bits: int, dim: int = -1) -> torch.Tensor:
    """Inverse of :func:`pack`: int8 (or uint8) bytes -> uint8 codes along ``dim``."""
    per_byte, mask = _pack_layout(bits)
    if not isinstance(packed, torch.Tensor) or packed.dtype not in (torch.int8, torch.uint8):
        raise TypeError(f"packed must be an int8 or uint8 tensor, got "
                        f"{getattr(packed, 'dtype', type(packed).__name__)}")
    p = packed.view(torch.uint8).movedim(dim, -1).to(torch.int32)
    shifts = torch.arange(per_byte, dtype=torch.int32, device=p.device) * bits
    codes = (p.unsqueeze(-1) >> shifts) & mask
    codes = codes.reshape(*p.shape[:-1], p.shape[-1] * per_byte)
    return codes.to(torch.uint8).movedim(-1, dim).contiguous()


def pack_zeros_quantized(zero_codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack 'quantized'-mode zero codes [N, K//G] into int8 [K//G, N * bits // 8].

    The codes are transposed and packed LSB-first along N (SPEC "Matmul" table).
    """
    _require_codes(zero_codes, bits, "zero codes")
    if zero_codes.dim() != 2:
        raise ValueError(f"zero codes must be [N, K//G], got shape {tuple(zero_codes.shape)}")
    return pack(zero_codes.t(), bits, dim=-1)


def unpack_zeros_quantized(packed: torch.Tensor, bits: int, N: int) -> torch.Tensor:
    """Inverse of :func:`pack_zeros_quantized`: int8 [K//G, N*bits/8] -> uint8 [N, K//G]."""
    per_byte, _ = _pack_layout(bits)
    if packed.dim() != 2 or packed.shape[1] * per_byte != N:
        raise ValueError(f"packed zeros for N={N} at {bits} bits must be "
                         f"[K//G, {N * bits // 8}], got shape {tuple(packed.shape)}")
    return unpack(packed, bits, dim=-1).t().contiguous()


def _group_count(K: int, group_size: int) -> int:
    """Number of groups along K; ValueError unless group_size is -1 or divides K."""
    if group_size == -1:
        return 1
    if group_size <= 0 or K % group_size:
        raise ValueError(f"group_size must be -1 or a positive divisor of K={K}, "
                         f"got {group_size}")
    return K // group_size


def _require_group_shape(t: torch.Tensor, N: int, groups: int, what: str) -> None:
    """Raise ValueError unless ``t`` has the per-group shape [N, groups]."""
    if tuple(t.shape) != (N, groups):
        raise ValueError(f"{what} must have shape [N, K//G] = [{N}, {groups}], "
                         f"got {tuple(t.shape)}")


def dequantize_reference(codes: torch.Tensor, W_dtype: str, scale: Optional[torch.Tensor] = None,
                         zeros: Optional[torch.Tensor] = None, zeros_mode: str = 'original',
                         group_size: int = -1) -> torch.Tensor:
    """Dequantize [N, K] storage codes to float64 [N, K] following the SPEC semantics.

    With ``w`` the decoded code, ``s``/``z`` the group's scale/zero and ``qz`` the
    group's integer zero code: no scale: ``w``; scale only: ``w * s``;
    'original': ``(w - z) * s``; 'rescale': ``w * s - z``; 'quantized': ``(w - qz) * s``.
    ``scale`` and float zeros are [N, K//G]; 'quantized' zeros are the unpacked
    integer codes [N, K//G]. All arithmetic is float64.
    """
    zeros_mode = 'original' if zeros_mode is None else zeros_mode
    if zeros_mode not in ZEROS_MODES:
        raise ValueError(f"zeros_mode must be one of {ZEROS_MODES}, got {zeros_mode!r}")
    if codes.dim() != 2:
        raise ValueError(f"codes must be [N, K], got shape {tuple(codes.shape)}")
    w = decode_codes(codes, W_dtype)
    if scale is None:
        if zeros is not None:
            raise ValueError("zeros need a scale")
        return w
    N, K = w.shape
    groups = _group_count(K, group_size)
    _require_group_shape(scale, N, groups, "scale")
    s = scale.to(torch.float64).repeat_interleave(K // groups, dim=1)
    if zeros is None:
        return w * s
    _require_group_shape(zeros, N, groups, "zeros")
    if zeros_mode == 'quantized':
        _require_codes(zeros, format_of(W_dtype).bits, "quantized zeros")
    z = zeros.to(torch.float64).repeat_interleave(K // groups, dim=1)
    if zeros_mode == 'rescale':
        return w * s - z
    return (w - z) * s


def _nearest_code(x: torch.Tensor, table: Tuple[float, ...]) -> torch.Tensor:
    """Code of the table entry nearest to each value (ties: the lowest code)."""
    values = torch.tensor(table, dtype=torch.float64, device=x.device)
    return (x.unsqueeze(-1) - values).abs().argmin(dim=-1)


def _to_float16(raw: torch.Tensor, what: str) -> torch.Tensor:
    """Round float64 per-group parameters to float16; ValueError if one overflows."""
    out = raw.to(torch.float16)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"a quantization {what} overflows float16")
    return out


def _to_scale(raw: torch.Tensor) -> torch.Tensor:
    """Round per-group scales up to float16, replacing 0 (an all-zero group) by 1. Rounding up keeps the
    grid as wide as the group's range: rounded to nearest, a float16 scale up to 2^-11 short let a
    weight at the edge of a group with 'quantized' (integer) zeros land more than half a step from
    the grid."""
    s = raw.to(torch.float16)
    s = torch.where(s.to(raw.dtype) < raw, torch.nextafter(s, torch.full_like(s, float("inf"))), s)
    return _to_float16(torch.where(s == 0, torch.ones_like(s), s), "scale")


def _quantize_symmetric(w: torch.Tensor, fmt: Format) -> Tuple[torch.Tensor, torch.Tensor]:
    """Symmetric quantization of grouped float64 ``w`` [N, groups, G] -> (values, scale)."""
    if fmt.name == 'int1':
        scale = _to_scale(w.abs().mean(dim=-1, keepdim=True))
        return torch.where(w >= 0, 1, -1), scale
    absmax = w.abs().amax(dim=-1, keepdim=True)
    if fmt.kind in ('fp4', 'nf4'):
        table = FP4_E2M1_TABLE if fmt.kind == 'fp4' else NF4_TABLE
        scale = _to_scale(absmax / max(table))
        return _nearest_code(w / scale.to(torch.float64), table), scale
    scale = _to_scale(absmax / fmt.hi)
    q = torch.round(w / scale.to(torch.float64)).clamp(fmt.lo, fmt.hi)
    return q, scale


def _quantize_asymmetric(w: torch.Tensor, fmt: Format, zeros_mode: str):
    """Min/max quantization of grouped float64 ``w`` [N, groups, G] -> (values, scale, zeros)."""
    lo, hi = w.amin(dim=-1, keepdim=True), w.amax(dim=-1, keepdim=True)
    if zeros_mode == 'quantized':  # the grid must contain 0 for an in-range zero code
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    scale = _to_scale((hi - lo) / fmt.hi)
    s = scale.to(torch.float64)
    if zeros_mode == 'original':
        zeros = _to_float16(-lo / s, "zero")
        q = w / s + zeros.to(torch.float64)
    elif zeros_mode == 'rescale':
        zeros = _to_float16(-lo, "zero")
        q = (w + zeros.to(torch.float64)) / s
    else:
        zeros = torch.round(-lo / s).clamp(0, fmt.hi).to(torch.int8)
        q = w / s + zeros.to(torch.float64)
    return torch.round(q).clamp(0, fmt.hi), scale, zeros


def quantize(weight: torch.Tensor, W_dtype: str, group_size: int = -1, with_zeros: bool = False,
             zeros_mode: str = 'original'):
    """Round-to-nearest quantization of a float [N, K] weight, per group of K.

    Returns ``(values, scale, zeros)``: int8 logical values [N, K] accepted by
    :func:`check_range`, float16 scales [N, K//G] (rounded up, so that the grid spans each
    group; 0 replaced by 1) and zeros
    (None without ``with_zeros``). Dequantizing ``to_codes(values)`` with
    :func:`dequantize_reference` and the same arguments approximates ``weight``.

    * int8/int4/int2: symmetric, ``scale = absmax / hi`` (7 for int4), values rounded
      to nearest and clamped to the range.
    * int1: sign (0 -> +1), ``scale = mean |w|``.
    * fp4_e2m1 / nf4: ``scale = absmax / 6`` / ``absmax / 1``; each value becomes the
      code of the nearest table entry (ties: the lowest code, so 0 -> code 0).
    * uint types need ``with_zeros`` (asymmetric min/max, ``scale = (max-min)/hi``):
      'original' zeros ``-min/scale`` and 'rescale' zeros ``-min`` as float16;
      'quantized' zeros are int8 codes ``round(-min/scale)`` clamped to ``[0, hi]``, with
      min/max first widened to include 0 so that the zero code is in range.

    The values are rounded against the float16 scale (and zeros) that are returned.
    """
    fmt = _quantized_format(W_dtype)
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        raise TypeError(f"weight must be a floating-point tensor, got "
                        f"{getattr(weight, 'dtype', type(weight).__name__)}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be [N, K], got shape {tuple(weight.shape)}")
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("weight has non-finite values")
    if fmt.kind == 'uint' and not with_zeros:
        raise ValueError(f"{W_dtype} needs with_zeros=True (its values are not centred on 0)")
    if with_zeros and fmt.kind != 'uint':
        raise ValueError(f"with_zeros needs a uint W_dtype (uint4, uint2, uint1), got {W_dtype}")
    zeros_mode = 'original' if zeros_mode is None else zeros_mode
    if with_zeros and zeros_mode not in ZEROS_MODES:
        raise ValueError(f"zeros_mode must be one of {ZEROS_MODES}, got {zeros_mode!r}")
    N, K = weight.shape
    groups = _group_count(K, group_size)
    w = weight.to(torch.float64).reshape(N, groups, K // groups)
    if with_zeros:
        q, scale, zeros = _quantize_asymmetric(w, fmt, zeros_mode)
        zeros = zeros.reshape(N, groups)
    else:
        (q, scale), zeros = _quantize_symmetric(w, fmt), None
    return q.reshape(N, K).to(torch.int8), scale.reshape(N, groups), zeros
