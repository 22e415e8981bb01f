"""The `lowbit` command line: `lowbit compile` (print one stage of a kernel) and `lowbit demo`.

    lowbit compile matmul --M 1 --N 4096 --K 4096 --W_dtype uint4 --group_size 128 \\
        --with_scaling true --with_zeros true --target cpu --emit loops
    lowbit compile attention --batch 1 --heads 8 --seq_len 128 --dim 64 --target sm_80 --emit ptx
    lowbit demo [--print-ir] [--M 1] [--N 1024] [--K 1024]

Adding a subcommand: write `_add_<name>(subparsers)` that adds a parser and sets `func=` (a function of the
parsed args returning the exit status), and list it in COMMANDS. A module may also plug itself in without
editing this file: if `lowbit.<name>` for a name in PLUGIN_COMMANDS (e.g. `lowbit.bench`) defines
`register_cli(subparsers)`, it is called to add its own parser.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import os
import statistics
import sys
import time
import typing
from typing import Callable, List, Optional, Sequence

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
CPU_STAGES = ("lowbit", "loops", "llvm")
GPU_STAGES = ("lowbit", "gpu", "llvm", "ptx")
PLUGIN_COMMANDS = ("bench",)


class CliError(Exception):
    """Printed as `lowbit <command>: error: <message>`, exit status `code` (2: bad usage/values, 1: failure)."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------------------------
