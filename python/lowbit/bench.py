"""`lowbit bench matmul`: lowbit kernels against cuBLAS fp16 and torch's int4 kernel, one run on the GPU.

Times are medians of CUDA events around each call, after a warm-up (`median_us`). Weights rotate
over copies that together exceed 2x the L2, so no call finds its weight in cache; the L2 is not
flushed otherwise. A second table times decode the way a model runs it: calls over those copies back
to back in one CUDA graph, the time per call (each kernel's launch and memory ramp then overlap the
one before it).
"""
from __future__ import annotations

import datetime
import gc
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

SHAPES = ((8192, 8192), (28672, 8192), (8192, 28672))
MS = (1, 16, 64, 256, 4096)
ROTATE_BYTES = 120e6  # > 2x the H100's 50 MB L2
CHAINED_MS = (1, 16)
CHAINED_VARIANTS = ("W_UINT4 A_FP16 g128 zeros", "W_INT4 A_FP16 g128", "W_INT2 A_INT8")

VARIANTS = {
    "W_UINT4 A_FP16 g128 zeros": dict(W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=128,
                                      zeros_mode="original"),
    "W_INT4 A_FP16 g128": dict(W_dtype="int4", with_scaling=True, group_size=128),
    "W_INT2 A_FP16": dict(W_dtype="int2"),
    "W_NF4 A_FP16": dict(W_dtype="nf4"),
    "W_INT8 A_INT8": dict(W_dtype="int8", A_dtype="int8", accum_dtype="int32", out_dtype="int32"),
    "W_INT2 A_INT8": dict(W_dtype="int2", A_dtype="int8", accum_dtype="int32", out_dtype="int32"),
    "W_FP16 A_FP16": dict(W_dtype="float16"),
}


SPIN_CYCLES = 200_000  # about 100 us of GPU clock: longer than the host takes to queue one call


def median_us(fn, warmup_ms: float = 25, rep_ms: float = 100) -> float:
    """Median time in us of `fn` between CUDA events around each call, after warm-up calls.

    Before each call the GPU spins (torch.cuda._sleep) while the host queues the call, so the call
    starts without a launch gap and meets no other memory traffic. triton's do_bench flushes L2
    with a 256 MB memset instead, which leaves the L2 full of dirty lines that the timed call then
    writes back: that charged a 33.6 MB read up to 3 us (docs/perf-notes.md, variant 25)."""
    fn()
    torch.cuda.synchronize()
    probe = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
    probe[0].record()
    for _ in range(5):
        fn()
    probe[1].record()
    torch.cuda.synchronize()
    estimate_ms = max(probe[0].elapsed_time(probe[1]) / 5, 1e-3)
    for _ in range(max(1, int(warmup_ms / estimate_ms))):
        fn()
    reps = min(1000, max(10, int(rep_ms / estimate_ms)))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for start, end in zip(starts, ends):
        torch.cuda._sleep(SPIN_CYCLES)
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends)) * 1e3


