"""Tests of lowbit.formats: ranges, codes, packing, zeros layout and reference math.

Random data comes from a fresh seed each run; every assertion that depends on it
names the seed so that a failure can be reproduced.
"""

import random

import pytest
import torch

from lowbit import formats as F

QUANTIZED = [d for d in F.WEIGHT_DTYPES if d != 'float16']
UINTS = ['uint4', 'uint2', 'uint1']
# (W_dtype, logical lo, logical hi) straight from the SPEC table.
SPEC_RANGES = [('int8', -128, 127), ('int4', -8, 7), ('int2', -2, 1), ('int1', -1, 1),
               ('uint4', 0, 15), ('uint2', 0, 3), ('uint1', 0, 1),
               ('fp4_e2m1', 0, 15), ('nf4', 0, 15)]
SPEC_NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
            -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
            0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
            0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]


@pytest.fixture
def seed():
    """A fresh seed per test; include it in assertion messages."""
    return random.SystemRandom().randrange(2 ** 31)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def random_logical(W_dtype, shape, g):
    """Random valid logical values of W_dtype (int1: -1/+1 only)."""
    fmt = F.format_of(W_dtype)
    if W_dtype == 'int1':
        return torch.randint(0, 2, shape, generator=g) * 2 - 1
    return torch.randint(fmt.lo, fmt.hi + 1, shape, generator=g)


# ---------------------------------------------------------------- formats


