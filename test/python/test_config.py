"""MatmulConfig / FlashAttenConfig validation and properties (SPEC.md "MatmulConfig", "FlashAtten")."""
from __future__ import annotations

import itertools

import pytest

import lowbit
from lowbit import FlashAtten, FlashAttenConfig, Matmul, MatmulConfig

W_DTYPES = ("int8", "int4", "int2", "int1", "uint4", "uint2", "uint1", "fp4_e2m1", "nf4", "float16")
PACKED = ("int4", "int2", "int1", "uint4", "uint2", "uint1", "fp4_e2m1", "nf4")
INT_W = ("int8", "int4", "int2", "int1", "uint4", "uint2", "uint1")
UINT_W = ("uint4", "uint2", "uint1")
DEFAULT_BUCKETS = (1, 16, 32, 64, 128, 256, 512, 1024)
FP_ACC_OUT = list(itertools.product(("float16", "float32"), ("float16", "float32")))
INT8_OUT = ("int32", "int8", "float16", "float32")


def cfg(**kw) -> MatmulConfig:
    base = dict(N=64, K=128)
    base.update(kw)
    return MatmulConfig(**base)


def rejects(match_words, **kw):
    """The config must raise ValueError whose message contains every word of ``match_words``."""
    with pytest.raises(ValueError) as info:
        cfg(**kw)
    msg = str(info.value)
    for word in match_words:
        assert word in msg, f"message {msg!r} lacks {word!r}"
    return msg


# ------------------------------------------------------------------------------------------ accepted


def test_public_names():
    for name in ("MatmulConfig", "Matmul", "FlashAttenConfig", "FlashAtten"):
        assert hasattr(lowbit, name)


def test_defaults():
    c = MatmulConfig(N=16, K=32)
    assert (c.A_dtype, c.W_dtype, c.accum_dtype, c.out_dtype, c.layout) == ("float16",) * 4 + ("nt",)
    assert (c.with_bias, c.group_size, c.with_scaling, c.with_zeros, c.zeros_mode) == (False, -1, False, False,
                                                                                         "original")
    assert c.M == DEFAULT_BUCKETS


@pytest.mark.parametrize("W_dtype", W_DTYPES)
@pytest.mark.parametrize("acc,out", FP_ACC_OUT)
def test_float16_A_accepts_every_W_and_accum_out(W_dtype, acc, out):
    layouts = ("nt", "nn") if W_dtype in ("float16", "int8") else ("nt",)
    for layout in layouts:
        for bias in (False, True):
            c = cfg(W_dtype=W_dtype, accum_dtype=acc, out_dtype=out, layout=layout, with_bias=bias)
            assert (c.W_dtype, c.accum_dtype, c.out_dtype, c.layout, c.with_bias) == (W_dtype, acc, out, layout, bias)
            if W_dtype != "float16":
                for g in (-1, 32, 64, 128):
                    c = cfg(W_dtype=W_dtype, accum_dtype=acc, out_dtype=out, layout=layout, with_bias=bias,
                            with_scaling=True, group_size=g)
                    assert c.with_scaling and c.group_size == g


@pytest.mark.parametrize("W_dtype", INT_W)
@pytest.mark.parametrize("out", INT8_OUT)
def test_int8_A_accepts_integer_W_every_out(W_dtype, out):
    for layout in (("nt", "nn") if W_dtype == "int8" else ("nt",)):
        for bias in (False, True):
            c = cfg(A_dtype="int8", W_dtype=W_dtype, accum_dtype="int32", out_dtype=out, layout=layout, with_bias=bias)
            assert (c.A_dtype, c.accum_dtype, c.out_dtype) == ("int8", "int32", out)


@pytest.mark.parametrize("W_dtype", UINT_W)
@pytest.mark.parametrize("mode", ("original", "rescale", "quantized", None))
@pytest.mark.parametrize("g", (-1, 32, 128))
def test_zeros_accepted_with_uint_and_scaling(W_dtype, mode, g):
    c = cfg(W_dtype=W_dtype, with_scaling=True, with_zeros=True, zeros_mode=mode, group_size=g)
    assert c.zeros_mode == ("original" if mode is None else mode)
    assert c.with_zeros and c.with_scaling


def test_M_forms():
    assert cfg(M=None).M == DEFAULT_BUCKETS
    assert cfg().M == DEFAULT_BUCKETS
    assert cfg(M=7).M == 7
    assert cfg(M=[64, 1, 16, 16]).M == (1, 16, 64)  # sorted, duplicates dropped
    assert cfg(M=(3,)).M == (3,)
    c = cfg(M=[16, 4])
    assert cfg(M=[4, 16]) == c  # the same config however M is spelled


