"""The GPU stages, each a plain function from one IR to the next:

lowbit --(lowbit-lower-{matmul,attention}-to-gpu, nvvm-attach-target)--> gpu --(gpu.module to NVVM/LLVM)--> llvm
       --(gpu-module-to-binary{format=isa})--> ptx
"""
from __future__ import annotations

from dataclasses import dataclass

from mlir import ir
from mlir.dialects import gpu as gpu_dialect

from lowbit import frontend
from lowbit.shapes import matmul_shapes
from lowbit.compiler.pipeline import CompileError, run_lowbit_passes, run_upstream
from lowbit.compiler.schedule import AttentionSchedule, MatmulSchedule, matmul_smem_bytes, split_words
from lowbit.compiler.target import target_of
from lowbit.dialects import make_context
from lowbit.passes.lower_matmul_to_gpu import GPU_MODULE, SPLIT_OPERANDS

GPU_STAGES = ("lowbit", "gpu", "llvm", "ptx")
NVVM_PIPELINE = (
    "builtin.module(gpu.module(convert-scf-to-cf, convert-gpu-to-nvvm, convert-nvvm-to-llvm, "
    "canonicalize, cse, reconcile-unrealized-casts))"
)


@dataclass(frozen=True)
class KernelArtifact:
    """What the runtime needs to launch a kernel: PTX and its launch metadata (JSON-friendly)."""

    ptx: str
    meta: dict


def lowbit_module(op: str, cfg, schedule, ctx: ir.Context) -> ir.Module:
    """The entry IR of `op` ('matmul' or 'attention') with `schedule` recorded as `lowbit.schedule`."""
    if op == "matmul":
        return frontend.matmul_module(cfg, ctx, schedule=schedule.as_dict())
    if op == "attention":
        return frontend.attention_module(cfg, ctx, schedule=schedule.as_dict())
    raise CompileError(f"the GPU lowering of {op!r} is not available; allowed: 'matmul', 'attention'")


def to_gpu(module: ir.Module, target: str) -> ir.Module:
    t = target_of(target)
    run_lowbit_passes(module, ["lowbit-lower-matmul-to-gpu", "lowbit-lower-attention-to-gpu"])
    run_upstream(module, f"builtin.module(nvvm-attach-target{{chip={t.name} features={t.features} O=3 "
                         f"module={GPU_MODULE}}}, inline, canonicalize, cse)", "gpu")
    return module


def to_llvm(module: ir.Module) -> ir.Module:
    run_upstream(module, NVVM_PIPELINE, "llvm")
    return module


def to_ptx(module: ir.Module) -> str:
    run_upstream(module, "builtin.module(gpu-module-to-binary{format=isa})", "ptx")
    for op in module.body.operations:
        if op.operation.name == "gpu.binary":
            return gpu_dialect.ObjectAttr(op.attributes["objects"][0]).object.decode()
    raise CompileError("gpu-module-to-binary produced no gpu.binary")


def _kernel_name(module: ir.Module) -> str:
    for op in module.body.operations:
        if op.name == "gpu.module":
            for inner in op.regions[0].blocks[0].operations:
                if inner.operation.name == "gpu.func":
                    return inner.attributes["sym_name"].value
    raise CompileError("the gpu stage produced no kernel")


def emit(op: str, cfg, target: str, stage: str, schedule) -> str:
    """The IR (or PTX) of `stage` for one kernel, as `lowbit compile --emit` prints it."""
    if stage not in GPU_STAGES:
        raise ValueError(f"--emit {stage!r} is not a GPU stage; allowed: {', '.join(GPU_STAGES)}")
    module = lowbit_module(op, cfg, schedule, make_context())
    if stage == "lowbit":
        return str(module)
    to_gpu(module, target)
    if stage == "gpu":
        return str(module)
    to_llvm(module)
    return str(module) if stage == "llvm" else to_ptx(module)


def compile_matmul(cfg, schedule: MatmulSchedule, target: str) -> KernelArtifact:
    """Config + schedule + target -> PTX and launch metadata."""
    module = lowbit_module("matmul", cfg, schedule, make_context())
    to_gpu(module, target)
    name = _kernel_name(module)
    ptx = to_ptx(to_llvm(module))
    split = list(SPLIT_OPERANDS) if schedule.split_k > 1 else []
    params = list(matmul_shapes(cfg)) + split + ["m"]
    meta = {"kernel": name, "threads": schedule.threads, "grid_x": -(-cfg.N // schedule.block_n),
            "block_m": schedule.block_m, "split_k": schedule.split_k, "split_words": split_words(schedule),
            "shared_bytes": matmul_smem_bytes(cfg, schedule), "params": params, "target": target}
    return KernelArtifact(ptx, meta)


def attention_launch_meta(cfg, schedule: AttentionSchedule, name: str, target: str) -> dict:
    """Launch metadata of an attention kernel: a 1-D grid of ceil(seq_len / block_q) * batch * heads
    blocks, `threads` threads, `shared_bytes` of dynamic shared memory, parameters (q, k, v, out)."""
    from lowbit.compiler.schedule import attention_smem_bytes

    grid = -(-cfg.seq_len // schedule.block_q) * cfg.batch * cfg.heads
    return {"kernel": name, "threads": schedule.threads, "grid_x": grid,
            "shared_bytes": attention_smem_bytes(cfg, schedule), "params": ["q", "k", "v", "out"],
            "target": target}


def compile_attention(cfg, schedule: AttentionSchedule, target: str) -> KernelArtifact:
    """FlashAttenConfig + schedule + target -> PTX and launch metadata."""
    module = lowbit_module("attention", cfg, schedule, make_context())
    to_gpu(module, target)
    name = _kernel_name(module)
    ptx = to_ptx(to_llvm(module))
    return KernelArtifact(ptx, attention_launch_meta(cfg, schedule, name, target))