def test_weight_dtypes_and_formats():
    assert F.WEIGHT_DTYPES == ('int8', 'int4', 'int2', 'int1', 'uint4', 'uint2', 'uint1',
                               'fp4_e2m1', 'nf4', 'float16')
    for name, lo, hi in SPEC_RANGES:
        fmt = F.format_of(name)
        assert (fmt.name, fmt.lo, fmt.hi) == (name, lo, hi)
        assert fmt.packed == (fmt.bits < 8)
        assert fmt.per_byte == (8 // fmt.bits if fmt.bits < 8 else 1)
    f16 = F.format_of('float16')
    assert (f16.bits, f16.kind, f16.packed, f16.per_byte, f16.lo, f16.hi) == \
        (16, 'float', False, 1, None, None)
    assert [F.format_of(n).bits for n in ('int8', 'int4', 'int2', 'int1', 'nf4')] == [8, 4, 2, 1, 4]
    assert F.format_of('fp4_e2m1').kind == 'fp4' and F.format_of('uint2').kind == 'uint'


@pytest.mark.parametrize('W_dtype,lo,hi', SPEC_RANGES)
def test_random_values_cover_the_valid_range(W_dtype, lo, hi, seed):
    """random_values draws every valid value of the dtype and nothing else (int1: -1 and +1, never 0),
    so what it draws passes check_range; float16 is refused by name."""
    values = F.random_values(W_dtype, (64, 64), generator=torch.Generator().manual_seed(seed))
    F.check_range(values, W_dtype)
    valid = {-1, 1} if W_dtype == 'int1' else set(range(lo, hi + 1))
    assert set(values.unique().tolist()) == valid, f"seed={seed}"
    with pytest.raises(ValueError, match="float16"):
        F.random_values('float16', (2, 2))


def test_format_is_frozen():
    with pytest.raises(Exception):
        F.format_of('int4').bits = 3


def test_format_of_unknown_lists_allowed():
    with pytest.raises(ValueError, match='int3') as err:
        F.format_of('int3')
    for name in F.WEIGHT_DTYPES:
        assert name in str(err.value)


# ---------------------------------------------------------------- tables


def test_nf4_table_matches_spec():
    assert len(F.NF4_TABLE) == 16
    assert list(F.NF4_TABLE) == SPEC_NF4
    assert all(isinstance(v, float) for v in F.NF4_TABLE)


def test_fp4_table_is_e2m1():
    def e2m1(code):
        s, e, m = code >> 3, (code >> 1) & 3, code & 1
        mag = m * 0.5 if e == 0 else (1 + m / 2) * 2.0 ** (e - 1)
        return -mag if s else mag
    assert list(F.FP4_E2M1_TABLE) == [e2m1(c) for c in range(16)]
    assert F.FP4_E2M1_TABLE[:8] == (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
    assert str(F.FP4_E2M1_TABLE[8]) == '-0.0'


def test_decode_tables():
    codes = torch.arange(16, dtype=torch.uint8)
    assert F.decode_codes(codes, 'nf4').tolist() == SPEC_NF4
    assert F.decode_codes(codes, 'fp4_e2m1').tolist() == list(F.FP4_E2M1_TABLE)
    assert F.decode_codes(codes, 'nf4').dtype == torch.float64


def test_decode_ints():
    assert F.decode_codes(torch.tensor([0, 1], dtype=torch.uint8), 'int1').tolist() == [-1.0, 1.0]
    assert F.decode_codes(torch.arange(16), 'int4').tolist() == list(range(8)) + list(range(-8, 0))
    assert F.decode_codes(torch.arange(4), 'int2').tolist() == [0.0, 1.0, -2.0, -1.0]
    assert F.decode_codes(torch.tensor([0, 127, 128, 255]), 'int8').tolist() == [0, 127, -128, -1]
    assert F.decode_codes(torch.arange(4), 'uint2').tolist() == [0.0, 1.0, 2.0, 3.0]


def test_decode_rejects_out_of_range_codes():
    with pytest.raises(ValueError, match='int4'):
        F.decode_codes(torch.tensor([16]), 'int4')


# ---------------------------------------------------------------- ranges


@pytest.mark.parametrize('W_dtype,lo,hi', SPEC_RANGES)
def test_range_accepts_full_range(W_dtype, lo, hi):
    values = torch.tensor([-1, 1]) if W_dtype == 'int1' else torch.arange(lo, hi + 1)
    for dtype in (torch.int16, torch.int32, torch.int64):
        F.check_range(values.to(dtype), W_dtype)  # must not raise
    with pytest.raises(ValueError):  # the boundary is exactly at lo/hi
        F.check_range(torch.tensor([hi + 1]), W_dtype)


@pytest.mark.parametrize('W_dtype,lo,hi', SPEC_RANGES)
@pytest.mark.parametrize('side', ['low', 'high'])
def test_range_error_names_dtype_range_min_max(W_dtype, lo, hi, side):
    bad = lo - 3 if side == 'low' else hi + 5
    weight = torch.tensor([[lo, hi], [bad, hi if side == 'low' else lo]], dtype=torch.int32)
    with pytest.raises(ValueError) as err:
        F.check_range(weight, W_dtype)
    msg = str(err.value)
    assert W_dtype in msg
    assert f'min {weight.min().item()}' in msg and f'max {weight.max().item()}' in msg
    if W_dtype != 'int1':
        assert f'[{lo}, {hi}]' in msg
    with pytest.raises(ValueError, match=W_dtype):
        F.to_codes(weight, W_dtype)


def test_int1_rejects_zero():
    with pytest.raises(ValueError, match='int1') as err:
        F.check_range(torch.tensor([-1, 0, 1]), 'int1')
    assert '-1' in str(err.value) and '+1' in str(err.value)
    with pytest.raises(ValueError, match='int1'):
        F.to_codes(torch.zeros(4, dtype=torch.int8), 'int1')


@pytest.mark.parametrize('dtype', [torch.float16, torch.float32, torch.bool])
def test_range_requires_integer_tensor(dtype):
    with pytest.raises(TypeError, match=str(dtype)):
        F.check_range(torch.zeros(4, dtype=dtype), 'int4')


def test_float16_has_no_codes():
    with pytest.raises(ValueError, match='float16'):
        F.check_range(torch.zeros(4, dtype=torch.int8), 'float16')


# ---------------------------------------------------------------- codes


def test_to_codes_explicit():
    assert F.to_codes(torch.tensor([-3, 7, -8, 0]), 'int4').tolist() == [13, 7, 8, 0]
    assert F.to_codes(torch.tensor([-1, 1, 1]), 'int1').tolist() == [0, 1, 1]
    assert F.to_codes(torch.tensor([-2, -1, 0, 1]), 'int2').tolist() == [2, 3, 0, 1]
    assert F.to_codes(torch.tensor([3, 0]), 'uint2').tolist() == [3, 0]
    assert F.to_codes(torch.tensor([15, 8]), 'nf4').tolist() == [15, 8]
    int8 = torch.tensor([-128, -1, 0, 127], dtype=torch.int8)
    codes = F.to_codes(int8, 'int8')
    assert codes.dtype == torch.uint8
    assert torch.equal(codes, int8.view(torch.uint8))


@pytest.mark.parametrize('W_dtype', QUANTIZED)
def test_codes_round_trip_to_logical(W_dtype, seed):
    """decode(to_codes(v)) == v for integer types; codes fit in `bits` bits."""
    weight = random_logical(W_dtype, (7, 33), gen(seed))
    codes = F.to_codes(weight, W_dtype)
    bits = F.format_of(W_dtype).bits
    assert codes.dtype == torch.uint8 and int(codes.max()) < 2 ** bits, f'seed={seed}'
    decoded = F.decode_codes(codes, W_dtype)
    if F.format_of(W_dtype).kind in ('int', 'uint'):
        assert torch.equal(decoded, weight.double()), f'seed={seed}'
    else:
        assert torch.equal(codes.long(), weight), f'seed={seed}'


# ---------------------------------------------------------------- packing


def byte(value):
    """An unsigned byte value as the int8 that stores it."""
    return value - 256 if value > 127 else value


def test_pack_layout_bytes():
    assert F.pack(torch.tensor([1, 2]), 4).tolist() == [byte(0x21)]
    assert F.pack(torch.tensor([0, 1, 2, 3]), 2).tolist() == [byte(0b11100100)]
    assert F.pack(torch.tensor([1, 0, 0, 0, 0, 0, 0, 1]), 1).tolist() == [byte(0x81)]
    assert F.pack(torch.tensor([0xF, 0x0, 0xA, 0x5]), 4).tolist() == [byte(0x0F), byte(0x5A)]
    assert F.pack(torch.tensor([200, 3]), 8).tolist() == [byte(200), 3]
    assert F.pack(torch.tensor([1, 2]), 4).dtype == torch.int8


def test_pack_layout_along_dim0():
    codes = torch.tensor([[1, 3], [2, 4]])  # pairs along dim 0: (1, 2) and (3, 4)
    assert F.pack(codes, 4, dim=0).tolist() == [[0x21, 0x43]]


def test_unpack_layout_bytes():
    assert F.unpack(torch.tensor([byte(0b11100100)], dtype=torch.int8), 2).tolist() == [0, 1, 2, 3]
    assert F.unpack(torch.tensor([0x21], dtype=torch.uint8), 4).tolist() == [1, 2]


@pytest.mark.parametrize('bits', [1, 2, 4, 8])
@pytest.mark.parametrize('dim', [0, 1, 2, -1, -2])
def test_pack_unpack_round_trip(bits, dim, seed):
    per_byte = 8 // bits
    shape = [3 * per_byte, 2 * per_byte, 5 * per_byte]
    codes = torch.randint(0, 2 ** bits, shape, generator=gen(seed), dtype=torch.uint8)
    packed = F.pack(codes, bits, dim)
    expected_shape = list(shape)
    expected_shape[dim] //= per_byte
    assert list(packed.shape) == expected_shape and packed.dtype == torch.int8, f'seed={seed}'
    back = F.unpack(packed, bits, dim)
    assert back.dtype == torch.uint8
    assert torch.equal(back, codes), f'seed={seed}'


def test_pack_matches_formula(seed):
    """Every code sits at bits (j % per_byte) * bits of byte j // per_byte."""
    for bits in (1, 2, 4):
        per_byte = 8 // bits
        codes = torch.randint(0, 2 ** bits, (64,), generator=gen(seed))
        packed = F.pack(codes, bits).view(torch.uint8).tolist()
        for j, c in enumerate(codes.tolist()):
            got = (packed[j // per_byte] >> ((j % per_byte) * bits)) & (2 ** bits - 1)
            assert got == c, f'seed={seed} bits={bits} j={j}'


def test_pack_rejects_bad_input():
    with pytest.raises(ValueError, match='multiple of 2'):
        F.pack(torch.zeros(3, dtype=torch.uint8), 4)
    with pytest.raises(ValueError, match='bits'):
        F.pack(torch.zeros(8, dtype=torch.uint8), 3)
    with pytest.raises(ValueError, match='max 16'):
        F.pack(torch.tensor([16, 0]), 4)
    with pytest.raises(TypeError):
        F.pack(torch.zeros(2), 4)


# ---------------------------------------------------------------- quantized zeros


def test_zeros_quantized_layout():
    zero_codes = torch.tensor([[1, 5], [2, 6], [3, 7], [4, 8]])  # [N=4, K//G=2]
    packed = F.pack_zeros_quantized(zero_codes, 4)
    assert packed.dtype == torch.int8
    assert packed.tolist() == [[0x21, 0x43], [0x65, byte(0x87)]]  # [K//G, N/2], packed along N


@pytest.mark.parametrize('bits', [1, 2, 4])
def test_zeros_quantized_round_trip(bits, seed):
    N, groups = 32, 3
    zero_codes = torch.randint(0, 2 ** bits, (N, groups), generator=gen(seed))
    packed = F.pack_zeros_quantized(zero_codes, bits)
    assert tuple(packed.shape) == (groups, N * bits // 8), f'seed={seed}'
    back = F.unpack_zeros_quantized(packed, bits, N)
    assert back.dtype == torch.uint8
    assert torch.equal(back.long(), zero_codes), f'seed={seed}'


def test_zeros_quantized_rejects_out_of_range():
    with pytest.raises(ValueError, match='max 4'):
        F.pack_zeros_quantized(torch.tensor([[4], [0], [1], [2]]), 2)
    with pytest.raises(ValueError, match='min -1'):
        F.pack_zeros_quantized(torch.tensor([[-1], [0]]), 4)
    with pytest.raises(ValueError, match='N=6'):
        F.unpack_zeros_quantized(torch.zeros(2, 4, dtype=torch.int8), 4, 6)


# ---------------------------------------------------------------- dequantize_reference


def grouped(t, G):
    """Repeat a per-group [N, K//G] tensor along K, by explicit indexing."""
    K = t.shape[1] * G
    return t.double()[:, [k // G for k in range(K)]]


@pytest.mark.parametrize('W_dtype', ['uint4', 'uint2', 'uint1', 'int4'])
@pytest.mark.parametrize('mode', [None, 'scale', 'original', 'rescale', 'quantized'])
@pytest.mark.parametrize('group_size', [-1, 32])
def test_dequantize_reference_modes(W_dtype, mode, group_size, seed):
    g = gen(seed)
    N, K = 8, 64
    G = K if group_size == -1 else group_size
    bits = F.format_of(W_dtype).bits
    codes = torch.randint(0, 2 ** bits, (N, K), generator=g, dtype=torch.uint8)
    w = F.decode_codes(codes, W_dtype)
    scale = (torch.rand(N, K // G, generator=g) + 0.5).half()
    fzeros = (torch.randn(N, K // G, generator=g) * 3).half()
    qzeros = torch.randint(0, 2 ** bits, (N, K // G), generator=g)
    s = grouped(scale, G)
    if mode is None:
        got, want = F.dequantize_reference(codes, W_dtype), w
    elif mode == 'scale':
        got = F.dequantize_reference(codes, W_dtype, scale, group_size=group_size)
        want = w * s
    elif mode == 'quantized':
        got = F.dequantize_reference(codes, W_dtype, scale, qzeros, mode, group_size)
        want = (w - grouped(qzeros, G)) * s
    else:
        got = F.dequantize_reference(codes, W_dtype, scale, fzeros, mode, group_size)
        z = grouped(fzeros, G)
        want = (w - z) * s if mode == 'original' else w * s - z
    assert got.dtype == torch.float64 and got.shape == (N, K)
    assert torch.equal(got, want), f'seed={seed}'


def test_dequantize_reference_explicit_values():
    codes = torch.tensor([[0, 3, 1, 2]], dtype=torch.uint8)  # uint2, N=1, K=4, G=2
    scale = torch.tensor([[0.5, 2.0]], dtype=torch.float16)
    zeros = torch.tensor([[1.0, 0.25]], dtype=torch.float16)
    deq = F.dequantize_reference
    assert deq(codes, 'uint2', scale, group_size=2).tolist() == [[0.0, 1.5, 2.0, 4.0]]
    assert deq(codes, 'uint2', scale, zeros, 'original', 2).tolist() == [[-0.5, 1.0, 1.5, 3.5]]
    assert deq(codes, 'uint2', scale, zeros, 'rescale', 2).tolist() == [[-1.0, 0.5, 1.75, 3.75]]
    qz = torch.tensor([[1, 2]])
    assert deq(codes, 'uint2', scale, qz, 'quantized', 2).tolist() == [[-0.5, 1.0, -2.0, 0.0]]


def test_dequantize_reference_rejects_bad_arguments():
    codes = torch.zeros(2, 64, dtype=torch.uint8)
    scale = torch.ones(2, 2, dtype=torch.float16)
    with pytest.raises(ValueError, match='shape'):
        F.dequantize_reference(codes, 'uint4', scale)  # group_size -1 needs [2, 1]
    with pytest.raises(ValueError, match='group_size'):
        F.dequantize_reference(codes, 'uint4', scale, group_size=48)
    with pytest.raises(ValueError, match='zeros_mode'):
        F.dequantize_reference(codes, 'uint4', scale, scale, 'bogus', 32)
    with pytest.raises(ValueError, match='quantized zeros'):
        F.dequantize_reference(codes, 'uint4', scale, torch.full((2, 2), 16), 'quantized', 32)
    with pytest.raises(ValueError, match='scale'):
        F.dequantize_reference(codes, 'uint4', zeros=scale)


# ---------------------------------------------------------------- quantize


def quantize_and_back(weight, W_dtype, group_size, mode=None):
    """quantize, check the returned tensors, and dequantize with the reference."""
    with_zeros = mode is not None
    q, scale, zeros = F.quantize(weight, W_dtype, group_size, with_zeros, mode or 'original')
    N, K = weight.shape
    groups = 1 if group_size == -1 else K // group_size
    assert q.shape == (N, K) and q.dtype in (torch.int8, torch.int16)
    F.check_range(q, W_dtype)
    assert scale.dtype == torch.float16 and scale.shape == (N, groups)
    assert bool((scale != 0).all())
    assert (zeros is None) == (not with_zeros)
    if with_zeros:
        assert zeros.shape == (N, groups)
        assert zeros.dtype == (torch.int8 if mode == 'quantized' else torch.float16)
    codes = F.to_codes(q, W_dtype)
    return F.dequantize_reference(codes, W_dtype, scale, zeros, mode or 'original', group_size)


def rel_error(deq, weight):
    return ((deq - weight.double()).norm() / weight.double().norm()).item()


@pytest.mark.parametrize('W_dtype,bound', [('int8', 0.01), ('int4', 0.15)])
@pytest.mark.parametrize('group_size', [-1, 32])
def test_quantize_int_relative_error(W_dtype, bound, group_size, seed):
    weight = torch.randn(16, 128, generator=gen(seed))
    deq = quantize_and_back(weight, W_dtype, group_size)
    assert rel_error(deq, weight) < bound, f'seed={seed}'


def test_quantize_int8_error_within_half_step(seed):
    weight = torch.randn(8, 64, generator=gen(seed)) * 10
    q, scale, _ = F.quantize(weight, 'int8', 32)
    deq = F.dequantize_reference(F.to_codes(q, 'int8'), 'int8', scale, group_size=32)
    half_step = grouped(scale, 32) / 2
    assert bool(((deq - weight.double()).abs() <= half_step * 1.001).all()), f'seed={seed}'


ALL_QUANTIZERS = ([(d, None) for d in QUANTIZED if d not in UINTS]
                  + [(d, m) for d in UINTS for m in F.ZEROS_MODES])


@pytest.mark.parametrize('W_dtype,mode', ALL_QUANTIZERS)
def test_quantize_every_dtype_is_finite(W_dtype, mode, seed):
    weight = torch.randn(8, 64, generator=gen(seed)) + (1.0 if mode else 0.0)
    deq = quantize_and_back(weight, W_dtype, 32, mode)
    assert bool(torch.isfinite(deq).all()), f'seed={seed}'
    if W_dtype not in UINTS:  # symmetric: no worse than predicting all zeros
        assert rel_error(deq, weight) < 1.0, f'seed={seed}'


@pytest.mark.parametrize('W_dtype,mode', [(d, m) for d, m in ALL_QUANTIZERS
                                          if F.format_of(d).kind == 'uint' or d in ('int4', 'int2')])
def test_quantize_integer_grid_error_per_element(W_dtype, mode, seed):
    """Each value lands within half a step of its grid point (a full step in
    'quantized' mode, whose zero is rounded to a code), up to float16 rounding."""
    weight = torch.randn(8, 64, generator=gen(seed)) + (1.0 if mode else 0.0)
    deq = quantize_and_back(weight, W_dtype, 32, mode)
    _, scale, _ = F.quantize(weight, W_dtype, 32, mode is not None, mode or 'original')
    steps = 1.0 if mode == 'quantized' else 0.5
    bound = grouped(scale, 32) * steps + 1e-3 * weight.abs().max().item()
    assert bool(((deq - weight.double()).abs() <= bound).all()), f'seed={seed}'


def on_grid_weight(W_dtype, g, N=4, K=64, G=32):
    """Values exactly on a quantization grid whose scale quantize recovers exactly."""
    fmt = F.format_of(W_dtype)
    s = grouped(2.0 ** -torch.randint(0, 6, (N, K // G), generator=g), G)
    if W_dtype == 'int1':
        return random_logical(W_dtype, (N, K), g) * s
    if fmt.kind in ('fp4', 'nf4'):
        table = torch.tensor(F.FP4_E2M1_TABLE if fmt.kind == 'fp4' else F.NF4_TABLE)
        codes = torch.randint(0, 16, (N, K), generator=g)
        codes[:, ::G] = 15  # the table's largest magnitude sets absmax
        return table.double()[codes] * s
    q = torch.randint(-fmt.hi, fmt.hi + 1, (N, K), generator=g)
    q[:, ::G] = fmt.hi
    return q * s


@pytest.mark.parametrize('W_dtype', [d for d in QUANTIZED if d not in UINTS])
def test_quantize_exact_on_grid(W_dtype, seed):
    weight = on_grid_weight(W_dtype, gen(seed))
    deq = quantize_and_back(weight.float(), W_dtype, 32)
    assert torch.equal(deq, weight), f'seed={seed}'


@pytest.mark.parametrize('W_dtype', UINTS)
@pytest.mark.parametrize('mode', F.ZEROS_MODES)
def test_quantize_uint_exact_on_grid(W_dtype, mode, seed):
    g = gen(seed)
    N, K, G = 4, 64, 32
    hi = F.format_of(W_dtype).hi
    q = torch.randint(0, hi + 1, (N, K), generator=g)
    q[:, ::G], q[:, 1::G] = 0, hi  # every group spans the full code range
    zero = grouped(torch.randint(0, hi + 1, (N, K // G), generator=g), G)
    s = grouped(2.0 ** -torch.randint(0, 6, (N, K // G), generator=g), G)
    weight = (q - zero) * s
    deq = quantize_and_back(weight.float(), W_dtype, G, mode)
    assert torch.equal(deq, weight), f'seed={seed}'


def test_quantize_explicit_int4():
    weight = torch.tensor([[7.0, -3.5, 0.2, -7.0]])
    q, scale, zeros = F.quantize(weight, 'int4')
    assert q.tolist() == [[7, -4, 0, -7]]  # -3.5 rounds half to even
    assert scale.tolist() == [[1.0]] and zeros is None


def test_quantize_int1_is_sign_with_mean_scale():
    weight = torch.tensor([[0.5, -1.5, 0.0, 2.0]])
    q, scale, _ = F.quantize(weight, 'int1')
    assert q.tolist() == [[1, -1, 1, 1]]
    assert scale.tolist() == [[1.0]]


def test_quantize_fp4_nearest_code():
    weight = torch.tensor([[6.0, -6.0, 2.4, -0.7, 0.1]])
    q, scale, _ = F.quantize(weight, 'fp4_e2m1')
    assert scale.tolist() == [[1.0]]
    assert q.tolist() == [[7, 15, 4, 9, 0]]  # 6, -6, 2, -0.5, 0


def test_quantize_zero_group_gets_unit_scale():
    weight = torch.zeros(2, 64)
    weight[1, :32] = 1.0
    for W_dtype in ('int8', 'int1', 'nf4'):
        _, scale, _ = F.quantize(weight, W_dtype, 32)
        assert scale[0].tolist() == [1.0, 1.0] and scale[1, 1].item() == 1.0, W_dtype


def test_quantize_uint_zeros_values():
    weight = torch.tensor([[-1.0, 0.0, 1.0, 2.0]])  # min -1, max 2 -> scale 1 for uint2
    _, scale, zeros = F.quantize(weight, 'uint2', with_zeros=True, zeros_mode='original')
    assert scale.tolist() == [[1.0]] and zeros.tolist() == [[1.0]]
    _, _, zeros = F.quantize(weight, 'uint2', with_zeros=True, zeros_mode='rescale')
    assert zeros.tolist() == [[1.0]]
    q, _, zeros = F.quantize(weight, 'uint2', with_zeros=True, zeros_mode='quantized')
    assert zeros.tolist() == [[1]] and q.tolist() == [[0, 1, 2, 3]]


def test_quantize_original_zero_is_not_rounded():
    weight = torch.tensor([[0.5, 3.5]])  # uint1: scale 3, zero -1/6
    _, scale, zeros = F.quantize(weight, 'uint1', with_zeros=True)
    assert scale.item() == 3.0
    assert zeros.item() == pytest.approx(-1 / 6, abs=1e-3)


def test_quantize_rejects_bad_arguments():
    weight = torch.randn(4, 64)
    with pytest.raises(ValueError, match='uint4'):
        F.quantize(weight, 'uint4')
    with pytest.raises(ValueError, match='int4'):
        F.quantize(weight, 'int4', with_zeros=True)
    with pytest.raises(ValueError, match='float16'):
        F.quantize(weight, 'float16')
    with pytest.raises(ValueError, match='group_size'):
        F.quantize(weight, 'int4', group_size=24)
    with pytest.raises(ValueError, match='zeros_mode'):
        F.quantize(weight, 'uint4', with_zeros=True, zeros_mode='bogus')
    with pytest.raises(TypeError):
        F.quantize(weight.to(torch.int32), 'int4')


@pytest.mark.parametrize("N,K,bits", [(16, 256, 4), (40, 384, 4), (5, 128, 2), (33, 64, 8), (24, 96, 16)])
def test_kernel_order_tiles_rows(N, K, bits, rng):
    """to_kernel_order stores each 16-row tile superblock by superblock (a kernel's warp reads 512-1024
    contiguous bytes), and from_kernel_order inverts it exactly, partial last tiles included."""
    from lowbit.layout import TILE_ROWS, from_kernel_order, layout_of, to_kernel_order

    layout = layout_of(bits, "float16")
    values = torch.randint(0, 1 << min(bits, 8), (N, K), generator=rng)
    stored = to_kernel_order(values, layout)
    assert torch.equal(from_kernel_order(stored, layout, K), values)
    SB, S = layout.superblock, layout.padded(K) // layout.superblock
    chunks = stored.reshape(N * S, SB)
    perm = torch.tensor(layout.permutation)
    padded = torch.zeros(N, S * SB, dtype=values.dtype)
    padded[:, :K] = values
    for n in range(N):
        t, i = divmod(n, TILE_ROWS)
        r = min(TILE_ROWS, N - TILE_ROWS * t)
        for s in range(S):  # chunk (n, s) sits at TILE_ROWS * t * S + s * r + i, its elements permuted
            want = padded[n, s * SB:(s + 1) * SB][perm]
            assert torch.equal(chunks[TILE_ROWS * t * S + s * r + i], want), (n, s)
