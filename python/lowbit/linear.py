"""`lowbit.Linear`: a `torch.nn.Module` around `Matmul`, GPTQ repacking and `replace_linear` (docs/linear.md).

* :class:`Linear` holds the *transformed* tensors that `Matmul.forward` takes as buffers (``qweight``,
  ``scales``, ``zeros``, ``bias``, and ``perm`` for act-order GPTQ checkpoints only), so they live in
  ``state_dict()``, survive save/load and follow ``.to(device)`` / ``.cuda()`` / ``.cpu()``. Their dtypes are
  fixed by the config: ``.half()``, ``.float()`` and ``.to(dtype)`` move devices but never change them.
* :meth:`Linear.repack_from_gptq` / :meth:`Linear.from_gptq` read AutoGPTQ-packed checkpoints.
* :func:`replace_linear` swaps every ``torch.nn.Linear`` of a model for a quantized :class:`Linear`.
"""
from __future__ import annotations

import fnmatch
import logging
import math
from collections.abc import Mapping
from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple, Union

import torch

from lowbit import formats
from lowbit.checks import TORCH_DTYPES
from lowbit.config import MatmulConfig
from lowbit.shapes import matmul_shapes
from lowbit.layout import from_kernel_order, layout_of
from lowbit.matmul import Matmul

__all__ = ["Linear", "replace_linear", "DEFAULT_OPT_M"]

logger = logging.getLogger("lowbit")

DEFAULT_OPT_M = (1, 16, 32, 64, 128, 256, 512)
_BUFFERS = ("qweight", "scales", "zeros", "bias")
GPTQ_FORMATS = ("gptq", "gptq_v2")


def _int_arg(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name}={value} must be a positive int")
    return value


