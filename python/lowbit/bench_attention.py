"""`lowbit bench attention`: FlashAtten on the GPU timed against torch SDPA in the same run.

For every benchmark shape (batch, heads, seq_len, dim, causal) it times lowbit's kernel ('nnn' layout,
Q/K/V as [batch, seq_len, heads, dim]), torch's scaled_dot_product_attention with its default backend
choice and with the FLASH_ATTENTION backend (both on [batch, heads, seq_len, dim] views of the same
tensors, the strided layout these backends take natively), as medians of CUDA events after a warm-up
(`lowbit.bench.median_us`, the matmul benchmark's timing). TFLOP/s counts 4 * batch * heads *
seq_len^2 * dim, halved when causal. The lowbit output is checked against the FLASH_ATTENTION one
before timing. The table replaces the "## Attention" section of BENCHMARKS.md.
"""
from __future__ import annotations

import datetime
import re
from pathlib import Path

SHAPES = [  # (batch, heads, seq_len, dim, causal)
    (1, 32, 4096, 128, False),
    (1, 32, 4096, 128, True),
    (4, 32, 2048, 64, False),
    (1, 16, 16384, 128, False),
    (8, 32, 1024, 128, True),
]
COMMAND = "lowbit bench attention"


def flops(batch, heads, seq_len, dim, causal) -> float:
    f = 4.0 * batch * heads * seq_len * seq_len * dim
    return f / 2 if causal else f


def _bench(fn) -> float:
    """Median milliseconds of `fn` (warm-up calls first, which also compile and load)."""
    from lowbit.bench import median_us

    return median_us(fn, warmup_ms=50, rep_ms=300) / 1e3


def bench_shape(shape, schedule: dict = None, baselines: bool = True) -> list:
    """[(impl, ms, TFLOP/s, max abs difference to FLASH_ATTENTION)] for one shape; `schedule` overrides
    fields of lowbit's default schedule, `baselines=False` times lowbit alone."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from lowbit import FlashAtten, FlashAttenConfig
    from lowbit.runtime.gpu_kernels import attention_kernel

    b, h, s, d, causal = shape
    cfg = FlashAttenConfig(batch=b, heads=h, seq_len=s, dim=d, is_causal=causal)
    g = torch.Generator(device="cuda").manual_seed(0)
    Q, K, V = (torch.randn(b, s, h, d, device="cuda", dtype=torch.float16, generator=g) for _ in range(3))
    out = torch.empty_like(Q)
    if schedule:
        kernel = attention_kernel(cfg, Q.device, **schedule)
        run = lambda: kernel([Q, K, V, out])  # noqa: E731
    else:
        op = FlashAtten(cfg)
        run = lambda: op(Q, K, V, output=out)  # noqa: E731
    q, k, v = (t.transpose(1, 2) for t in (Q, K, V))

    def sdpa():
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    def flash():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    run()
    expect = flash().transpose(1, 2)
    diff = float((out.float() - expect.float()).abs().max())
    f = flops(*shape)
    rows = []
    impls = (("lowbit", run), ("torch sdpa (default)", sdpa), ("torch sdpa FLASH_ATTENTION", flash))
    for name, fn in impls if baselines else impls[:1]:
        ms = _bench(fn)
        rows.append((name, ms, f / (ms * 1e-3) / 1e12, diff if name == "lowbit" else 0.0))
    return rows


def table(results) -> str:
    lines = ["| shape (B, H, S, D) | causal | implementation | time (ms) | TFLOP/s | vs FLASH_ATTENTION |",
             "|---|---|---|---:|---:|---:|"]
    for shape, rows in results:
        b, h, s, d, causal = shape
        fa = next(r[1] for r in rows if "FLASH" in r[0])
        for name, ms, tflops, _ in rows:
            lines.append(f"| ({b}, {h}, {s}, {d}) | {'yes' if causal else 'no'} | {name} | {ms:.3f} | "
                         f"{tflops:.1f} | {fa / ms:.2f}x |")
    return "\n".join(lines)


def write_section(markdown: str, out_path) -> None:
    """Replaces (or appends) the "## Attention" section of `out_path`."""
    path = Path(out_path)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    section = markdown.rstrip() + "\n"
    pattern = re.compile(r"^## Attention\b.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)


def bench_attention(out_path="BENCHMARKS.md", shapes=SHAPES) -> str:
    """Runs the benchmark, prints the table, writes the "## Attention" section of `out_path` (None: do
    not write) and returns the section's markdown."""
    import torch

    results = []
    for shape in shapes:
        rows = bench_shape(shape)
        results.append((shape, rows))
        if rows[0][3] > 2e-2:
            raise RuntimeError(f"lowbit attention differs from torch FLASH_ATTENTION by {rows[0][3]:.3g} at {shape}")
    device = torch.cuda.get_device_name()
    body = table(results)
    section = (f"## Attention\n\n"
               f"{datetime.date.today().isoformat()}, `{COMMAND}`, {device}, torch {torch.__version__}. "
               f"float16 Q/K/V [batch, seq_len, heads, dim] (layout 'nnn'), float32 softmax; medians of "
               f"CUDA events around single calls after a warm-up (no L2 flush), all implementations timed in the same run. "
               f"TFLOP/s = 4 * B * H * S^2 * D / time, halved when causal. The last column is the speed "
               f"relative to torch's FLASH_ATTENTION backend (higher is faster).\n\n{body}\n")
    print(body)
    if out_path:
        write_section(section, out_path)
    return section


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="BENCHMARKS.md", help="markdown file whose '## Attention' section is replaced")
    args = parser.parse_args(argv)
    bench_attention(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
