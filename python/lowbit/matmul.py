"""`Matmul`: the low-bit matmul operator of SPEC.md (weight transform, checks, dispatch)."""
from __future__ import annotations

from dataclasses import dataclass
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
        self._last_call = None  # the _CheckedCall of forward's last arguments
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

    def __getstate__(self):  # kernels are rebuilt (or loaded from the cache) after unpickling
        return {**self.__dict__, "_kernels": {}, "_last_call": None}

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
        call = self._last_call
        # a decode loop calls with A of one shape on one device and the same weight tensors: then only
        # what may differ between such calls is checked again (each torch attribute read costs 0.1-0.2 us)
        if (call is None or W is not call.given[0] or scale is not call.given[1] or zeros is not call.given[2]
                or bias is not call.given[3] or not isinstance(A, torch.Tensor) or A.dtype is not self._a_dtype
                or A.shape != call.a_shape or A.device != call.device or not A.is_contiguous()
                # storage replaced in place (nn.Module.to, `.data =`): check it all
                or list(map(_data_ptr, call.weights)) != call.weight_ptrs):
            call = self._check_call(A, W, scale, zeros, bias)
        weight_ptrs = call.weight_ptrs
        if output is None:
            output = torch.empty(call.out_shape, dtype=self._out_dtype, device=call.device)
        elif not (isinstance(output, torch.Tensor) and output.dtype is self._out_dtype and output.shape == call.out_shape
                  and output.device == call.device and output.is_contiguous()):
            check_tensor("output", output, self.config.out_dtype, call.out_shape, call.device)
        m = call.m
        if m == 0:
            return output
        if call.cuda:
            a_ptr = A.data_ptr()
            if a_ptr & 15:  # 16-byte copies of A rows
                raise ValueError("A must start at a 16-byte aligned address for the GPU kernel "
                                 "(got a view at an offset; call .clone() first)")
            call.kernel.launch([a_ptr, *weight_ptrs, output.data_ptr()], m)
        else:
            call.kernel([A.view(m, self.config.K), *call.weights, output.view(m, self.config.N)])
        return output

    def _check_call(self, A, W, scale, zeros, bias) -> "_CheckedCall":
        """Checks forward's A and weights against the config, finds the kernel of A's rows and remembers
        all of it for the next call (one assignment: another thread sees all of it or none)."""
        cfg = self.config
        if not (isinstance(A, torch.Tensor) and A.dtype is self._a_dtype and A.is_contiguous()):
            check_tensor("A", A, cfg.A_dtype)
        shape = A.shape
        if A.dim() < 1 or shape[-1] != cfg.K:
            raise ValueError(f"A must have shape [..., K={cfg.K}], got {list(shape)}")
        m = A.numel() // cfg.K if cfg.K else 0
        device = A.device
        weights, ptrs = self._checked_weights(device, W, scale, zeros, bias)
        kernel = self._kernel(device, m) if m else None
        call = _CheckedCall(shape, device, device.type == "cuda", (W, scale, zeros, bias), weights, ptrs, m,
                            (*shape[:-1], cfg.N), kernel)
        self._last_call = call
        return call

    def _checked_weights(self, device, W, scale, zeros, bias) -> tuple:
        """(the weight operands forward passes on, their addresses), checked against the config."""
        weights = []
        for (name, shape, dtype), t in zip(self._specs, (W, scale, zeros, bias)):
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
        return weights, ptrs

    def _kernel(self, device: torch.device, m: int):
        """The kernel of the M bucket of `m` rows (an error for m outside a static M)."""
        key = (device, self.config.bucket_for(m))
        if key not in self._kernels:
            self._kernels[key] = kernel_for("matmul", self.config, device, key[1], self.schedule)
        return self._kernels[key]

    __call__ = forward


@dataclass(frozen=True, slots=True)
class _CheckedCall:
    """What Matmul.forward checked and derived for one set of arguments: A's shape and device, the
    weight tensors given and the operands made of them with their addresses, the row count m, the
    output's shape and the kernel of m."""
    a_shape: torch.Size
    device: torch.device
    cuda: bool
    given: tuple
    weights: list
    weight_ptrs: list
    m: int
    out_shape: tuple
    kernel: object