def _bool_arg(name: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if not isinstance(value, bool):
        allowed = "True, False or None" if allow_none else "True or False"
        raise TypeError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    return value


def _str_arg(name: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string such as 'float16', got {value!r} ({type(value).__name__})")
    return value


def _opt_M(opt_M) -> Tuple[int, ...]:
    if opt_M is None:
        return DEFAULT_OPT_M
    if isinstance(opt_M, bool):
        raise TypeError(f"opt_M must be an int or a list of ints, got {opt_M!r}")
    if isinstance(opt_M, int):
        opt_M = [opt_M]
    if not isinstance(opt_M, (list, tuple)):
        raise TypeError(f"opt_M must be an int or a list of ints, got {type(opt_M).__name__}")
    if not opt_M:
        raise ValueError("opt_M=[] must list at least one size")
    for m in opt_M:
        if isinstance(m, bool) or not isinstance(m, int):
            raise TypeError(f"opt_M must list ints, got {m!r} ({type(m).__name__}) in {list(opt_M)}")
        if m < 1:
            raise ValueError(f"opt_M must list positive sizes, got {m} in {list(opt_M)}")
    return tuple(sorted(set(opt_M)))


def _get(module, name: str):
    """Attribute `name` of a module (or key of a mapping such as a state dict); None when absent."""
    if isinstance(module, Mapping):
        return module.get(name)
    return getattr(module, name, None)


class Linear(torch.nn.Module):
    """``y = A @ deq(W)^T (+ bias)`` on [..., in_features] inputs, CPU and CUDA (SPEC.md "Linear").

    Arguments are those of SPEC.md; ``with_scaling=None`` means True for every quantized ``W_dtype``
    with ``A_dtype='float16'`` and False otherwise (float16 W, or int8 A which takes no scales).
    ``opt_M`` lists the row counts kernels are specialised for (an int means one size); a call with any
    number of rows m runs the kernel of the nearest listed size >= m (the largest beyond the list).
    The layer is inference only: its output carries no autograd history.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, A_dtype: str = "float16",
                 W_dtype: str = "float16", accum_dtype: str = "float16", out_dtype: str = "float16",
                 group_size: int = -1, with_scaling: Optional[bool] = None, with_zeros: bool = False,
                 zeros_mode: Optional[str] = None, opt_M: Union[int, Sequence[int]] = DEFAULT_OPT_M):
        super().__init__()
        in_features = _int_arg("in_features", in_features)
        out_features = _int_arg("out_features", out_features)
        bias = _bool_arg("bias", bias)
        for name, value in (("A_dtype", A_dtype), ("W_dtype", W_dtype), ("accum_dtype", accum_dtype),
                            ("out_dtype", out_dtype)):
            _str_arg(name, value)
        zeros_mode = _str_arg("zeros_mode", zeros_mode, allow_none=True)
        with_scaling = _bool_arg("with_scaling", with_scaling, allow_none=True)
        with_zeros = _bool_arg("with_zeros", with_zeros)
        if isinstance(group_size, bool) or not isinstance(group_size, int):
            raise TypeError(f"group_size must be an int, got {group_size!r} ({type(group_size).__name__})")
        opt_M = _opt_M(opt_M)
        if with_scaling is None:
            with_scaling = W_dtype != "float16" and A_dtype == "float16" and W_dtype in formats.WEIGHT_DTYPES
        try:
            config = MatmulConfig(M=list(opt_M), N=out_features, K=in_features, A_dtype=A_dtype, W_dtype=W_dtype,
                                  accum_dtype=accum_dtype, out_dtype=out_dtype, layout="nt", with_bias=bias,
                                  group_size=group_size, with_scaling=with_scaling, with_zeros=with_zeros,
                                  zeros_mode=zeros_mode)
        except ValueError as e:
            msg = str(e)
            if "N=" in msg or "K=" in msg:
                msg += f" (Linear passes in_features={in_features} as K and out_features={out_features} as N)"
            raise ValueError(f"Linear: {msg}") from None
        self.in_features, self.out_features = in_features, out_features
        self.opt_M = list(opt_M)
        self.config = config
        self._a_dtype = TORCH_DTYPES[config.A_dtype]
        self.matmul = Matmul(config)
        # the buffers: exactly what Matmul.forward takes, zero-filled until weights are loaded
        shapes = matmul_shapes(config)
        self._dtypes: Dict[str, torch.dtype] = {}
        for buf, key in zip(_BUFFERS, ("w", "scale", "zeros", "bias")):
            if key in shapes:
                shape, dtype = shapes[key]
                self._dtypes[buf] = TORCH_DTYPES[dtype]
                self.register_buffer(buf, torch.zeros(shape, dtype=TORCH_DTYPES[dtype]))
            else:
                self.register_buffer(buf, None)
        # act-order GPTQ checkpoints: A's columns are gathered by `perm` before the matmul (None otherwise)
        self.register_buffer("perm", None)

    # ------------------------------------------------------------------ config fields as attributes
    A_dtype = property(lambda self: self.config.A_dtype)
    W_dtype = property(lambda self: self.config.W_dtype)
    accum_dtype = property(lambda self: self.config.accum_dtype)
    out_dtype = property(lambda self: self.config.out_dtype)
    group_size = property(lambda self: self.config.group_size)
    with_scaling = property(lambda self: self.config.with_scaling)
    with_zeros = property(lambda self: self.config.with_zeros)
    zeros_mode = property(lambda self: self.config.zeros_mode)
    with_bias = property(lambda self: self.config.with_bias)

    def extra_repr(self) -> str:
        c = self.config
        s = (f"in_features={self.in_features}, out_features={self.out_features}, bias={c.with_bias}, "
             f"A_dtype={c.A_dtype}, W_dtype={c.W_dtype}, accum_dtype={c.accum_dtype}, out_dtype={c.out_dtype}")
        if c.with_scaling:
            s += f", group_size={c.group_size}"
        if c.with_zeros:
            s += f", zeros_mode={c.zeros_mode}"
        if self.perm is not None:
            s += ", act_order=True"
        return s

    # ------------------------------------------------------------------ running
    def forward(self, A: torch.Tensor, output: Optional[torch.Tensor] = None) -> torch.Tensor:
        """[..., in_features] -> [..., out_features] in out_dtype (into ``output`` when one is given)."""
        # the buffers from their dict: nn.Module.__getattr__ costs about 1-2 us a buffer, and a decode
        # step calls every Linear of a model
        buffers = self._buffers
        qweight = buffers["qweight"]
        if not (isinstance(A, torch.Tensor) and A.dtype is self._a_dtype and A.dim() >= 1
                and A.shape[-1] == self.in_features and A.device == qweight.device):
            self._check_input(A, qweight)
        perm = buffers["perm"]
        if perm is not None:
            A = A.index_select(-1, perm)
        return self.matmul(A.contiguous(), qweight, scale=buffers["scales"], zeros=buffers["zeros"],
                           bias=buffers["bias"], output=output)

    def _check_input(self, A, qweight: torch.Tensor) -> None:
        """Raises the error that names what is wrong with `A`."""
        if not isinstance(A, torch.Tensor):
            raise TypeError(f"A must be a torch.Tensor, got {type(A).__name__}")
        if A.dtype != self._a_dtype:
            raise TypeError(f"A must have dtype {self._a_dtype} for this Linear (A_dtype={self.config.A_dtype!r}), "
                            f"got {A.dtype}")
        if A.dim() < 1 or A.shape[-1] != self.in_features:
            raise ValueError(f"A must have shape [..., in_features={self.in_features}], got {list(A.shape)}")
        raise ValueError(f"A is on {A.device} but this Linear's buffers are on {qweight.device}; "
                         f"move the module with .to({str(A.device)!r})")

    # ------------------------------------------------------------------ weights
    def load_and_transform_weight(self, weight: torch.Tensor, scales: Optional[torch.Tensor] = None,
                                  zeros: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None) -> "Linear":
        """Load logical tensors (those of ``Matmul.transform_weight``): ``weight`` [out_features, in_features]
        (integer values, or float for W_dtype='float16'), ``scales`` [out, in // G], ``zeros`` [out, in // G]
        (float16, or integer codes in 'quantized' mode), ``bias`` [out].

        ``scales`` / ``zeros`` are required when the config has them; ``bias=None`` keeps the current bias.
        The buffers keep their device (the tensors may come from any device). Clears an act-order
        permutation (the weight is taken in its natural column order). Returns self."""
        c = self.config
        if scales is None and c.with_scaling:
            raise ValueError("scales is required: this Linear has with_scaling=True "
                             "(build it with with_scaling=False for unscaled weights)")
        if zeros is None and c.with_zeros:
            raise ValueError("zeros is required: this Linear has with_zeros=True")
        if scales is not None and not c.with_scaling:
            raise ValueError("scales was given but this Linear has with_scaling=False")
        if zeros is not None and not c.with_zeros:
            raise ValueError("zeros was given but this Linear has with_zeros=False")
        if bias is not None and not c.with_bias:
            raise ValueError("bias was given but this Linear was built with bias=False")
        try:
            res = self.matmul.transform_weight(weight, scale=scales, zeros=zeros, bias=bias)
        except (TypeError, ValueError) as e:
            raise type(e)(f"load_and_transform_weight: {e} (weight is [out_features, in_features] = "
                          f"[{self.out_features}, {self.in_features}])") from None
        res = res if isinstance(res, list) else [res]
        names = ["qweight"] + [n for n, t in (("scales", scales), ("zeros", zeros), ("bias", bias)) if t is not None]
        with torch.no_grad():
            for name, t in zip(names, res):
                getattr(self, name).copy_(t)
        self.perm = None
        return self

    def init_params(self, generator: Optional[torch.Generator] = None) -> "Linear":
        """Fill every buffer with random valid parameters (weights over the whole range of W_dtype, positive
        scales keeping outputs of the size of the inputs, zeros inside the range, a small bias).
        Uses ``generator`` (a CPU torch.Generator) or torch's global RNG. Returns self."""
        c = self.config
        N, K, G = self.out_features, self.in_features, c.group
        g = dict(generator=generator)
        fmt = formats.format_of(c.W_dtype)
        if fmt.kind == "float":
            weight = torch.randn(N, K, **g) / math.sqrt(K)
            amp = 1.0
        else:
            weight = formats.random_values(c.W_dtype, (N, K), **g)
            amp = float(max(abs(fmt.lo), fmt.hi))
            if fmt.kind == "fp4":
                amp = 6.0
            elif fmt.kind == "nf4":
                amp = 1.0
        scales = zeros = bias = None
        if c.with_scaling:
            scales = ((0.5 + torch.rand(N, K // G, **g)) / (amp * math.sqrt(K))).to(torch.float16)
        if c.with_zeros:
            if c.zeros_mode == "quantized":
                zeros = torch.randint(0, fmt.hi + 1, (N, K // G), **g)
            elif c.zeros_mode == "rescale":
                zeros = (torch.rand(N, K // G, **g) * fmt.hi * scales.float()).to(torch.float16)
            else:
                zeros = (torch.rand(N, K // G, **g) * fmt.hi).to(torch.float16)
        if c.with_bias:
            if self._dtypes["bias"] == torch.int32:
                bias = torch.randint(-100, 101, (N,), **g, dtype=torch.int32)
            else:
                bias = 0.1 * torch.randn(N, **g)
        return self.load_and_transform_weight(weight, scales, zeros, bias)

    def dequantize(self, dtype: torch.dtype = torch.float16) -> torch.Tensor:
        """The float weight [out_features, in_features] this layer multiplies by, computed from its buffers
        (exactly, in float64, then converted to ``dtype``): ``forward(A) ~= A @ dequantize().T + bias``."""
        c = self.config
        fmt = formats.format_of(c.W_dtype)
        layout = layout_of(fmt.bits, c.A_dtype)
        q = self.qweight.detach()
        if fmt.kind == "float":
            w = from_kernel_order(q, layout, self.in_features).to(torch.float64)
        else:
            stored = q.view(torch.uint8) if fmt.bits == 8 else formats.unpack(q, fmt.bits, dim=-1)
            codes = from_kernel_order(stored, layout, self.in_features)
            zeros = self.zeros
            if zeros is not None and c.zeros_mode == "quantized":
                zeros = formats.unpack_zeros_quantized(zeros, fmt.bits, self.out_features)
            w = formats.dequantize_reference(codes, c.W_dtype, self.scales, zeros, c.zeros_mode, c.group_size)
        if self.perm is not None:  # back to the checkpoint's column order
            natural = torch.empty_like(w)
            natural[:, self.perm] = w
            w = natural
        return w.to(dtype)

    # ------------------------------------------------------------------ GPTQ
    @classmethod
    def from_gptq(cls, gptq_module, zeros_mode: str = "original", opt_M=DEFAULT_OPT_M, accum_dtype: str = "float16",
                  out_dtype: str = "float16", checkpoint_format: str = "gptq") -> "Linear":
        """A new Linear holding an AutoGPTQ-packed layer (a module, or a mapping such as a state dict with the
        keys ``qweight``, ``qzeros``, ``scales``, ``bias``?, ``g_idx``?). Bits, features and group size are read
        from the tensors' shapes; the result is on the device of ``qweight``."""
        qweight, qzeros, scales = (_get(gptq_module, n) for n in ("qweight", "qzeros", "scales"))
        for name, t in (("qweight", qweight), ("qzeros", qzeros), ("scales", scales)):
            if not isinstance(t, torch.Tensor) or t.dim() != 2:
                raise ValueError(f"gptq_module.{name} must be a 2-D tensor, got "
                                 f"{list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        N = qweight.shape[1]
        if qzeros.shape[1] == 0 or (32 * qzeros.shape[1]) % N:
            raise ValueError(f"cannot infer bits from qzeros {list(qzeros.shape)} and qweight {list(qweight.shape)}: "
                             f"qzeros must be [K/G, N*bits/32] with N={N}")
        bits = 32 * qzeros.shape[1] // N
        declared = _get(gptq_module, "bits")
        if declared is not None and int(declared) != bits:
            raise ValueError(f"gptq_module.bits={declared} disagrees with qzeros {list(qzeros.shape)} for N={N} "
                             f"({bits} bits)")
        if bits not in (2, 4):
            raise ValueError(f"{bits}-bit GPTQ checkpoints are not supported; allowed: 4 (uint4) and 2 (uint2)")
        K = qweight.shape[0] * 32 // bits
        groups = scales.shape[0]
        if groups == 0 or K % groups:
            raise ValueError(f"scales {list(scales.shape)} must be [K/G, N] with K={K}")
        group_size = -1 if groups == 1 else K // groups
        bias = _get(gptq_module, "bias")
        layer = cls(K, N, bias=bias is not None, W_dtype=f"uint{bits}", accum_dtype=accum_dtype, out_dtype=out_dtype,
                    group_size=group_size, with_scaling=True, with_zeros=True, zeros_mode=zeros_mode, opt_M=opt_M)
        layer.to(qweight.device)
        return layer.repack_from_gptq(gptq_module, checkpoint_format=checkpoint_format)

    def repack_from_gptq(self, gptq_module, checkpoint_format: str = "gptq") -> "Linear":
        """Load an AutoGPTQ-packed layer (a module, or a mapping such as a state dict) into this Linear.

        * ``qweight`` int32 [K*bits/32, N]: row r holds k = r*(32/bits) + j in bits [j*bits, (j+1)*bits), LSB first;
        * ``qzeros`` int32 [K/G, N*bits/32]: field j of column c is the zero point of n = c*(32/bits) + j,
          stored as zero - 1 (``checkpoint_format='gptq'``, AutoGPTQ) or as the zero itself ('gptq_v2');
        * ``scales`` float [K/G, N]; optional ``bias`` [N] and ``g_idx`` int [K].

        The weight is ``(q - zero) * scale``. This Linear must be W_dtype 'uint4' (4-bit) or 'uint2' (2-bit) with
        scaling, zeros and the checkpoint's group size. zeros_mode 'original' stores the zero points as float16
        (exact, any value); 'quantized' stores codes and rejects a zero point above 2^bits - 1 (a stored 15 + 1);
        'rescale' is rejected. Act-order checkpoints (``g_idx`` other than arange(K) // G, each group holding
        G columns) are supported: the columns are sorted by group and ``perm`` gathers A's columns in forward.
        Returns self."""
        c = self.config
        if checkpoint_format not in GPTQ_FORMATS:
            raise ValueError(f"checkpoint_format={checkpoint_format!r} is not allowed; allowed: {GPTQ_FORMATS}")
        if c.W_dtype not in ("uint4", "uint2"):
            raise ValueError(f"repack_from_gptq needs a Linear with W_dtype 'uint4' (4-bit checkpoints) or 'uint2' "
                             f"(2-bit), got W_dtype={c.W_dtype!r}")
        if not (c.with_scaling and c.with_zeros):
            raise ValueError("repack_from_gptq needs a Linear with with_scaling=True and with_zeros=True")
        if c.zeros_mode == "rescale":
            raise ValueError("repack_from_gptq cannot use zeros_mode='rescale' (GPTQ zeros are (q - zero) * scale); "
                             "allowed: 'original' (float16 zeros, exact) or 'quantized'")
        bits, N, K = c.bits, self.out_features, self.in_features
        per, mask, groups = 32 // bits, (1 << bits) - 1, K // c.group
        qweight, qzeros, scales = (_get(gptq_module, n) for n in ("qweight", "qzeros", "scales"))
        bias, g_idx = _get(gptq_module, "bias"), _get(gptq_module, "g_idx")
        declared = _get(gptq_module, "bits")
        if declared is not None and int(declared) != bits:
            raise ValueError(f"gptq_module.bits={declared} but this Linear is W_dtype={c.W_dtype!r} ({bits} bits)")
        if K % per or N % per:
            raise ValueError(f"{bits}-bit GPTQ packing needs in_features and out_features divisible by {per}, "
                             f"got in_features={K}, out_features={N}")
        if isinstance(scales, torch.Tensor) and scales.dim() == 2 and scales.shape[0] != groups and scales.shape[0]:
            theirs = scales.shape[0]
            raise ValueError(f"the checkpoint has {theirs} groups along K (scales {list(scales.shape)}, group size "
                             f"{K // theirs if K % theirs == 0 else '?'}) but this Linear has group_size={c.group_size} "
                             f"({groups} groups); build it with the checkpoint's group size (or use Linear.from_gptq)")
        expected = {"qweight": (qweight, [K // per, N], "int32"), "qzeros": (qzeros, [groups, N // per], "int32"),
                    "scales": (scales, [groups, N], "float")}
        for name, (t, shape, kind) in expected.items():
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"gptq_module has no tensor {name!r} (got {type(t).__name__})")
            if (kind == "int32" and t.dtype != torch.int32) or (kind == "float" and not t.is_floating_point()):
                raise TypeError(f"gptq_module.{name} must be {'int32' if kind == 'int32' else 'a float tensor'}, "
                                f"got {t.dtype}")
            if list(t.shape) != shape:
                raise ValueError(f"gptq_module.{name} must have shape {shape} for in_features={K}, out_features={N}, "
                                 f"{bits} bits, group_size={c.group_size} ({groups} groups), got {list(t.shape)}")
        shifts = torch.arange(per, device=qweight.device, dtype=torch.int64) * bits
        q = (qweight.to(torch.int64).unsqueeze(1) >> shifts.view(1, per, 1)) & mask  # [K/per, per, N]
        q = q.reshape(K, N).t()
        z = (qzeros.to(torch.int64).unsqueeze(-1) >> shifts.to(qzeros.device)) & mask  # [K/G, N/per, per]
        z = z.reshape(groups, N).t()
        if checkpoint_format == "gptq":
            z = z + 1
        if c.zeros_mode == "quantized":
            if int(z.max()) > mask:
                raise ValueError(f"a zero point of {int(z.max())} (qzeros {int(z.max()) - 1} + 1) does not fit the "
                                 f"{c.W_dtype} codes 0..{mask} of zeros_mode='quantized'; use zeros_mode='original'")
        else:
            z = z.to(torch.float16)
        s = scales.t()
        perm = None
        if g_idx is not None:
            perm = self._act_order_perm(g_idx)
            if perm is not None:
                q = q[:, perm.to(q.device)]
        if bias is None and c.with_bias:
            bias = torch.zeros(N)
        elif bias is not None and not c.with_bias:
            raise ValueError("gptq_module has a bias but this Linear was built with bias=False")
        self.load_and_transform_weight(q, scales=s, zeros=z, bias=bias)
        if perm is not None:
            self.perm = perm.to(self.qweight.device)
        return self

    def _act_order_perm(self, g_idx) -> Optional[torch.Tensor]:
        """None for the trivial g_idx (arange(K) // G); else the stable sort of the columns by group."""
        K, G, groups = self.in_features, self.config.group, self.in_features // self.config.group
        if not isinstance(g_idx, torch.Tensor) or g_idx.is_floating_point() or g_idx.dtype == torch.bool:
            raise TypeError(f"gptq_module.g_idx must be an integer tensor, got {getattr(g_idx, 'dtype', type(g_idx).__name__)}")
        if list(g_idx.shape) != [K]:
            raise ValueError(f"gptq_module.g_idx must have shape [in_features] = [{K}], got {list(g_idx.shape)}")
        g = g_idx.detach().to(torch.int64).cpu()
        trivial = torch.arange(K) // G
        if torch.equal(g, trivial):
            return None
        if int(g.min()) < 0 or int(g.max()) >= groups:
            raise ValueError(f"gptq_module.g_idx values must be group indices in [0, {groups}), "
                             f"got min {int(g.min())}, max {int(g.max())}")
        counts = torch.bincount(g, minlength=groups)
        if not bool((counts == G).all()):
            bad = int((counts != G).nonzero()[0])
            raise ValueError(f"gptq_module.g_idx must assign exactly group_size={G} columns to every group "
                             f"(group {bad} has {int(counts[bad])}); such act-order checkpoints are not supported")
        return torch.sort(g, stable=True).indices

    # ------------------------------------------------------------------ torch.nn.Module plumbing
    def _apply(self, fn, recurse=True):
        """Device moves apply; dtype conversions (.half(), .float(), .to(dtype)) leave every buffer's dtype
        as the config fixes it (integer codes, float16 scales/zeros, bias in out_dtype)."""

        def keep_dtype(t):
            out = fn(t)
            if isinstance(out, torch.Tensor) and out.dtype != t.dtype:
                out = t.to(device=out.device)
            return out

        return super()._apply(keep_dtype, recurse)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # `perm` exists only for act-order checkpoints: the state dict decides whether this layer has one
        key = prefix + "perm"
        if key in state_dict:
            if self.perm is None or self.perm.shape != state_dict[key].shape:
                self.perm = torch.empty(state_dict[key].shape, dtype=torch.int64, device=self.qweight.device)
        else:
            self.perm = None
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


# ---------------------------------------------------------------------------------------------- replace_linear


def _skip_matcher(skip) -> Callable[[str, torch.nn.Module], bool]:
    if skip is None:
        return lambda name, module: False
    if callable(skip):
        return skip
    patterns = [skip] if isinstance(skip, str) else list(skip)
    for p in patterns:
        if not isinstance(p, str):
            raise TypeError(f"skip must be a name pattern, a list of them or a callable(name, module), got {p!r} in it")

    def match(name: str, module) -> bool:
        last = name.rsplit(".", 1)[-1]
        return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(last, p) for p in patterns)

    return match


def replace_linear(model: torch.nn.Module, W_dtype: str = "uint4", group_size: int = 128, with_zeros: bool = True,
                   zeros_mode: Optional[str] = "original", *, A_dtype: str = "float16", accum_dtype: str = "float32",
                   out_dtype: str = "float16", opt_M=DEFAULT_OPT_M,
                   skip: Union[None, str, Iterable[str], Callable[[str, torch.nn.Module], bool]] = None,
                   return_skipped: bool = False):
    """Quantize every ``torch.nn.Linear`` of ``model`` (recursively, in place) into a :class:`lowbit.Linear`.

    Each weight is quantized round-to-nearest with :func:`lowbit.quantize` (``W_dtype``, ``group_size``,
    ``with_zeros``, ``zeros_mode``); its bias is kept; the new layer lands on the old weight's device.
    Layers whose name matches ``skip`` (a glob pattern, or a list of them, matched against the qualified name
    such as ``'model.layers.0.mlp.up_proj'`` and its last part such as ``'lm_head'``; or a callable
    ``(name, module) -> bool``), and layers whose shape the config cannot take (``in_features`` not a multiple of
    ``group_size``, say) stay as they are; they are logged on the ``'lowbit'`` logger. Returns the model (a new
    Linear when ``model`` itself is a ``torch.nn.Linear``), or ``(model, skipped)`` with ``skipped`` a dict
    qualified name -> reason when ``return_skipped``.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _bool_arg("with_zeros", with_zeros)
    _bool_arg("return_skipped", return_skipped)
    if isinstance(group_size, bool) or not isinstance(group_size, int):
        raise TypeError(f"group_size must be an int, got {group_size!r}")
    if group_size != -1 and (group_size < 32 or group_size % 32):
        raise ValueError(f"group_size={group_size} is not allowed; allowed: -1 or a positive multiple of 32")
    if formats.format_of(_str_arg("W_dtype", W_dtype)).kind == "float":
        raise ValueError("W_dtype='float16' is not a quantized type; replace_linear needs a low-bit W_dtype")
    kwargs = dict(A_dtype=A_dtype, W_dtype=W_dtype, accum_dtype=accum_dtype, out_dtype=out_dtype,
                  group_size=group_size, with_scaling=True, with_zeros=with_zeros, zeros_mode=zeros_mode, opt_M=opt_M)
    # every argument is checked once up front on a shape any config takes
    K_probe = group_size if group_size > 0 else 256
    Linear(K_probe, 256, **kwargs)
    skip_fn = _skip_matcher(skip)
    skipped: Dict[str, str] = {}
    done: Dict[int, torch.nn.Module] = {}

    def convert(name: str, lin: torch.nn.Linear):
        if id(lin) in done:
            return done[id(lin)]
        if skip_fn(name, lin):
            skipped[name] = "matched skip"
            return None
        if group_size > 0 and lin.in_features % group_size:
            skipped[name] = f"in_features={lin.in_features} is not a multiple of group_size={group_size}"
            return None
        try:
            new = Linear(lin.in_features, lin.out_features, bias=lin.bias is not None, **kwargs)
        except ValueError as e:
            skipped[name] = str(e)
            return None
        weight = lin.weight.detach()
        values, scales, zeros = formats.quantize(weight, W_dtype, group_size, with_zeros=with_zeros,
                                                 zeros_mode=zeros_mode)
        bias = None if lin.bias is None else lin.bias.detach()
        new.load_and_transform_weight(values, scales, zeros, bias)
        new.to(weight.device)
        done[id(lin)] = new
        return new

    if isinstance(model, torch.nn.Linear):
        new = convert("", model)
        result = model if new is None else new
    else:
        for parent_name, parent in list(model.named_modules()):
            for child_name, child in list(parent._modules.items()):  # shared layers: every occurrence
                if isinstance(child, torch.nn.Linear):
                    full = f"{parent_name}.{child_name}" if parent_name else child_name
                    new = convert(full, child)
                    if new is not None:
                        setattr(parent, child_name, new)
        result = model
    if skipped:
        logger.warning("replace_linear left %d torch.nn.Linear layer(s) unquantized: %s", len(skipped),
                       "; ".join(f"{k or '<model>'}: {v}" for k, v in skipped.items()))
    return (result, skipped) if return_skipped else result