# ------------------------------------------------------------------------------------------ rejected


@pytest.mark.parametrize("M", [0, -1, 1.5, "16", True, [], [0], [1, -4], [1, 2.0], [None]])
def test_bad_M(M):
    rejects(["M"], M=M)


@pytest.mark.parametrize("field", ["N", "K"])
@pytest.mark.parametrize("value", [0, -64, None, 64.0, "64", True])
def test_bad_N_K(field, value):
    msg = rejects([field], **{field: value})
    assert "positive" in msg


@pytest.mark.parametrize("A_dtype", ["float32", "bfloat16", "int4", "uint8", "fp16", None])
def test_bad_A_dtype(A_dtype):
    rejects(["A_dtype", "float16", "int8"], A_dtype=A_dtype)


@pytest.mark.parametrize("W_dtype", ["int3", "uint8", "float32", "fp8", "nf3", "bfloat16", None])
def test_bad_W_dtype(W_dtype):
    msg = rejects(["W_dtype"], W_dtype=W_dtype)
    assert "int4" in msg and "nf4" in msg  # lists what is allowed


@pytest.mark.parametrize("acc", ["int32", "float64", "bfloat16"])
def test_bad_accum_with_float16_A(acc):
    rejects(["accum_dtype", "float16", "float32"], accum_dtype=acc)


@pytest.mark.parametrize("acc", ["float16", "float32", "int8"])
def test_bad_accum_with_int8_A(acc):
    rejects(["accum_dtype", "int32"], A_dtype="int8", W_dtype="int4", accum_dtype=acc)


@pytest.mark.parametrize("out", ["int32", "int8", "bfloat16", "float64"])
def test_bad_out_with_float16_A(out):
    rejects(["out_dtype", "float16", "float32"], out_dtype=out)


@pytest.mark.parametrize("out", ["int16", "bfloat16", "uint8"])
def test_bad_out_with_int8_A(out):
    rejects(["out_dtype", "int32", "int8"], A_dtype="int8", W_dtype="int4", accum_dtype="int32", out_dtype=out)


@pytest.mark.parametrize("W_dtype", PACKED)
def test_layout_nn_needs_native_W(W_dtype):
    rejects(["layout", "nt", W_dtype], W_dtype=W_dtype, layout="nn")


@pytest.mark.parametrize("layout", ["tn", "tt", "NT", None])
def test_bad_layout(layout):
    rejects(["layout", "nt"], layout=layout)


@pytest.mark.parametrize("g", [16, 48, 100, 0, -2, 256])
def test_bad_group_size(g):
    # K=128: 16, 48 and 100 are not multiples of 32, 0 and -2 not positive, 256 does not divide K
    msg = rejects(["group_size", "32"], W_dtype="int4", with_scaling=True, group_size=g)
    assert "-1" in msg


def test_group_size_must_divide_K():
    rejects(["group_size", "K=160"], W_dtype="int4", with_scaling=True, K=160, group_size=64)
    assert cfg(W_dtype="int4", with_scaling=True, K=160, group_size=32).group_size == 32


@pytest.mark.parametrize("W_dtype", ["int4", "int8", "int1", "fp4_e2m1", "nf4"])
def test_zeros_need_uint(W_dtype):
    rejects(["with_zeros", "uint4"], W_dtype=W_dtype, with_scaling=True, with_zeros=True)


def test_zeros_need_scaling():
    rejects(["with_zeros", "with_scaling"], W_dtype="uint4", with_zeros=True)


@pytest.mark.parametrize("mode", ["asymmetric", "", "Original", 0])
def test_bad_zeros_mode(mode):
    rejects(["zeros_mode", "original", "rescale", "quantized"], W_dtype="uint4", with_scaling=True, with_zeros=True,
            zeros_mode=mode)


def test_scaling_and_zeros_need_float16_A():
    rejects(["with_scaling", "float16"], A_dtype="int8", W_dtype="int4", accum_dtype="int32", out_dtype="int32",
            with_scaling=True)
    rejects(["float16"], A_dtype="int8", W_dtype="uint4", accum_dtype="int32", out_dtype="int32", with_scaling=True,
            with_zeros=True)


