"""`Matmul`: the low-bit matmul operator of SPEC.md (weight transform, checks, dispatch)."""
from __future__ import annotations

from typing import Optional

import torch

from lowbit import formats
from lowbit.checks import TORCH_DTYPES, check_tensor
from lowbit.config import MatmulConfig
from lowbit.shapes import matmul_shapes
from lowbit.layout import layout_of, to_kernel_order
from lowbit.kernels import kernel_for

_data_ptr = torch.Tensor.data_ptr


class Matmul:
    """`Matmul(config)`; `op(A, W, scale=None, zeros=None, bias=None, output=None)` -> output."""

    def __init__(self, config: MatmulConfig, schedule: Optional[dict] = None):
        """`schedule` overrides fields of the GPU schedule of every M bucket (see lowbit.compiler.schedule)."""
        if not isinstance(config, MatmulConfig):
            raise TypeError(f"config must be a MatmulConfig, got {type(config).__name__}")
        self.config = config
        self.schedule = tuple(sorted((schedule or {}).items()))
        self._kernels: dict = {}  # (device, M bucket) -> kernel
        self._kernel_of_m: dict = {}  # (device, m) -> the kernel of m's bucket (no bucket search per call)
        self._last_weights = None  # (device, tensors given, weight operands, addresses) last checked
        if schedule:  # validate the overrides now, not at the first launch
            from lowbit.compiler.schedule import matmul_schedule

            for bucket in config.buckets:
                matmul_schedule(config, bucket, "sm_90a", **schedule)
        self._shapes = matmul_shapes(config)
        # forward's inputs after A, by their SPEC names: (shape, dtype)
        self._operands = {name: self._shapes[key] for name, key in
                          (("W", "w"), ("scale", "scale"), ("zeros", "zeros"), ("bias", "bias")) if key in self._shapes}
        # (name, exact shape or None when not taken, torch dtype) in forward's argument order
        self._specs = [(name, tuple(self._operands[name][0]) if name in self._operands else None,
                        TORCH_DTYPES[self._operands[name][1]] if name in self._operands else None)
                       for name in ("W", "scale", "zeros", "bias")]
        self._a_dtype, self._out_dtype = TORCH_DTYPES[config.A_dtype], TORCH_DTYPES[config.out_dtype]
        self._last_a = None  # (A's last shape, its m, its output shape)

    def __getstate__(self):  # kernels are rebuilt (or loaded from the cache) after unpickling
        return {**self.__dict__, "_kernels": {}, "_kernel_of_m": {}, "_last_weights": None}

    def __getattr__(self, name):  # every config field and property, as SPEC.md lists them
        if name != "config" and hasattr(MatmulConfig, name) or name in MatmulConfig.__dataclass_fields__:
            return getattr(self.config, name)
        raise AttributeError(name)

    # -- weights --
    def transform_weight(self, weight, scale=None, zeros=None, bias=None):
        """Logical tensors -> what `forward` expects. Returns the packed weight alone, or a list
        `[weight, scale?, zeros?, bias?]` when any of the others is given."""
        cfg = self.config
        if zeros is not None and not cfg.with_zeros or scale is not None and not cfg.with_scaling:
            raise ValueError("scale/zeros were given but the config has with_scaling/with_zeros off")
        if bias is not None and not cfg.with_bias:
            raise ValueError("bias was given but the config has with_bias=False")
        w = self._transform_w(weight)
        extras = []
        if scale is not None:
            extras.append(self._float16("scale", scale, self._shapes.get("scale")))
        if zeros is not None:
            extras.append(self._transform_zeros(zeros))
        if bias is not None:
            extras.append(self._cast("bias", bias, self._shapes.get("bias")))
        if scale is None and zeros is None and bias is None:
            return w
        return [w] + extras

    def _transform_w(self, weight) -> torch.Tensor:
        cfg = self.config
        logical = (cfg.N, cfg.K) if cfg.layout == "nt" else (cfg.K, cfg.N)
        if not isinstance(weight, torch.Tensor):
            raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
        if tuple(weight.shape) != logical:
            raise ValueError(f"weight must have the logical shape {list(logical)} for layout={cfg.layout!r}, got {list(weight.shape)}")
        if cfg.layout == "nn":
            weight = weight.t()
        fmt = formats.format_of(cfg.W_dtype)
        layout = layout_of(fmt.bits, cfg.A_dtype)
        if cfg.W_dtype == "float16":
            if not weight.is_floating_point():
                raise TypeError(f"weight for W_dtype='float16' must be a float tensor, got {weight.dtype}")
            return to_kernel_order(weight.to(torch.float16), layout).contiguous()
        codes = to_kernel_order(formats.to_codes(weight.cpu(), cfg.W_dtype), layout)  # to_codes checks the range
        packed = codes.view(torch.int8) if fmt.bits == 8 else formats.pack(codes, fmt.bits, dim=-1)
        return packed.contiguous().to(weight.device)

    def _float16(self, name, t, shape) -> torch.Tensor:
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a float torch.Tensor")
        if list(t.shape) != list(shape[0]):
            raise ValueError(f"{name} must have shape {list(shape[0])}, got {list(t.shape)}")
        return t.to(torch.float16).contiguous()

    def _cast(self, name, t, shape) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor")
        if list(t.shape) != list(shape[0]):
            raise ValueError(f"{name} must have shape {list(shape[0])}, got {list(t.shape)}")
        return t.to(TORCH_DTYPES[shape[1]]).contiguous()

    def _transform_zeros(self, zeros) -> torch.Tensor:
        cfg = self.config
        if cfg.zeros_mode != "quantized":
            return self._float16("zeros", zeros, self._shapes["zeros"])
        groups = cfg.K // cfg.group
        if isinstance(zeros, torch.Tensor) and list(zeros.shape) == [cfg.N, groups]:
            if zeros.is_floating_point():
                raise TypeError(f"quantized zeros given as codes [N, K//G] must have an integer dtype, got {zeros.dtype}")
            return formats.pack_zeros_quantized(zeros.cpu(), cfg.bits).to(zeros.device)
        packed_shape = list(self._shapes["zeros"][0])
        if isinstance(zeros, torch.Tensor) and list(zeros.shape) != packed_shape:
            raise ValueError(f"quantized zeros must be integer codes of shape [N, K//G] = [{cfg.N}, {groups}] or "
                             f"packed int8 of shape {packed_shape}, got shape {list(zeros.shape)}")
        check_tensor("zeros", zeros, "int8", self._shapes["zeros"][0])  # already packed
        return zeros

    # -- running --
    def forward(self, A, W, scale=None, zeros=None, bias=None, output=None) -> torch.Tensor:
        cfg = self.config
        if not (isinstance(A, torch.Tensor) and A.dtype is self._a_dtype and A.is_contiguous()):
            check_tensor("A", A, cfg.A_dtype)
        shape, last = A.shape, self._last_a
        if last is not None and shape == last[0]:  # a decode loop calls with one shape: checked and derived once
            m, out_shape = last[1], last[2]
        else:
            if A.dim() < 1 or shape[-1] != cfg.K:
                raise ValueError(f"A must have shape [..., K={cfg.K}], got {list(shape)}")
            m, out_shape = (A.numel() // cfg.K if cfg.K else 0), (*shape[:-1], cfg.N)
            self._last_a = (shape, m, out_shape)  # one assignment: another thread sees all of it or none
        device = A.device
        weights, weight_ptrs = self._checked_weights(device, W, scale, zeros, bias)
        if output is None:
            output = torch.empty(out_shape, dtype=self._out_dtype, device=device)
        elif not (isinstance(output, torch.Tensor) and output.dtype is self._out_dtype and output.shape == out_shape
                  and output.device == device and output.is_contiguous()):
            check_tensor("output", output, cfg.out_dtype, out_shape, device)
        if m == 0:
            return output
        kernel = self._kernel_of_m.get((device, m))
        if kernel is None:
            kernel = self._kernel(device, m)
        if A.is_cuda:  # not device.type, which costs about 0.7 us a call
            a_ptr = A.data_ptr()
            if a_ptr & 15:  # 16-byte copies of A rows
                raise ValueError("A must start at a 16-byte aligned address for the GPU kernel "
                                 "(got a view at an offset; call .clone() first)")
            kernel.launch([a_ptr, *weight_ptrs, output.data_ptr()], m)
        else:
            kernel([A.view(m, cfg.K), *weights, output.view(m, cfg.N)])
        return output

    def _checked_weights(self, device, W, scale, zeros, bias) -> tuple:
        """(the weight operands forward passes on, their addresses), checked against the config. The
        common case costs one expression per tensor (the detailed checks run only to name the error),
        and the same tensors again at the same addresses on the same device (a layer's own weights)
        skip even that."""
        last = self._last_weights
        if last is not None:
            lw, ls, lz, lb = last[1]
            if lw is W and ls is scale and lz is zeros and lb is bias and last[0] == device:
                ptrs = list(map(_data_ptr, last[2]))
                if ptrs == last[3]:
                    return last[2], ptrs
        given = (W, scale, zeros, bias)
        weights = []
        for (name, shape, dtype), t in zip(self._specs, given):
            if shape is None:
                if t is not None:
                    raise ValueError(f"{name} was given but this config takes none (see with_scaling/with_zeros/with_bias)")
                continue
            if not (isinstance(t, torch.Tensor) and t.dtype is dtype and t.shape == shape and t.device == device
                    and t.is_contiguous()):
                if t is None:
                    raise ValueError(f"{name} is required by this config")
                check_tensor(name, t, self._operands[name][1], self._operands[name][0], device)
            weights.append(t)
        ptrs = list(map(_data_ptr, weights))
        if device.type == "cuda" and ptrs[0] & 15:  # 16-byte weight loads
            raise ValueError("W must start at a 16-byte aligned address for the GPU kernel "
                             "(got a view at an offset; call .clone() first)")
        self._last_weights = (device, given, weights, ptrs)
        return weights, ptrs

    def _kernel(self, device: torch.device, m: int):
        """The kernel of the M bucket of `m` rows (an error for m outside a static M), remembered for m."""
        key = (device, self.config.bucket_for(m))
        if key not in self._kernels:
            self._kernels[key] = kernel_for("matmul", self.config, device, key[1], self.schedule)
        self._kernel_of_m[(device, m)] = self._kernels[key]
        return self._kernels[key]

    __call__ = forward

