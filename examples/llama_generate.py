#!/usr/bin/env python
"""A small Llama-style model end to end: fp16 against lowbit W_UINT4 A_FP16 (group 128) on the GPU.

Builds a Llama-style ``LlamaForCausalLM`` from a config with random weights (nothing is downloaded), in
float16 on CUDA; clones it and swaps every ``torch.nn.Linear`` of the clone (lm_head included) for a
``lowbit.Linear`` with :func:`lowbit.replace_linear`; checks the quantized model's logits against the
*dequantized* fp16 model (the same float16 model whose Linear weights are the quantized layers' dequantized
weights: both compute the same function, so only rounding may differ); then generates tokens greedily with
the fp16 model and the quantized one and prints tokens/s (CUDA-synchronized, after a warm-up run that also
builds every kernel). ``generate`` runs every kernel from Python, so on a GPU it measures the host as
much as the kernels; the example then also decodes with a static KV cache, one decode step captured in a
CUDA graph and replayed once per token (:class:`GraphDecode`), which is how serving stacks run decode and
where the kernels' speed shows. The result table is written to BENCHMARKS.md ("## Llama-style model end
to end", replaced on every run) unless ``--no-write``.

    python examples/llama_generate.py                      # hidden 1024, 4 layers, vocab 32000, 128 tokens
    python examples/llama_generate.py --new-tokens 256 --layers 8

Needs ``transformers`` (not a dependency of lowbit) and a CUDA GPU. ``--device cpu`` runs the same steps on
the CPU backend to check the plumbing (slow: use a tiny model, e.g. ``--hidden 128 --layers 2 --vocab 512
--intermediate 256 --heads 4 --kv-heads 2 --new-tokens 4``); it never writes BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import platform
import re
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

import lowbit

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Llama-style model end to end"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--intermediate", type=int, default=2816)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="timed generations per model (the median is reported)")
    p.add_argument("--W-dtype", default="uint4")
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--accum-dtype", default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-rel-err", type=float, default=1e-2,
                   help="fail when ||logits - dequantized fp16 logits|| / ||dequantized fp16 logits|| exceeds this")
    p.add_argument("--device", default="cuda", help="'cuda' (default) or 'cpu' to check the plumbing only")
    p.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    p.add_argument("--benchmarks", default=str(ROOT / "BENCHMARKS.md"), help="the file the table goes to")
    return p.parse_args(argv)


def fail(msg: str) -> None:
    print(f"llama_generate: error: {msg}", file=sys.stderr)
    raise SystemExit(1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def linear_weight_bytes(model) -> int:
    """Bytes of the weights of every Linear layer (torch or lowbit: qweight, scales, zeros, bias)."""
    total = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            total += sum(p.numel() * p.element_size() for p in m.parameters(recurse=False))
        elif isinstance(m, lowbit.Linear):
            total += sum(b.numel() * b.element_size() for b in m.buffers(recurse=False))
    return total


def dequantized_model(model, qmodel):
    """A copy of the fp16 `model` whose Linear weights are those `qmodel`'s lowbit.Linear layers multiply by."""
    deq = copy.deepcopy(model)
    for name, m in qmodel.named_modules():
        if isinstance(m, lowbit.Linear):
            lin = deq.get_submodule(name)
            with torch.no_grad():
                lin.weight.copy_(m.dequantize(torch.float16).to(lin.weight.device))
                if m.bias is not None:
                    lin.bias.copy_(m.bias.to(lin.bias.dtype))
    return deq


@torch.no_grad()
def logits_of(model, ids):
    return model(input_ids=ids).logits.float()


def agreeing_prefix(a, b) -> int:
    """How many leading token positions two [batch, tokens] tensors agree on in every row."""
    return int((a == b).all(0).long().cumprod(0).sum())


def compare(a, b) -> dict:
    diff = a - b
    return {"max_abs": float(diff.abs().max()), "rel": float(diff.norm() / b.norm()),
            "top1": float((a.argmax(-1) == b.argmax(-1)).float().mean())}


@torch.no_grad()
def generate(model, ids, new_tokens: int):
    return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)