@pytest.mark.parametrize("W_dtype", ["fp4_e2m1", "nf4", "float16"])
def test_int8_A_needs_integer_W(W_dtype):
    rejects(["W_dtype", "int8"], A_dtype="int8", W_dtype=W_dtype, accum_dtype="int32", out_dtype="int32")


@pytest.mark.parametrize("field", ["with_bias", "with_scaling", "with_zeros"])
def test_flags_must_be_bool(field):
    rejects([field], **{field: 1})


def test_packed_dims_fill_bytes():
    rejects(["N", "bits"], W_dtype="int4", N=63)
    rejects(["K", "bits"], W_dtype="uint1", K=36)


# ------------------------------------------------------------------------------------------ properties


@pytest.mark.parametrize("W_dtype", W_DTYPES)
def test_storage_dtype_and_fast_decoding(W_dtype):
    c = cfg(W_dtype=W_dtype)
    expected = "int8" if W_dtype in PACKED else W_dtype
    assert c.storage_dtype == expected
    assert isinstance(c.fast_decoding, bool)
    if W_dtype in ("int4", "int2", "int1", "uint4", "uint2", "uint1"):
        assert c.fast_decoding  # the bit-trick decode of packed integers
    if W_dtype in ("float16", "int8"):
        assert not c.fast_decoding  # nothing to decode


def test_bucket_for():
    c = cfg(M=[1, 16, 64])
    assert [c.bucket_for(m) for m in (1, 2, 15, 16, 17, 64, 65, 1000)] == [1, 16, 16, 16, 64, 64, 64, 64]
    d = cfg()
    assert [d.bucket_for(m) for m in (1, 7, 16, 33, 1024, 5000)] == [1, 16, 16, 64, 1024, 1024]
    s = cfg(M=8)
    assert s.bucket_for(8) == 8
    with pytest.raises(ValueError, match="M=8"):
        s.bucket_for(9)


def test_matmul_exposes_config_fields_and_properties():
    c = cfg(M=[1, 16], W_dtype="uint4", with_scaling=True, with_zeros=True, zeros_mode="rescale", group_size=32,
            with_bias=True)
    op = Matmul(c)
    assert op.config is c
    for name in ("M", "N", "K", "A_dtype", "W_dtype", "accum_dtype", "out_dtype", "layout", "with_bias",
                 "group_size", "with_scaling", "with_zeros", "zeros_mode", "storage_dtype", "fast_decoding"):
        assert getattr(op, name) == getattr(c, name), name
    with pytest.raises(AttributeError):
        op.no_such_field
    with pytest.raises(TypeError):
        Matmul(c.as_dict())


def test_config_is_frozen():
    c = cfg()
    with pytest.raises(AttributeError):  # dataclasses.FrozenInstanceError
        c.N = 3


# ------------------------------------------------------------------------------------------ FlashAttenConfig


def test_flash_atten_config_accepts():
    for layout, causal, (heads, kv) in itertools.product(("nnn", "ntn"), (False, True), ((4, None), (4, 2), (4, 1))):
        c = FlashAttenConfig(batch=2, heads=heads, seq_len=17, dim=64, layout=layout, is_causal=causal, kv_heads=kv)
        assert c.kv_heads == (heads if kv is None else kv)
        op = FlashAtten(c)
        assert op.layout == layout and op.is_causal == causal
    c = FlashAttenConfig(batch=1, heads=1, seq_len=1, dim=16)
    assert (c.Q_dtype, c.K_dtype, c.V_dtype, c.Accu_dtype, c.Out_dtype) == ("float16",) * 3 + ("float32", "float16")


@pytest.mark.parametrize("kw,field", [
    (dict(batch=0), "batch"), (dict(heads=-1), "heads"), (dict(seq_len=0), "seq_len"), (dict(dim=0), "dim"),
    (dict(dim=24), "dim"), (dict(dim=512), "dim"), (dict(layout="ntt"), "layout"), (dict(kv_heads=3), "kv_heads"),
    (dict(kv_heads=0), "kv_heads"), (dict(Q_dtype="float32"), "Q_dtype"), (dict(Accu_dtype="float16"), "Accu_dtype"),
    (dict(Out_dtype="int8"), "Out_dtype"), (dict(is_causal="yes"), "is_causal"),
])
def test_flash_atten_config_rejects(kw, field):
    base = dict(batch=1, heads=4, seq_len=8, dim=64)
    base.update(kw)
    with pytest.raises(ValueError) as info:
        FlashAttenConfig(**base)
    assert field in str(info.value)
