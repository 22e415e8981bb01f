"""lowbit-lower-attention-to-loops: `lowbit.attention` -> scf loops for the CPU backend.

Per (batch, head, query row): scores in f32, a max-subtracted softmax, then the weighted sum of V.
"""
from __future__ import annotations

import math

from lowbit.dialects.lowbit import ATTENTION_OP

from .base import ModulePass, RewritePattern, replace_with_func
from .emitters.ir import Emitter
from .verify import verified_attention

ATTENTION_FIELDS = ("batch", "heads", "seq_len", "dim", "layout", "is_causal", "kv_heads")  # what the lowering reads


class AttentionToLoops(RewritePattern):
    """Replaces a lowbit.attention by a call of a generated loop nest."""

    op_name = ATTENTION_OP

    def rewrite(self, op, module):
        config, types = verified_attention(op)
        replace_with_func(op, module, "lowbit_attention_loops_", emit_attention_loops(config.as_dict(), types), types)


def _f32(e: Emitter, buf: str, ty: str, idx: str) -> str:
    return e.op(f"arith.extf {e.op(f'memref.load {buf}[{idx}] : {ty}')} : f16 to f32")


def emit_attention_loops(cfg: dict, types: dict) -> str:
    e = Emitter(indent=2)
    S, D = cfg["seq_len"], cfg["dim"]
    group = cfg["heads"] // cfg["kv_heads"]
    c0, c1 = e.const(0, "index"), e.const(1, "index")
    scores_ty = f"memref<{S}xf32>"
    scores = e.op(f"memref.alloca() : {scores_ty}", "scores")
    zero, neg_inf = e.const(0.0, "f32"), e.const("0xFF800000", "f32")
    with e.for_loop(c0, e.const(cfg["batch"], "index"), c1, hint="b") as bl:
        with e.for_loop(c0, e.const(cfg["heads"], "index"), c1, hint="h") as hl:
            b, h = bl.iv, hl.iv
            hk = e.op(f"arith.divui {h}, {e.const(group, 'index')} : index", "hk")
            with e.for_loop(c0, e.const(S, "index"), c1, hint="q") as ql:
                i = ql.iv
                keys = e.op(f"arith.addi {i}, {c1} : index") if cfg["is_causal"] else e.const(S, "index")
                with e.for_loop(c0, keys, c1, [(neg_inf, "f32")], hint="j") as jl:
                    j = jl.iv
                    with e.for_loop(c0, e.const(D, "index"), c1, [(zero, "f32")], hint="d") as dl:
                        d = dl.iv
                        q = _f32(e, "%q", types["q"], f"{b}, {i}, {h}, {d}")
                        k_idx = f"{b}, {j}, {hk}, {d}" if cfg["layout"] == "nnn" else f"{b}, {d}, {hk}, {j}"
                        k = _f32(e, "%k", types["k"], k_idx)
                        e.line(f"scf.yield {e.op(f'math.fma {q}, {k}, {dl.args[0]} : f32')} : f32")
                    s = e.op(f"arith.mulf {dl.results[0]}, {e.const(1.0 / math.sqrt(D), 'f32')} : f32", "s")
                    e.line(f"memref.store {s}, {scores}[{j}] : {scores_ty}")
                    e.line(f"scf.yield {e.op(f'arith.maximumf {jl.args[0]}, {s} : f32')} : f32")
                row_max = jl.results[0]
                with e.for_loop(c0, keys, c1, [(zero, "f32")], hint="j") as el:
                    s = e.op(f"memref.load {scores}[{el.iv}] : {scores_ty}")
                    p = e.op(f"math.exp {e.op(f'arith.subf {s}, {row_max} : f32')} : f32", "p")
                    e.line(f"memref.store {p}, {scores}[{el.iv}] : {scores_ty}")
                    e.line(f"scf.yield {e.op(f'arith.addf {el.args[0]}, {p} : f32')} : f32")
                total = el.results[0]
                with e.for_loop(c0, e.const(D, "index"), c1, hint="d") as dl:
                    with e.for_loop(c0, keys, c1, [(zero, "f32")], hint="j") as vl:
                        p = e.op(f"memref.load {scores}[{vl.iv}] : {scores_ty}")
                        v = _f32(e, "%v", types["v"], f"{b}, {vl.iv}, {hk}, {dl.iv}")
                        e.line(f"scf.yield {e.op(f'math.fma {p}, {v}, {vl.args[0]} : f32')} : f32")
                    o = e.op(f"arith.divf {vl.results[0]}, {total} : f32")
                    o16 = e.op(f"arith.truncf {o} : f32 to f16")
                    e.line(f"memref.store {o16}, %out[{b}, {i}, {h}, {dl.iv}] : {types['out']}")
    return e.text()


class LowerAttentionToLoops(ModulePass):
    name = "lowbit-lower-attention-to-loops"
    description = "Lower lowbit.attention to scf loops computing a softmax attention in f32 (CPU)."
    patterns = (AttentionToLoops,)
