"""A small SSA text builder: emitters append MLIR lines and get fresh value names back."""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Sequence

FLOAT_TYPES = ("f16", "f32", "f64")


def mlir_type(dtype: str) -> str:
    """The MLIR element type of a lowbit dtype name."""
    return {"float16": "f16", "float32": "f32", "int8": "i8", "int32": "i32"}[dtype]


def is_float(ty: str) -> bool:
    return ty in FLOAT_TYPES


def saturate_to_i8(e: "Emitter", v: str) -> str:
    """An i32 clamped to [-128, 127] and truncated to i8 (int8 outputs saturate)."""
    v = e.op(f"arith.maxsi {v}, {e.const(-128, 'i32')} : i32")
    v = e.op(f"arith.minsi {v}, {e.const(127, 'i32')} : i32")
    return e.op(f"arith.trunci {v} : i32 to i8")


class Emitter:
    """Accumulates MLIR lines; `op` emits `%name = <rhs>` and returns the name.

    Constants are emitted once per (value, type) at the point of first use within the
    current region scope, so emitters may ask for them freely.
    """

    def __init__(self, indent: int = 2):
        self.lines: list[str] = []
        self._count = 0
        self._indent = indent
        self._const_scopes: list[dict] = [{}]

    def fresh(self, hint: str = "v") -> str:
        self._count += 1
        return f"%{hint}{self._count}"

    def line(self, text: str) -> None:
        self.lines.append(" " * self._indent + text)

    def op(self, rhs: str, hint: str = "v") -> str:
        name = self.fresh(hint)
        self.line(f"{name} = {rhs}")
        return name

    def const(self, value, ty: str) -> str:
        key = (repr(value), ty)
        for scope in self._const_scopes:
            if key in scope:
                return scope[key]
        if isinstance(value, str):  # already MLIR literal syntax: hex floats, dense<...>
            text = f"arith.constant {value} : {ty}"
        elif ty == "index" or ty.startswith("i"):
            text = f"arith.constant {int(value)} : {ty}"
        else:
            text = f"arith.constant {float(value)!r} : {ty}"
        name = self.op(text, "c")
        self._const_scopes[-1][key] = name
        return name

    def i32(self, value: int) -> str:
        return self.const(value, "i32")

    def i64(self, value: int) -> str:
        return self.const(value, "i64")

    @contextlib.contextmanager
    def region(self, header: Optional[str], footer: str = "}") -> Iterator[None]:
        """Emits `header {`, the body, then `footer`; constants made inside stay inside. A None header
        continues the previous region's footer (the else branch after a footer `} else {`)."""
        if header is not None:
            self.line(header)
        self._indent += 2
        self._const_scopes.append({})
        try:
            yield
        finally:
            self._const_scopes.pop()
            self._indent -= 2
            self.line(footer)

    def for_loop(self, lo: str, hi: str, step: str, iter_args: Sequence[tuple[str, str]] = (), hint: str = "i",
                 ty: str = "index"):
        """`scf.for` over `ty` as a context manager yielding a `Loop` (iv, args, results); with
        iter_args the body must end with `scf.yield`."""
        return Loop(self, lo, hi, step, list(iter_args), hint, ty)

    def text(self) -> str:
        return "\n".join(self.lines)


class Loop:
    """An `scf.for`: `iv` the induction variable, `args` the carried values, `results` the loop's results."""

    def __init__(self, e: Emitter, lo, hi, step, iter_args, hint, ty):
        self.iv = e.fresh(hint)
        bound_ty = "" if ty == "index" else f" : {ty}"
        self.args = [e.fresh("acc") for _ in iter_args]
        if iter_args:
            base = e.fresh("r")
            count = len(iter_args)
            self.results = [f"{base}#{i}" for i in range(count)] if count > 1 else [base]
            inits = ", ".join(f"{c} = {init}" for c, (init, _) in zip(self.args, iter_args))
            types = ", ".join(ty for _, ty in iter_args)
            lhs = f"{base}:{count}" if count > 1 else base
            header = f"{lhs} = scf.for {self.iv} = {lo} to {hi} step {step} iter_args({inits}) -> ({types}){bound_ty} {{"
        else:
            self.results = []
            header = f"scf.for {self.iv} = {lo} to {hi} step {step}{bound_ty} {{"
        self._region = e.region(header)

    def __enter__(self) -> "Loop":
        self._region.__enter__()
        return self

    def __exit__(self, *exc):
        return self._region.__exit__(*exc)