def time_generate(model, ids, new_tokens: int, repeats: int, device):
    out = generate(model, ids, new_tokens)  # warm-up: builds every kernel, fills caches
    sync(device)
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = generate(model, ids, new_tokens)
        sync(device)
        times.append(time.perf_counter() - t0)
    generated = out.shape[1] - ids.shape[1]
    if generated != new_tokens:
        fail(f"generate produced {generated} tokens, expected {new_tokens}")
    return out, statistics.median(times), times


class GraphDecode:
    """Greedy decoding with transformers' StaticCache, each step a fixed sequence of kernels on fixed
    buffers: the last token in, the attention mask and position advanced in place, the next token
    (argmax) out into `out`. On CUDA one step is captured in a CUDA graph and replayed once per token,
    so no Python runs between the kernels of a step; `eager` runs the same step without the graph."""

    def __init__(self, model, ids, new_tokens: int):
        from transformers import StaticCache

        self.model, self.ids, self.new_tokens = model, ids, new_tokens
        batch, prompt = ids.shape
        self.cache = StaticCache(config=model.config, max_cache_len=prompt + new_tokens)
        self.mask = torch.zeros(batch, prompt + new_tokens, dtype=torch.long, device=ids.device)
        self.tok = torch.zeros(batch, 1, dtype=torch.long, device=ids.device)
        self.pos = torch.zeros(1, dtype=torch.long, device=ids.device)  # where the next token's k/v go
        self.out = torch.zeros(batch, new_tokens, dtype=torch.long, device=ids.device)
        self.graph = None

    @torch.no_grad()
    def prefill(self) -> None:
        """Empties the cache and runs the prompt: out[:, 0] is the first new token."""
        prompt = self.ids.shape[1]
        self.cache.reset()
        self.mask.zero_()
        self.mask[:, :prompt] = 1
        logits = self.model(input_ids=self.ids, attention_mask=self.mask, past_key_values=self.cache,
                            use_cache=True).logits
        self.tok.copy_(logits[:, -1:].argmax(-1))
        self.out[:, :1].copy_(self.tok)
        self.pos.fill_(prompt)

    @torch.no_grad()
    def step(self) -> None:
        self.mask.index_fill_(1, self.pos, 1)
        logits = self.model(input_ids=self.tok, attention_mask=self.mask, past_key_values=self.cache,
                            use_cache=True).logits
        self.tok.copy_(logits[:, -1:].argmax(-1))
        self.out.index_copy_(1, self.pos - (self.ids.shape[1] - 1), self.tok)
        self.pos.add_(1)

    def capture(self) -> None:
        """Captures one step (after warm-up steps on a side stream, which build every kernel)."""
        self.prefill()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.step()

    def decode(self, eager: bool = False) -> tuple:
        """(the new tokens, seconds per token of the decode steps, prefill excluded)."""
        self.prefill()
        sync(self.ids.device)
        t0 = time.perf_counter()
        for _ in range(self.new_tokens - 1):
            if eager or self.graph is None:
                self.step()
            else:
                self.graph.replay()
        sync(self.ids.device)
        return self.out.clone(), (time.perf_counter() - t0) / (self.new_tokens - 1)


def time_graph_decode(model, ids, new_tokens: int, repeats: int):
    """Graph decoding of `model`: (tokens, median seconds per token, each run's). The graph's tokens
    must equal those of the same steps run eagerly (else the capture missed an update)."""
    dec = GraphDecode(model, ids, new_tokens)
    eager_tokens, _ = dec.decode(eager=True)
    dec.capture()
    runs = [dec.decode() for _ in range(repeats + 1)][1:]  # the first replays warm up
    tokens = runs[-1][0]
    if not torch.equal(tokens, eager_tokens):
        fail(f"graph decoding produced other tokens than the same steps run eagerly (equal for "
             f"{agreeing_prefix(tokens, eager_tokens)} of "
             f"{new_tokens}): the captured step does not replay its updates")
    times = [t for _, t in runs]
    return tokens, statistics.median(times), times