def copy_bandwidth() -> float:
    """Measured device-to-device copy bandwidth in bytes/s (bytes read plus bytes written)."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return 2 * src.numel() / (median_us(lambda: dst.copy_(src)) * 1e-6)


def _rotating(make, nbytes: int) -> list:
    return [make() for _ in range(max(2, math.ceil(ROTATE_BYTES / max(nbytes, 1))))]


def _chained_us(fn, items) -> float:
    """Time per call of `fn` over `items` (twice over) captured back to back in one CUDA graph: the
    median of a replay divided by the calls in it. The calls run once before capture (which
    builds kernels and lets torch allocate)."""
    calls = list(items) * 2
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for item in calls:
            fn(item)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for item in calls:
            fn(item)
    return median_us(graph.replay) / len(calls)


def _time_us(fn, items, chained: bool) -> float:
    """Time per call of `fn` over the rotating `items`: alone (a call at a time) or back to
    back in a CUDA graph (`chained`)."""
    return _chained_us(fn, items) if chained else median_us(_cycle(fn, items))


def _cycle(fn, items):
    state = {"i": 0}

    def call():
        state["i"] = (state["i"] + 1) % len(items)
        return fn(items[state["i"]])

    return call


def _lowbit_case(name: str, fields: dict, m: int, N: int, K: int, schedule=None, chained: bool = False):
    """(time in us, weight bytes) of one lowbit variant; `chained`: per call back to back in a graph."""
    from lowbit import Matmul, MatmulConfig
    from lowbit.formats import random_values

    cfg = MatmulConfig(M=[m], N=N, K=K, **fields)
    op = Matmul(cfg, schedule=schedule)
    g = torch.Generator(device="cuda").manual_seed(0)
    if cfg.W_dtype == "float16":
        logical = torch.randn(N, K, device="cuda", generator=g)
    else:
        logical = random_values(cfg.W_dtype, (N, K), device="cuda", generator=g)
    extras = {}
    if cfg.with_scaling:
        extras["scale"] = (torch.rand(N, K // cfg.group, device="cuda", generator=g) * 0.01).half()
    if cfg.with_zeros:
        extras["zeros"] = (torch.rand(N, K // cfg.group, device="cuda", generator=g) * 8).half()
    packed = op.transform_weight(logical, **extras)
    W, *rest = packed if isinstance(packed, list) else [packed]
    kw = dict(zip([k for k in ("scale", "zeros") if k in extras], rest))
    wbytes = W.numel() * W.element_size() + sum(t.numel() * t.element_size() for t in kw.values())
    copies = _rotating(lambda: (W.clone(), {k: v.clone() for k, v in kw.items()}), wbytes)
    if cfg.A_dtype == "int8":
        A = torch.randint(-128, 128, (m, K), device="cuda", dtype=torch.int8, generator=g)
    else:
        A = torch.randn(m, K, device="cuda", generator=g).half()
    out = torch.empty(m, N, device="cuda", dtype=getattr(torch, cfg.out_dtype))

    def call(c):
        return op(A, c[0], output=out, **c[1])

    return _time_us(call, copies, chained), wbytes


def _cublas_fp16(m: int, N: int, K: int, chained: bool = False) -> float:
    W = torch.randn(N, K, device="cuda").half()
    A = torch.randn(m, K, device="cuda").half()
    copies = _rotating(lambda: W.clone(), W.numel() * 2)

    def call(w):
        return torch.nn.functional.linear(A, w)

    return _time_us(call, copies, chained)


def _torch_int4(m: int, N: int, K: int, chained: bool = False) -> float:
    """torch's tinygemm int4 kernel (bf16 activations, group 128); NaN where this torch lacks it."""
    try:
        q = torch.randint(0, 16, (N, K // 2), device="cuda", dtype=torch.uint8)
        packed = torch.ops.aten._convert_weight_to_int4pack(q, 8)
        sz = torch.rand(K // 128, N, 2, device="cuda").to(torch.bfloat16)
        A = torch.randn(m, K, device="cuda").to(torch.bfloat16)
        copies = _rotating(lambda: packed.clone(), packed.numel() * packed.element_size())

        def call(p):
            return torch.ops.aten._weight_int4pack_mm(A, p, 128, sz)

        return _time_us(call, copies, chained)
    except Exception as err:  # noqa: BLE001 - reported as n/a with the reason
        print(f"torch int4 kernel unavailable: {err}", file=sys.stderr)
        return float("nan")


def chained_decode(shapes, ms, variants, bw: float) -> str:
    """The decode table of back-to-back calls (see the module docstring): time per call, percent of the
    copy bandwidth in weight bytes, and speed-ups over cuBLAS and torch's int4 kernel timed the same way."""
    header = ("| m | N x K | kernel | time per call (us) | % copy BW | x cuBLAS fp16 | x torch int4 |\n"
              "|---|---|---|---|---|---|---|")
    print(header)
    rows = []
    for N, K in shapes:
        for m in ms:
            base, int4 = _cublas_fp16(m, N, K, chained=True), _torch_int4(m, N, K, chained=True)
            entries = [("cuBLAS fp16 (torch)", base, N * K * 2), ("torch int4 (tinygemm)", int4, N * K // 2)]
            entries += [(f"lowbit {name}", *_lowbit_case(name, VARIANTS[name], m, N, K, chained=True)) for name in variants]
            for name, t, nbytes in entries:
                row = (f"| {m} | {N}x{K} | {name} | {t:.1f} | {100 * nbytes / (t * 1e-6) / bw:.0f} | "
                       f"{base / t:.2f} | {int4 / t:.2f} |")
                rows.append(row)
                print(row, flush=True)
    return "\n".join([header] + rows)


def host_overhead_us() -> tuple:
    """Wall time per call from Python on a tiny problem (the GPU never the bottleneck), as (median,
    fastest batch) of 15 batches of 200 calls: lowbit's forward, and torch.mm into an output on the same
    fp16 shape, the peer whose host cost shows how fast this machine's host is."""
    from lowbit import Matmul, MatmulConfig

    cfg = MatmulConfig(M=[1], N=256, K=256, W_dtype="int4", with_scaling=True, group_size=128)
    op = Matmul(cfg)
    W, s = op.transform_weight(torch.randint(-8, 8, (256, 256)), scale=torch.rand(256, 2).half())
    W, s = W.cuda(), s.cuda()
    A = torch.randn(1, 256, device="cuda").half()
    out = torch.empty(1, 256, device="cuda").half()
    W16 = torch.randn(256, 256, device="cuda").half().t()
    return (_host_us(lambda: op(A, W, scale=s, output=out)),
            _host_us(lambda: torch.mm(A, W16, out=out)))


def _host_us(call) -> tuple:
    for _ in range(50):
        call()
    torch.cuda.synchronize()
    gc.collect()  # the benchmarks before leave a large heap: a full collection inside a batch would dominate it
    batches, n = [], 200
    for _ in range(15):
        t0 = time.perf_counter()
        for _ in range(n):
            call()
        batches.append((time.perf_counter() - t0) / n * 1e6)
        torch.cuda.synchronize()
    return statistics.median(batches), min(batches)


def graph_capture_ok() -> str:
    """Whether forward can be captured in a CUDA graph and replayed with the right result."""
    from lowbit import Matmul, MatmulConfig

    cfg = MatmulConfig(M=[16], N=512, K=512, W_dtype="uint4", with_scaling=True, with_zeros=True, group_size=128)
    op = Matmul(cfg)
    W, s, z = (t.cuda() for t in op.transform_weight(torch.randint(0, 16, (512, 512)),
                                                        scale=torch.rand(512, 4).half(), zeros=torch.rand(512, 4).half()))
    A = torch.randn(16, 512, device="cuda").half()
    out = torch.empty(16, 512, device="cuda").half()
    try:
        op(A, W, scale=s, zeros=z, output=out)
        expected = out.clone()
        out.fill_(float("nan"))
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            op(A, W, scale=s, zeros=z, output=out)
        graph.replay()
        torch.cuda.synchronize()
        return "yes" if torch.equal(out, expected) else "no (replay differs)"
    except Exception as err:  # noqa: BLE001
        return f"no ({type(err).__name__}: {err})"


def build_times() -> tuple:
    """(first build in s, cached load in ms) of a W_UINT4 g128 kernel, with a fresh cache directory."""
    from lowbit import Matmul, MatmulConfig
    from lowbit.runtime import gpu_kernels

    with tempfile.TemporaryDirectory() as d:
        old = os.environ.get("LOWBIT_CACHE_DIR")
        os.environ["LOWBIT_CACHE_DIR"] = d
        try:
            cfg = MatmulConfig(M=[16], N=4096, K=4096, W_dtype="uint4", with_scaling=True, with_zeros=True,
                               group_size=128, zeros_mode="original")
            op = Matmul(cfg)
            W, s, z = (t.cuda() for t in op.transform_weight(torch.randint(0, 16, (4096, 4096)),
                                                                scale=torch.rand(4096, 32).half(),
                                                                zeros=torch.rand(4096, 32).half()))
            A = torch.randn(16, 4096, device="cuda").half()
            gpu_kernels._matmul_launcher.cache_clear()
            t0 = time.perf_counter()
            op(A, W, scale=s, zeros=z)
            torch.cuda.synchronize()
            first = time.perf_counter() - t0
            gpu_kernels._matmul_launcher.cache_clear()
            t0 = time.perf_counter()
            op(A, W, scale=s, zeros=z)
            torch.cuda.synchronize()
            cached = time.perf_counter() - t0
        finally:
            if old is None:
                os.environ.pop("LOWBIT_CACHE_DIR")
            else:
                os.environ["LOWBIT_CACHE_DIR"] = old
    return first, cached * 1e3


def bench_matmul(shapes=SHAPES, ms=MS, variants=None, out_path: str = "BENCHMARKS.md", schedules=None,
                 peers: bool = True) -> str:
    """The benchmark table; with `schedules` (a list of schedule-override dicts) a tuning run: one row
    per variant and schedule, nothing written."""
    variants = variants or list(VARIANTS)
    bw = copy_bandwidth()
    rows = []
    header = ("| m | N x K | kernel | time (us) | weight GB/s | TFLOP/s | x cuBLAS fp16 | % copy BW |\n"
              "|---|---|---|---|---|---|---|---|")
    print(f"measured copy bandwidth: {bw / 1e12:.2f} TB/s")
    print(header)
    for N, K in shapes:
        for m in ms:
            flops = 2 * m * N * K
            base = _cublas_fp16(m, N, K)
            entries = [("cuBLAS fp16 (torch)", base, N * K * 2)]
            if peers:
                entries.append(("torch int4 (tinygemm)", _torch_int4(m, N, K), N * K // 2))
            for name in variants:
                for schedule in schedules or [None]:
                    t, nbytes = _lowbit_case(name, VARIANTS[name], m, N, K, schedule)
                    entries.append((f"lowbit {name}" + (f" {schedule}" if schedule else ""), t, nbytes))
            for name, t, nbytes in entries:
                row = (f"| {m} | {N}x{K} | {name} | {t:.1f} | {nbytes / (t * 1e-6) / 1e9:.0f} | "
                       f"{flops / (t * 1e-6) / 1e12:.1f} | {base / t:.2f} | {100 * nbytes / (t * 1e-6) / bw:.0f} |")
                rows.append(row)
                print(row, flush=True)
    if not peers:  # a tuning run: the table only
        return "\n".join([header] + rows)
    chained_ms = [m for m in ms if m in CHAINED_MS]
    chained = chained_decode(shapes, chained_ms, [v for v in CHAINED_VARIANTS if v in variants], bw) if chained_ms else ""
    (overhead, fastest), (torch_overhead, torch_fastest) = host_overhead_us()
    graph = graph_capture_ok()
    first, cached = build_times()
    extra = (f"- measured copy bandwidth: {bw / 1e12:.2f} TB/s (read + write)\n"
             f"- host overhead: {overhead:.1f} us per forward (median of 15 batches of 200 calls; fastest batch "
             f"{fastest:.1f} us; m=1, 256x256, GPU idle); torch.mm into an output on that fp16 shape, same "
             f"method: {torch_overhead:.1f} us (fastest batch {torch_fastest:.1f} us)\n"
             f"- CUDA graph capture of forward: {graph}\n"
             f"- first build of a kernel: {first:.2f} s; cached load: {cached:.1f} ms\n")
    print(extra)
    table = "\n".join([header] + rows)
    if chained:
        extra += ("\nDecode as a model runs it: the calls over the rotating weights back to back in one CUDA "
                  "graph, time per call (the same for the peers):\n\n" + chained + "\n")
    method = ("Each time is the median of CUDA events around single calls, after a warm-up; the GPU spins "
              "before each call (no launch gap, no L2 flush: weights rotate over copies that exceed 2x the "
              "L2, so no call finds its weights cached). Peers are timed the same way in the same run.\n\n")
    _write_section(out_path, "Matmul", f"{method}{table}\n\n{extra}", "lowbit bench matmul")
    return table


def _write_section(path: str, title: str, body: str, command: str) -> None:
    """Replaces (or appends) the `## title` section of BENCHMARKS.md."""
    p = Path(path)
    text = p.read_text() if p.exists() else "# Benchmarks\n\nAll numbers from one run on the H100 of the device machine.\n"
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    section = (f"## {title}\n\nCommand: `{command}`  \nDate: {datetime.date.today().isoformat()}  \n"
               f"Device: {device}, torch {torch.__version__}\n\n{body}\n")
    start = text.find(f"## {title}\n")
    if start < 0:
        text = text.rstrip() + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
    p.write_text(text)


def register_cli(sub) -> None:
    """Adds `lowbit bench <matmul|attention> [options]` to the lowbit CLI (see lowbit.cli)."""
    import argparse

    p = sub.add_parser("bench", help="benchmark lowbit against torch on the GPU and write BENCHMARKS.md",
                       description="lowbit bench matmul [--ms ..] [--shapes ..] | lowbit bench attention [--out ..]")
    p.add_argument("what", choices=("matmul", "attention"))
    p.add_argument("options", nargs=argparse.REMAINDER, help="options of the benchmark (see --help of each)")
    p.set_defaults(func=_run_bench)


def _run_bench(args) -> int:
    if not torch.cuda.is_available():
        print("lowbit bench: error: the benchmarks need a CUDA GPU; torch sees none", file=sys.stderr)
        return 2
    if args.what == "matmul":
        main(args.options)
        return 0
    from lowbit.bench_attention import main as attention_main

    return attention_main(args.options)


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="lowbit bench matmul", description=__doc__)
    parser.add_argument("--ms", default=",".join(map(str, MS)), help="comma-separated m values")
    parser.add_argument("--shapes", default=",".join(f"{n}x{k}" for n, k in SHAPES), help="NxK,NxK,...")
    parser.add_argument("--variants", default=None, help="comma-separated lowbit variants (default: all)")
    parser.add_argument("--out", default="BENCHMARKS.md", help="markdown file whose Matmul section is rewritten")
    parser.add_argument("--schedule", default="", help="schedule overrides for a tuning run, e.g. "
                        "warp_n_tiles=4,block_m=8, several sets separated by ';' (prints the table only; "
                        "BENCHMARKS.md is not written)")
    args = parser.parse_args(argv)
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    variants = args.variants.split(",") if args.variants else None
    schedules = parse_schedules(args.schedule)
    bench_matmul(shapes, [int(m) for m in args.ms.split(",")], variants, args.out, schedules or None,
                 peers=not schedules)


def parse_schedules(text: str) -> list:
    """'a=1,b=2;c=3' -> [{'a': 1, 'b': 2}, {'c': 3}] (schedule overrides of a tuning run)."""
    try:
        return [{k.strip(): int(v) for k, v in (kv.split("=") for kv in sched.split(",") if kv.strip())}
                for sched in text.split(";") if sched.strip()]
    except ValueError:
        raise SystemExit(f"lowbit bench matmul: error: --schedule {text!r}: expected field=int pairs separated "
                         f"by ',', sets separated by ';' (e.g. 'split_k=2;warps_k=1,split_k=4')") from None


if __name__ == "__main__":
    main()
