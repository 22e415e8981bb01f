"""lowbit-lower-matmul-to-loops: `lowbit.matmul` -> scf loops for the CPU backend.

Each output column n first decodes its weight row into a scratch buffer (decode emitter), then every
row of A takes a dot product with it, so decoding costs N*K whatever m is.
"""
from __future__ import annotations

from lowbit.dialects.lowbit import MATMUL_OP
from lowbit.formats import format_of
from lowbit.layout import TILE_ROWS, layout_of

from .base import ModulePass, RewritePattern, replace_with_func
from .emitters.decode import decode, dequantize, extract_code
from .emitters.ir import Emitter, is_float, mlir_type, saturate_to_i8
from .verify import verified_matmul


def _load(e: Emitter, buf: str, ty: str, idx: str, elem: str) -> str:
    return e.op(f"memref.load {buf}[{idx}] : {ty}", elem)


def _packed_code(e: Emitter, buf: str, buf_ty: str, row: str, col: str, bits: int) -> str:
    """The code of logical element `col` of row `row` in an LSB-first packed i8 buffer."""
    per_byte = e.const(8 // bits, "index")
    byte = _load(e, buf, buf_ty, f"{row}, {e.op(f'arith.divui {col}, {per_byte} : index')}", "byte")
    slot = e.op(f"arith.index_castui {e.op(f'arith.remui {col}, {per_byte} : index')} : index to i8")
    return extract_code(e, byte, slot, bits)


def _convert(e: Emitter, v: str, src: str, dst: str) -> str:
    """Numeric conversion between f16/f32/i8/i32 (int -> int sign-extends)."""
    if src == dst:
        return v
    if is_float(src) and is_float(dst):
        widen = int(dst[1:]) > int(src[1:])
        return e.op(f"arith.{'extf' if widen else 'truncf'} {v} : {src} to {dst}")
    if not is_float(src) and is_float(dst):
        return e.op(f"arith.sitofp {v} : {src} to {dst}")
    return e.op(f"arith.extsi {v} : {src} to {dst}")


class MatmulToLoops(RewritePattern):
    """Replaces a lowbit.matmul by a call of a generated loop nest specialised to its attributes."""

    op_name = MATMUL_OP

    def rewrite(self, op, module):
        config, types = verified_matmul(op)
        replace_with_func(op, module, "lowbit_matmul_loops_", emit_matmul_loops(config.as_dict(), types), types)


def emit_matmul_loops(cfg: dict, types: dict) -> str:
    e = Emitter(indent=2)
    N, K = cfg["N"], cfg["K"]
    G = K if cfg["group_size"] == -1 else cfg["group_size"]
    fmt = format_of(cfg["W_dtype"])
    a_ty, acc_ty, out_ty = mlir_type(cfg["A_dtype"]), mlir_type(cfg["accum_dtype"]), mlir_type(cfg["out_dtype"])
    w_ty = "f16" if a_ty == "f16" else "i32"  # decoded weight type
    c0, c1 = e.const(0, "index"), e.const(1, "index")
    m = e.op(f"memref.dim %a, {c0} : {types['a']}", "m")
    row_ty = f"memref<{K}x{w_ty}>"
    wrow = e.op(f"memref.alloca() : {row_ty}", "wrow")
    with e.for_loop(c0, e.const(N, "index"), c1, hint="n") as col:
        n = col.iv
        with e.for_loop(c0, e.const(K, "index"), c1, hint="k") as kl:
            w = _emit_weight(e, cfg, fmt, types, n, kl.iv, G, w_ty)
            e.line(f"memref.store {w}, {wrow}[{kl.iv}] : {row_ty}")
        with e.for_loop(c0, m, c1, hint="i") as row:
            zero = e.const(0.0 if is_float(acc_ty) else 0, acc_ty)
            with e.for_loop(c0, e.const(K, "index"), c1, [(zero, acc_ty)], hint="k") as dot:
                k, (acc,) = dot.iv, dot.args
                a = _convert(e, _load(e, "%a", types["a"], f"{row.iv}, {k}", "a"), a_ty, acc_ty)
                w = _convert(e, _load(e, wrow, row_ty, k, "w"), w_ty, acc_ty)
                kind = "f" if is_float(acc_ty) else "i"
                prod = e.op(f"arith.mul{kind} {a}, {w} : {acc_ty}")
                e.line(f"scf.yield {e.op(f'arith.add{kind} {acc}, {prod} : {acc_ty}')} : {acc_ty}")
            result = _emit_epilogue(e, cfg, types, dot.results[0], acc_ty, out_ty, n)
            e.line(f"memref.store {result}, %out[{row.iv}, {n}] : {types['out']}")
    return e.text()


def _stored_place(e: Emitter, layout, N: int, K: int, n: str, k: str) -> tuple[str, str]:
    """(row, element) of the stored [N, Kpad] tensor that holds logical W[n, k] (see lowbit.layout):
    the element's place inside its superblock chunk, and the chunk's place in its tile of rows."""
    SB, S = layout.superblock, layout.padded(K) // layout.superblock
    table = e.const(f"dense<[{', '.join(map(str, layout.inverse))}]>", f"vector<{SB}xindex>")
    sb = e.const(SB, "index")
    s = e.op(f"arith.divui {k}, {sb} : index", "s")
    offset = e.op(f"vector.extract {table}[{e.op(f'arith.remui {k}, {sb} : index')}] : index from vector<{SB}xindex>")
    tile_rows = e.const(TILE_ROWS, "index")
    t = e.op(f"arith.divui {n}, {tile_rows} : index")
    i = e.op(f"arith.remui {n}, {tile_rows} : index")
    in_full = e.op(f"arith.cmpi ult, {n}, {e.const(N // TILE_ROWS * TILE_ROWS, 'index')} : index")
    r = e.op(f"arith.select {in_full}, {tile_rows}, {e.const(N % TILE_ROWS or TILE_ROWS, 'index')} : index")
    tile_start = e.op(f"arith.muli {t}, {e.const(TILE_ROWS * S, 'index')} : index")
    in_tile = e.op(f"arith.addi {e.op(f'arith.muli {s}, {r} : index')}, {i} : index")
    chunk = e.op(f"arith.addi {tile_start}, {in_tile} : index")
    s_count = e.const(S, "index")
    row = e.op(f"arith.divui {chunk}, {s_count} : index", "row")
    base = e.op(f"arith.muli {e.op(f'arith.remui {chunk}, {s_count} : index')}, {sb} : index")
    return row, e.op(f"arith.addi {base}, {offset} : index", "pos")


def _emit_weight(e: Emitter, cfg, fmt, types, n: str, k: str, G: int, w_ty: str) -> str:
    """Decoded, scaled and zeroed W[n, k] as `w_ty`."""
    row, pos = _stored_place(e, layout_of(fmt.bits, cfg["A_dtype"]), cfg["N"], cfg["K"], n, k)
    if fmt.packed:
        w = decode(e, _packed_code(e, "%w", types["w"], row, pos, fmt.bits), cfg["W_dtype"], w_ty)
    else:
        raw = _load(e, "%w", types["w"], f"{row}, {pos}", "w")
        w = raw if mlir_type(cfg["W_dtype"]) == w_ty else _convert(e, raw, mlir_type(cfg["W_dtype"]), w_ty)
    if not cfg["with_scaling"]:
        return w
    g = e.op(f"arith.divui {k}, {e.const(G, 'index')} : index", "g")
    scale = _load(e, "%scale", types["scale"], f"{n}, {g}", "scale")
    zero = None
    if cfg["with_zeros"]:
        if cfg["zeros_mode"] == "quantized":
            code = _packed_code(e, "%zeros", types["zeros"], g, n, fmt.bits)
            zero = e.op(f"arith.uitofp {code} : i8 to f16", "zero")
        else:
            zero = _load(e, "%zeros", types["zeros"], f"{n}, {g}", "zero")
    return dequantize(e, w, w_ty, cfg["zeros_mode"], scale, zero)


def _emit_epilogue(e: Emitter, cfg, types, acc: str, acc_ty: str, out_ty: str, n: str) -> str:
    """convert(acc + bias): float outputs add the bias in f32; integer outputs in i32, int8 saturating."""
    if is_float(out_ty):
        v = _convert(e, acc, acc_ty, "f32")
        if cfg["with_bias"]:
            bias = _convert(e, _load(e, "%bias", types["bias"], n, "bias"), out_ty, "f32")
            v = e.op(f"arith.addf {v}, {bias} : f32")
        return _convert(e, v, "f32", out_ty)
    v = acc
    if cfg["with_bias"]:
        v = e.op(f"arith.addi {v}, {_load(e, '%bias', types['bias'], n, 'bias')} : i32")
    return saturate_to_i8(e, v) if out_ty == "i8" else v


class LowerMatmulToLoops(ModulePass):
    name = "lowbit-lower-matmul-to-loops"
    description = "Lower lowbit.matmul to scf loops that decode weights with the shared decode emitter (CPU)."
    patterns = (MatmulToLoops,)
