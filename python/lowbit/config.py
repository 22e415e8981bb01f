"""Operator configurations: every field of SPEC.md validated when the config is made."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional, Sequence, Tuple, Union

from .formats import WEIGHT_DTYPES, format_of

DEFAULT_M_BUCKETS = (1, 16, 32, 64, 128, 256, 512, 1024)
A_DTYPES = ("float16", "int8")
LAYOUTS = ("nt", "nn")
ZEROS_MODES = ("original", "rescale", "quantized")
ACCUM_DTYPES = {"float16": ("float16", "float32"), "int8": ("int32",)}
OUT_DTYPES = {"float16": ("float16", "float32"), "int8": ("int32", "int8", "float16", "float32")}
NATIVE_W_DTYPES = ("float16", "int8")


def _choice(name: str, value, allowed: Sequence, why: str = "") -> None:
    if value not in allowed:
        hint = f" {why}" if why else ""
        raise ValueError(f"{name}={value!r} is not allowed{hint}; allowed: {', '.join(map(repr, allowed))}")


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive int")
    return value


def _flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be True or False")
    return value


@dataclass(frozen=True)
class MatmulConfig:
    """A low-bit matmul `out[m, n] = sum_k A[m, k] * deq(W)[n, k] (+ bias[n])`, see SPEC.md."""

    M: Union[None, int, Sequence[int]] = None
    N: int = None
    K: int = None
    A_dtype: str = "float16"
    W_dtype: str = "float16"
    accum_dtype: str = "float16"
    out_dtype: str = "float16"
    layout: str = "nt"
    with_bias: bool = False
    group_size: int = -1
    with_scaling: bool = False
    with_zeros: bool = False
    zeros_mode: Optional[str] = "original"

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)
        set_("M", self._normalize_M(self.M))
        _positive_int("N", self.N)
        _positive_int("K", self.K)
        _choice("A_dtype", self.A_dtype, A_DTYPES)
        _choice("W_dtype", self.W_dtype, WEIGHT_DTYPES)
        _choice("accum_dtype", self.accum_dtype, ACCUM_DTYPES[self.A_dtype], f"with A_dtype={self.A_dtype!r}")
        _choice("out_dtype", self.out_dtype, OUT_DTYPES[self.A_dtype], f"with A_dtype={self.A_dtype!r}")
        allowed_layouts = LAYOUTS if self.W_dtype in NATIVE_W_DTYPES else ("nt",)
        _choice("layout", self.layout, allowed_layouts, f"with W_dtype={self.W_dtype!r}")
        for name in ("with_bias", "with_scaling", "with_zeros"):
            _flag(name, getattr(self, name))
        set_("zeros_mode", "original" if self.zeros_mode is None else self.zeros_mode)
        _choice("zeros_mode", self.zeros_mode, ZEROS_MODES)
        self._check_group_size()
        self._check_quantization()
        fmt = format_of(self.W_dtype)
        if self.N * fmt.bits % 8:
            raise ValueError(f"N={self.N} times the {fmt.bits} bits of W_dtype={self.W_dtype!r} must fill whole bytes")
        if self.K * fmt.bits % 8:
            raise ValueError(f"K={self.K} times the {fmt.bits} bits of W_dtype={self.W_dtype!r} must fill whole bytes")

    @staticmethod
    def _normalize_M(M) -> Union[int, Tuple[int, ...]]:
        if M is None:
            return DEFAULT_M_BUCKETS
        if isinstance(M, (list, tuple)):
            if not M:
                raise ValueError("M=[] must list at least one size")
            for m in M:
                _positive_int("M (each listed size)", m)
            return tuple(sorted(set(M)))
        return _positive_int("M", M)

    def _check_group_size(self) -> None:
        g = self.group_size
        if isinstance(g, bool) or not isinstance(g, int):
            raise ValueError(f"group_size={g!r} must be an int")
        if g != -1 and (g <= 0 or g % 32 or self.K % g):
            raise ValueError(
                f"group_size={g} is not allowed; allowed: -1 (one group spans K) or a positive multiple of 32 dividing K={self.K}"
            )

    def _check_quantization(self) -> None:
        if self.A_dtype == "int8" and self.W_dtype not in ("int8", "int4", "int2", "int1", "uint4", "uint2", "uint1"):
            raise ValueError(f"W_dtype={self.W_dtype!r} is not allowed with A_dtype='int8'; allowed: integer W_dtypes")
        if (self.with_scaling or self.with_zeros) and self.A_dtype != "float16":
            raise ValueError("with_scaling/with_zeros are allowed only with A_dtype='float16'")
        if self.with_scaling and self.W_dtype == "float16":
            raise ValueError("with_scaling=True is not allowed with W_dtype='float16'; allowed: a quantized W_dtype")
        if self.with_zeros:
            if not self.W_dtype.startswith("uint"):
                raise ValueError(f"with_zeros=True needs an unsigned W_dtype (uint4, uint2, uint1), got W_dtype={self.W_dtype!r}")
            if not self.with_scaling:
                raise ValueError("with_zeros=True needs with_scaling=True")
        if self.group_size != -1 and not self.with_scaling:
            raise ValueError(f"group_size={self.group_size} needs with_scaling=True; allowed without scaling: -1")

    # -- derived properties (SPEC.md) --
    @property
    def storage_dtype(self) -> str:
        return "int8" if format_of(self.W_dtype).packed else self.W_dtype

    @property
    def bits(self) -> int:
        return format_of(self.W_dtype).bits

    @property
    def fast_decoding(self) -> bool:
        """Whether the GPU decode uses the bit-trick path (lop3 / magic numbers) rather than shifts or tables."""
        return format_of(self.W_dtype).kind in ("int", "uint") and format_of(self.W_dtype).packed

    @property
    def group(self) -> int:
        return self.K if self.group_size == -1 else self.group_size

    @property
    def buckets(self) -> Tuple[int, ...]:
        return (self.M,) if isinstance(self.M, int) else self.M

    @property
    def static_M(self) -> bool:
        return isinstance(self.M, int)

    def bucket_for(self, m: int) -> int:
        """The listed size a call with `m` rows runs: the nearest >= m, else the largest."""
        if self.static_M:
            if m != self.M:
                raise ValueError(f"this Matmul was built for static M={self.M}; got m={m} (build with a list of M to allow others)")
            return self.M
        return next((b for b in self.buckets if b >= m), self.buckets[-1])

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class FlashAttenConfig:
    """softmax(Q K^T / sqrt(dim) + mask) V per (batch, head), see SPEC.md."""

    batch: int = None
    heads: int = None
    seq_len: int = None
    dim: int = None
    Q_dtype: str = "float16"
    K_dtype: str = "float16"
    V_dtype: str = "float16"
    Accu_dtype: str = "float32"
    Out_dtype: str = "float16"
    layout: str = "nnn"
    is_causal: bool = False
    kv_heads: Optional[int] = None

    def __post_init__(self):
        for name in ("batch", "heads", "seq_len", "dim"):
            _positive_int(name, getattr(self, name))
        for name in ("Q_dtype", "K_dtype", "V_dtype", "Out_dtype"):
            _choice(name, getattr(self, name), ("float16",))
        _choice("Accu_dtype", self.Accu_dtype, ("float32",))
        _choice("layout", self.layout, ("nnn", "ntn"))
        _flag("is_causal", self.is_causal)
        if self.dim % 16 or self.dim > 256:
            raise ValueError(f"dim={self.dim} is not allowed; allowed: a multiple of 16 up to 256")
        if self.kv_heads is None:
            object.__setattr__(self, "kv_heads", self.heads)
        _positive_int("kv_heads", self.kv_heads)
        if self.heads % self.kv_heads:
            raise ValueError(f"kv_heads={self.kv_heads} must divide heads={self.heads}")

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}