def write_section(path: Path, text: str) -> None:
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    text = text.rstrip("\n") + "\n\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(old):
        new = pattern.sub(lambda _: text, old)
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new.rstrip("\n") + "\n")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.new_tokens < 2:
        fail(f"--new-tokens must be at least 2 (the decode steps after the first token are timed), got {args.new_tokens}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        fail("CUDA is not available: this example measures the GPU kernels and needs an NVIDIA GPU "
             "(torch.cuda.is_available() is False). Use --device cpu with a tiny model to check the plumbing only.")
    try:
        import transformers
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError:
        fail("this example needs the `transformers` package (pip install transformers); lowbit itself does not")

    torch.manual_seed(args.seed)
    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads,
                         num_key_value_heads=args.kv_heads, max_position_embeddings=4096,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = LlamaForCausalLM(config).to(device=device, dtype=torch.float16).eval()
    model.generation_config.eos_token_id = None  # a random model: generate exactly --new-tokens tokens

    t0 = time.perf_counter()
    qmodel, skipped = lowbit.replace_linear(copy.deepcopy(model), W_dtype=args.W_dtype, group_size=args.group_size,
                                            accum_dtype=args.accum_dtype, return_skipped=True)
    quantize_s = time.perf_counter() - t0
    n_q = sum(isinstance(m, lowbit.Linear) for m in qmodel.modules())
    if n_q == 0:
        fail(f"replace_linear quantized no layer (skipped: {skipped})")
    deq = dequantized_model(model, qmodel)
    print(f"model: Llama-style, hidden {args.hidden}, intermediate {args.intermediate}, {args.layers} layers, "
          f"{args.heads} heads ({args.kv_heads} kv), vocab {args.vocab}; {n_q} Linear layers quantized to "
          f"{args.W_dtype} group {args.group_size} in {quantize_s:.1f} s" + (f"; skipped {skipped}" if skipped else ""))

    g = torch.Generator().manual_seed(args.seed + 1)
    ids = torch.randint(3, args.vocab, (args.batch, args.prompt_len), generator=g).to(device)
    lq, ld, lf = logits_of(qmodel, ids), logits_of(deq, ids), logits_of(model, ids)
    vs_deq, vs_fp16 = compare(lq, ld), compare(lq, lf)
    print(f"logits vs dequantized fp16 model: max |diff| {vs_deq['max_abs']:.3g}, relative {vs_deq['rel']:.3g}, "
          f"top-1 agreement {vs_deq['top1']:.1%}")
    print(f"logits vs original fp16 model (quantization error): max |diff| {vs_fp16['max_abs']:.3g}, "
          f"relative {vs_fp16['rel']:.3g}, top-1 agreement {vs_fp16['top1']:.1%}")
    if not vs_deq["rel"] <= args.max_rel_err:
        fail(f"the quantized model's logits differ from the dequantized fp16 model's by {vs_deq['rel']:.3g} "
             f"(relative), more than --max-rel-err {args.max_rel_err}")

    out_f, t_f, times_f = time_generate(model, ids, args.new_tokens, args.repeats, device)
    out_q, t_q, times_q = time_generate(qmodel, ids, args.new_tokens, args.repeats, device)
    out_d = generate(deq, ids, args.new_tokens)
    new = slice(args.prompt_len, None)
    same_prefix = agreeing_prefix(out_q[:, new], out_d[:, new])
    tok = args.batch * args.new_tokens
    rows = [("fp16 (torch.nn.Linear)", linear_weight_bytes(model), t_f, times_f),
            (f"lowbit {args.W_dtype} A_fp16 g{args.group_size}, accum {args.accum_dtype}",
             linear_weight_bytes(qmodel), t_q, times_q)]
    print(f"greedy tokens identical to the dequantized fp16 model's for the first {same_prefix}/{args.new_tokens}")
    print(f"\n{'model':48} {'Linear weights':>15} {'tokens/s':>10} {'ms/token':>9}")
    for name, nbytes, t, _ in rows:
        print(f"{name:48} {nbytes / 2**20:>11.1f} MiB {tok / t:>10.1f} {1e3 * t / args.new_tokens:>9.2f}")
    print(f"speed-up: {t_f / t_q:.2f}x")

    if device.type != "cuda":
        dec_q, _ = GraphDecode(qmodel, ids, args.new_tokens).decode(eager=True)  # the plumbing only
        if not torch.equal(dec_q, out_q[:, new]):
            print("note: static-cache decoding and generate differ in rounding here; tokens equal for the first "
                  f"{agreeing_prefix(dec_q, out_q[:, new])}/{args.new_tokens}")
        return
    _, g_f, g_times_f = time_graph_decode(model, ids, args.new_tokens, args.repeats)
    g_tok_q, g_q, g_times_q = time_graph_decode(qmodel, ids, args.new_tokens, args.repeats)
    g_same = agreeing_prefix(g_tok_q, out_q[:, new])
    # (name, s/token, each run's, the Linear weights' bytes at 3.0 TB/s)
    graph_rows = [(name, t, times, nbytes / 3.0e12)
                  for (name, nbytes, _, _), t, times in zip(rows, (g_f, g_q), (g_times_f, g_times_q))]
    print(f"\ndecode steps in a CUDA graph (static KV cache):\n{'model':48} {'ms/token':>9} {'tokens/s':>10}")
    for name, t, _, _ in graph_rows:
        print(f"{name:48} {1e3 * t:>9.3f} {args.batch / t:>10.1f}")
    print(f"speed-up: {g_f / g_q:.2f}x; the quantized model's graph tokens equal its generate tokens for the "
          f"first {g_same}/{args.new_tokens}")
    if args.no_write:
        return
    gpu = torch.cuda.get_device_name(device)
    cmd = "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0]))] + sys.argv[1:])
    lines = [
        SECTION, "",
        f"{datetime.date.today().isoformat()}, {gpu}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"Python {platform.python_version()}. Command: `{cmd}`", "",
        f"A Llama-style `LlamaForCausalLM` with random weights (hidden {args.hidden}, intermediate {args.intermediate}, "
        f"{args.layers} layers, {args.heads} heads / {args.kv_heads} kv heads, vocab {args.vocab}) in float16; the "
        f"quantized copy has all {n_q} Linear layers (lm_head included) replaced by `lowbit.replace_linear` "
        f"(W {args.W_dtype}, A float16, group {args.group_size}, scale and 'original' zeros, accum {args.accum_dtype}). "
        f"Greedy `generate`, batch {args.batch}, prompt {args.prompt_len} tokens, {args.new_tokens} new tokens; "
        f"tokens/s = new tokens / wall time of the whole `generate` (prefill included), CUDA-synchronized, after a "
        f"warm-up run; median of {args.repeats} runs.", "",
        "| model | Linear weights (MiB) | tokens/s | ms/token | runs (s) |",
        "|---|---:|---:|---:|---|",
    ]
    for name, nbytes, t, times in rows:
        lines.append(f"| {name} | {nbytes / 2**20:.1f} | {tok / t:.1f} | {1e3 * t / args.new_tokens:.2f} | "
                     f"{', '.join(f'{x:.3f}' for x in times)} |")
    lines += ["", f"Speed-up {t_f / t_q:.2f}x. Logits of the quantized model against the dequantized fp16 model: "
              f"relative error {vs_deq['rel']:.2e}, max |diff| {vs_deq['max_abs']:.3g}, top-1 agreement "
              f"{vs_deq['top1']:.1%}; against the original fp16 model (quantization error): relative "
              f"{vs_fp16['rel']:.2e}, top-1 agreement {vs_fp16['top1']:.1%}. Greedy tokens equal the dequantized "
              f"model's for the first {same_prefix} of {args.new_tokens}.", "",
              f"Decode steps in a CUDA graph: transformers' `StaticCache`, one greedy decode step (forward, argmax, "
              f"mask and position updated in place) captured once and replayed per token; time per token of the "
              f"{args.new_tokens - 1} steps after the prefill, CUDA-synchronized, median of {args.repeats} runs after "
              f"a warm-up run. The replayed tokens equal those of the same steps run eagerly (checked). The last "
              f"column is the Linear weights' bytes at 3.0 TB/s, the time a step needs to read them once.", "",
              "| model | ms/token | tokens/s | runs (ms/token) | weights at 3.0 TB/s (ms) |",
              "|---|---:|---:|---|---:|"]
    for name, t, times, ideal_s in graph_rows:
        lines.append(f"| {name} | {1e3 * t:.3f} | {args.batch / t:.1f} | {', '.join(f'{1e3 * x:.3f}' for x in times)} | "
                     f"{1e3 * ideal_s:.3f} |")
    lines += ["", f"Speed-up in the graph {g_f / g_q:.2f}x. The quantized model's graph tokens equal its `generate` "
              f"tokens for the first {g_same} of {args.new_tokens} (static and dynamic caches may round differently).", ""]
    write_section(Path(args.benchmarks), "\n".join(lines))
    print(f"wrote the table to {args.benchmarks}")


if __name__ == "__main__":
    main()