# Config fields as flags
# --------------------------------------------------------------------------------------------
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _parse_bool(name: str, text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise CliError(f"{name}={text!r} is not a bool; allowed: true, false, 1, 0")


def _parse_int(name: str, text: str) -> int:
    try:
        return int(text.strip(), 0)
    except ValueError:
        raise CliError(f"{name}={text!r} is not an int") from None


def _admits(hint, kind) -> bool:
    if hint is kind:
        return True
    return any(_admits(a, kind) for a in typing.get_args(hint)) if typing.get_args(hint) else False


def _admits_sequence(hint) -> bool:
    for a in typing.get_args(hint):
        origin = typing.get_origin(a)
        if origin in (list, tuple) or (origin is not None and getattr(origin, "__name__", "") == "Sequence"):
            return True
    return False


def parse_field(name: str, hint, text: str):
    """A config field's value from its flag text, following the field's type hint:
    ints (`-1`, `0x10`), bools (true/false/1/0), comma lists for list-typed fields (`--M 1,16,32`),
    `none` for optional fields, strings otherwise."""
    optional = _admits(hint, type(None))
    if optional and text.strip().lower() == "none":
        return None
    if _admits_sequence(hint) and "," in text:
        items = [t for t in text.split(",") if t.strip()]
        if not items:
            raise CliError(f"{name}={text!r} lists no values")
        return [_parse_int(name, t) for t in items]
    if _admits(hint, bool):
        return _parse_bool(name, text)
    if _admits(hint, int):
        return _parse_int(name, text)
    return text


def config_fields(cls) -> List[tuple]:
    """(name, type hint, default, required) of each dataclass field of a config class."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name, str)
        required = f.default is None and not _admits(hint, type(None))
        out.append((f.name, hint, f.default, required))
    return out


def _type_name(hint) -> str:
    if _admits_sequence(hint):
        return "int or comma list"
    for kind, name in ((bool, "bool"), (int, "int")):
        if _admits(hint, kind):
            return name
    return "str"


def add_config_flags(parser: argparse.ArgumentParser, cls) -> None:
    group = parser.add_argument_group(f"{cls.__name__} fields (see SPEC.md)")
    for name, hint, default, required in config_fields(cls):
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        shown = "required" if required else f"default: {default!r}"
        group.add_argument(*flags, dest=f"field_{name}", metavar="VALUE", default=None,
                           help=f"{_type_name(hint)}; {shown}")


def config_from_args(cls, args):
    """Builds the config; a bad or missing value is a CliError carrying the config's own ValueError text."""
    values, missing = {}, []
    for name, hint, _default, required in config_fields(cls):
        text = getattr(args, f"field_{name}", None)
        if text is None:
            if required:
                missing.append(f"--{name}")
            continue
        values[name] = parse_field(name, hint, text)
    if missing:
        raise CliError(f"{cls.__name__} needs {', '.join(missing)}")
    try:
        return cls(**values)
    except (ValueError, TypeError) as err:
        raise CliError(str(err)) from None


# --------------------------------------------------------------------------------------------
# lowbit compile
# --------------------------------------------------------------------------------------------
def _config_classes():
    from lowbit.config import FlashAttenConfig, MatmulConfig

    return {"matmul": MatmulConfig, "attention": FlashAttenConfig}


def _parse_schedule(text: Optional[str]) -> dict:
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--schedule {text!r}: expected key=value[,key=value...]")
        key, value = key.strip(), value.strip()
        low = value.lower()
        out[key] = low in _TRUE if low in _TRUE + _FALSE and not low.isdigit() else _parse_int(key, value)
    return out


def _write(text: str, path: Optional[str]) -> None:
    if not text.endswith("\n"):
        text += "\n"
    if path in (None, "-"):
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as err:
        raise CliError(f"could not write {path!r}: {err.strerror}", EXIT_FAIL) from None


def compile_cpu(op: str, cfg, stage: str) -> str:
    from lowbit import frontend
    from lowbit.compiler.pipeline import lower_cpu
    from lowbit.dialects import make_context

    ctx = make_context()
    module = frontend.matmul_module(cfg, ctx) if op == "matmul" else frontend.attention_module(cfg, ctx)
    return str(lower_cpu(module, stage))


def _gpu_pipeline():
    try:
        return importlib.import_module("lowbit.compiler.gpu_pipeline")
    except Exception as err:  # ImportError, or a broken module
        raise CliError(f"GPU lowering is not available in this build: {type(err).__name__}: {err}") from None


def compile_gpu(op: str, cfg, target: str, stage: str, schedule_overrides: dict, bucket: Optional[int]) -> str:
    """Calls lowbit.compiler.gpu_pipeline.emit(op, cfg, target, stage[, schedule]) once per M bucket."""
    gp = _gpu_pipeline()
    if not hasattr(gp, "emit"):
        raise CliError("GPU lowering is not available in this build: lowbit.compiler.gpu_pipeline has no emit()")
    wants_schedule = "schedule" in inspect.signature(gp.emit).parameters
    if op == "matmul":
        buckets = list(cfg.buckets)
        if bucket is not None:
            if bucket not in buckets:
                raise CliError(f"--bucket {bucket} is not one of the config's M sizes {buckets}")
            buckets = [bucket]
    else:
        if bucket is not None:
            raise CliError("--bucket applies to matmul only")
        buckets = [None]

    outputs = []
    for b in buckets:
        kwargs = {}
        if wants_schedule:
            from lowbit.compiler import schedule as sched_mod

            try:
                if op == "matmul":
                    kwargs["schedule"] = sched_mod.matmul_schedule(cfg, b, target, **schedule_overrides)
                else:
                    kwargs["schedule"] = sched_mod.attention_schedule(cfg, target, **schedule_overrides)
            except ValueError as err:
                raise CliError(str(err)) from None
        elif schedule_overrides:
            raise CliError("--schedule is not supported by this build's GPU pipeline")
        result = gp.emit(op, cfg, target, stage, **kwargs)
        if isinstance(result, bytes):
            result = result.decode()
        text = str(result)
        if len(buckets) > 1:
            text = f"// ----- lowbit: M bucket {b} -----\n{text}"
        outputs.append(text.rstrip("\n"))
    return "\n".join(outputs) + "\n"


def run_compile(args) -> int:
    from lowbit.compiler.pipeline import CompileError
    from lowbit.compiler.target import TARGETS

    cls = _config_classes()[args.op]
    cfg = config_from_args(cls, args)
    target = args.target
    emit = args.emit
    if target is None:
        target = "cpu" if emit in (None,) + CPU_STAGES else "sm_80"
    if target not in TARGETS:
        raise CliError(f"--target {target!r} is not supported; allowed: {', '.join(TARGETS)}")
    if emit is None:
        emit = "llvm" if target == "cpu" else "ptx"

    if target == "cpu":
        if emit not in CPU_STAGES:
            raise CliError(f"--emit {emit} needs a GPU target (--target {'|'.join(t for t in TARGETS if t != 'cpu')}); "
                           f"CPU stages: {', '.join(CPU_STAGES)}")
        if args.schedule or args.bucket is not None:
            raise CliError("--schedule and --bucket apply to GPU targets only")
        try:
            text = compile_cpu(args.op, cfg, emit)
        except CompileError as err:
            raise CliError(str(err), EXIT_FAIL) from None
    else:
        if emit not in GPU_STAGES:
            raise CliError(f"--emit {emit} is a CPU stage; GPU stages: {', '.join(GPU_STAGES)}")
        try:
            text = compile_gpu(args.op, cfg, target, emit, _parse_schedule(args.schedule), args.bucket)
        except CompileError as err:
            raise CliError(str(err), EXIT_FAIL) from None
    _write(text, args.output)
    return EXIT_OK


def _add_compile(sub) -> None:
    p = sub.add_parser("compile", help="print one stage of an operator's kernel (IR or PTX)",
                       description="Builds the kernel of a MatmulConfig / FlashAttenConfig given field by field and "
                                   "prints one stage of it.")
    ops = p.add_subparsers(dest="op", metavar="{matmul,attention}", required=True)
    from lowbit.compiler.target import TARGETS

    for op, cls in _config_classes().items():
        q = ops.add_parser(op, help=f"a {cls.__name__}",
                           description=f"Fields take the {cls.__name__} names, e.g. "
                                       + ("--M 1,16 --N 4096 --K 4096 --W_dtype uint4 --with_scaling true"
                                          if op == "matmul" else "--batch 1 --heads 8 --seq_len 128 --dim 64 --is_causal true"))
        add_config_flags(q, cls)
        q.add_argument("--target", default=None, choices=list(TARGETS),
                       help="cpu (default for lowbit/loops/llvm) or a GPU (default sm_80 for gpu/ptx)")
        q.add_argument("--emit", default=None, choices=sorted(set(CPU_STAGES + GPU_STAGES), key=(CPU_STAGES + GPU_STAGES).index),
                       help=f"stage to print; CPU: {', '.join(CPU_STAGES)} (default llvm); GPU: {', '.join(GPU_STAGES)} (default ptx)")
        q.add_argument("--schedule", default=None, metavar="K=V,...", help="GPU schedule overrides, e.g. block_m=32,stages=2")
        q.add_argument("--bucket", default=None, type=int, help="GPU matmul: emit only the kernel of this M size")
        q.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
        q.set_defaults(func=run_compile, op=op)


# --------------------------------------------------------------------------------------------
# lowbit demo
# --------------------------------------------------------------------------------------------
DEMO_TOLERANCE = 1e-2  # relative (Frobenius) error allowed for float16 outputs


def _print_stage(stage: str, text: str) -> None:
    bar = "=" * 20
    sys.stdout.write(f"// {bar} stage: {stage} {bar}\n{text.rstrip()}\n")


def _print_ir(cfg, device: str) -> None:
    if device == "cpu":
        from lowbit import frontend
        from lowbit.compiler.pipeline import lower_cpu
        from lowbit.dialects import make_context

        lower_cpu(frontend.matmul_module(cfg, make_context()), "llvm", dump=_print_stage)
        return
    import torch

    from lowbit.compiler.target import target_for_capability

    target = target_for_capability(*torch.cuda.get_device_capability()).name
    for stage in GPU_STAGES:
        _print_stage(f"{stage} ({target})", compile_gpu("matmul", cfg, target, stage, {}, cfg.buckets[-1]))


def run_demo(args) -> int:
    import torch

    from lowbit import formats
    from lowbit.config import MatmulConfig
    from lowbit.matmul import Matmul

    if args.device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device = args.device
        if device == "cuda" and not torch.cuda.is_available():
            raise CliError("--device cuda: torch sees no CUDA GPU")
    W_dtype, group = "uint4", 128
    try:
        cfg = MatmulConfig(M=args.M, N=args.N, K=args.K, A_dtype="float16", W_dtype=W_dtype, accum_dtype="float32",
                           out_dtype="float16", group_size=group, with_scaling=True, with_zeros=True,
                           zeros_mode="original")
    except ValueError as err:
        raise CliError(str(err)) from None
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU backend"
    print(f"lowbit demo: W_UINT4 x A_FP16 matmul, group {group} scales + 'original' zeros, "
          f"M={args.M} N={args.N} K={args.K}, float32 accumulation, on {device} ({where})")

    if args.print_ir:
        _print_ir(cfg, device)

    gen = torch.Generator().manual_seed(args.seed)
    weight = torch.randn(args.N, args.K, generator=gen, dtype=torch.float32)
    values, scale, zeros = formats.quantize(weight, W_dtype, group_size=group, with_zeros=True, zeros_mode="original")
    A = torch.randn(args.M, args.K, generator=gen, dtype=torch.float32).to(torch.float16)
    deq = formats.dequantize_reference(formats.to_codes(values, W_dtype), W_dtype, scale, zeros, "original", group)
    ref = A.to(torch.float64) @ deq.t()

    op = Matmul(cfg)
    W_packed, scale_k, zeros_k = op.transform_weight(values, scale=scale, zeros=zeros)
    A_d, W_d, s_d, z_d = (t.to(device) for t in (A, W_packed, scale_k, zeros_k))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    t0 = time.perf_counter()
    try:
        from lowbit.kernels import kernel_for

        kernel_for("matmul", cfg, torch.device(device), cfg.bucket_for(args.M))
    except ImportError:
        pass  # no separate build step: the first call below builds
    out = op(A_d, W_d, scale=s_d, zeros=z_d)
    sync()
    build_s = time.perf_counter() - t0

    times = []
    for _ in range(args.repeat):
        sync()
        t = time.perf_counter()
        op(A_d, W_d, scale=s_d, zeros=z_d, output=out)
        sync()
        times.append(time.perf_counter() - t)
    run_ms = statistics.median(times) * 1e3

    got = out.to("cpu", torch.float64)
    err = (torch.linalg.norm(got - ref) / torch.linalg.norm(ref)).item()
    ok = err <= DEMO_TOLERANCE and bool(torch.isfinite(got).all())
    print(f"build time: {build_s:.3f} s (compile and first call)")
    print(f"run time:   {run_ms:.3f} ms (median of {args.repeat} calls)")
    print(f"relative error: {err:.3e} vs a float64 reference on the dequantized weights "
          f"(tolerance {DEMO_TOLERANCE:.0e}): {'OK' if ok else 'FAILED'}")
    return EXIT_OK if ok else EXIT_FAIL


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="build, run and check a W_UINT4 A_FP16 matmul (GPU if available, else CPU)",
                       description="Quantizes random weights to uint4 (group 128, scales and zeros), runs the lowbit "
                                   "matmul on the GPU when torch sees one (else on the CPU backend), and checks it "
                                   "against a float64 reference. Exit 1 if the relative error exceeds "
                                   f"{DEMO_TOLERANCE:g}.")
    p.add_argument("--M", type=int, default=1, help="rows of A (default 1)")
    p.add_argument("--N", type=int, default=1024, help="output features (default 1024)")
    p.add_argument("--K", type=int, default=1024, help="input features, a multiple of 128 (default 1024)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run (default: auto)")
    p.add_argument("--repeat", type=int, default=10, help="timed calls (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--print-ir", action="store_true", help="print the IR of every compiler stage")
    p.set_defaults(func=run_demo)


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------
COMMANDS: List[Callable] = [_add_compile, _add_demo]


def _add_plugins(sub) -> None:
    for name in PLUGIN_COMMANDS:
        module_name = f"lowbit.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue
            module, problem = None, err
        except Exception as err:  # a broken plugin must not take `compile`/`demo` down
            module, problem = None, err
        if module is not None:
            register = getattr(module, "register_cli", None)
            if register is not None:
                register(sub)
            continue

        def broken(args, _name=name, _problem=problem):
            raise CliError(f"`lowbit {_name}` is not available: {type(_problem).__name__}: {_problem}", EXIT_FAIL)

        sub.add_parser(name, help=f"(unavailable: {module_name} failed to import)").set_defaults(func=broken)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowbit", description="lowbit: low-bit matmul and attention kernels through MLIR.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    _add_plugins(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"lowbit {args.command}"
    try:
        return args.func(args)
    except CliError as err:
        sys.stderr.write(f"{prog}: error: {err}\n")
        return err.code
    except BrokenPipeError:
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        if os.environ.get("LOWBIT_DEBUG"):
            raise
        sys.stderr.write(f"{prog}: error: {type(err).__name__}: {err}\n(set LOWBIT_DEBUG=1 for the Python traceback)\n")
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
