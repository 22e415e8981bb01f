"""`lowbit-opt`: an mlir-opt style driver that runs upstream MLIR passes and lowbit passes.

    lowbit-opt [FILE|-] --pass-pipeline='builtin.module(p1, p2{opt=v}, func.func(p3))' [-o OUT]
               [--split-input-file] [--list-passes]

The top-level `builtin.module(...)` list is split into entries. Consecutive upstream entries run
together through one `mlir.passmanager.PassManager`; an entry naming a lowbit pass (one of
`lowbit.passes.PASSES`) runs through its Python class, and the module is verified after it.
Parse, pass and verifier errors print the MLIR diagnostics on stderr and exit with status 1.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from typing import List, Optional, Sequence, Tuple

SPLIT_MARKER = "// -----"
_SPLIT_LINE = re.compile(r"^[ \t]*// -----[ \t]*$")
_OPEN = {"(": ")", "{": "}", "[": "]"}
_NAME = re.compile(r"^[A-Za-z0-9_.$-]+")


class OptError(Exception):
    """A user-facing error: the message is printed (without a traceback) and the exit status is 1."""


# --------------------------------------------------------------------------------------------
# Pass pipelines
# --------------------------------------------------------------------------------------------
def _split_top_level(text: str, what: str) -> List[str]:
    """Splits `text` on commas outside (), {}, [] and quotes; checks that brackets balance."""
    entries, depth, start, quote = [], [], 0, None
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in _OPEN:
            depth.append(_OPEN[ch])
        elif ch in ")}]":
            if not depth or depth.pop() != ch:
                raise OptError(f"invalid pass pipeline {what}: unbalanced {ch!r} at offset {i}")
        elif ch == "," and not depth:
            entries.append(text[start:i].strip())
            start = i + 1
        i += 1
    if quote or depth:
        raise OptError(f"invalid pass pipeline {what}: unterminated {'string' if quote else repr(depth[-1])}")
    tail = text[start:].strip()
    if tail or entries:
        entries.append(tail)
    if any(not e for e in entries):
        raise OptError(f"invalid pass pipeline {what}: empty entry")
    return entries


def split_pipeline(pipeline: str) -> List[str]:
    """'builtin.module(a, b{x=1}, func.func(c))' -> ['a', 'b{x=1}', 'func.func(c)']."""
    text = pipeline.strip()
    anchor = "builtin.module"
    if not text.startswith(anchor) or not text[len(anchor):].lstrip().startswith("("):
        raise OptError(
            f"invalid pass pipeline '{pipeline}': expected it to be wrapped with the anchor operation type, "
            "e.g. 'builtin.module(...)'"
        )
    body = text[len(anchor):].lstrip()
    # the parenthesis opened after the anchor must close at the very end
    inner_depth = 0
    for i, ch in enumerate(body):
        inner_depth += ch in "({["
        inner_depth -= ch in ")}]"
        if inner_depth == 0 and i != len(body) - 1:
            raise OptError(f"invalid pass pipeline '{pipeline}': unexpected text after 'builtin.module(...)'")
    if inner_depth != 0 or not body.endswith(")"):
        raise OptError(f"invalid pass pipeline '{pipeline}': unbalanced parentheses")
    return _split_top_level(body[1:-1], f"'{pipeline}'")


def entry_name(entry: str) -> str:
    """The pass or op-anchor name of one pipeline entry ('b' for 'b{x=1}', 'func.func' for 'func.func(c)')."""
    m = _NAME.match(entry)
    return m.group(0) if m else entry


def _lowbit_passes() -> dict:
    from lowbit.passes import PASSES

    return PASSES


def _lowbit_pass_list() -> str:
    return ", ".join(sorted(_lowbit_passes()))


def plan_pipeline(pipeline: Optional[str], ctx) -> List[Tuple[str, str]]:
    """The stages to run: ('upstream', 'builtin.module(...)') or ('lowbit', name), in order.

    Every upstream stage is parsed here once, so that a bad pipeline fails before any input is read."""
    from mlir import passmanager

    if pipeline is None:
        return []
    passes = _lowbit_passes()
    stages: List[Tuple[str, str]] = []
    upstream: List[str] = []

    def flush():
        if upstream:
            stages.append(("upstream", "builtin.module(" + ", ".join(upstream) + ")"))
            upstream.clear()

    for entry in split_pipeline(pipeline):
        name = entry_name(entry)
        if name in passes:
            if entry != name:
                raise OptError(f"lowbit pass '{name}' takes no options or nested pipeline, got '{entry}'")
            flush()
            stages.append(("lowbit", name))
        else:
            upstream.append(entry)
    flush()

    for kind, text in stages:
        if kind != "upstream":
            continue
        try:
            with ctx:
                passmanager.PassManager.parse(text)
        except Exception as err:  # ValueError with the pipeline parser's message
            message = str(err).strip()
            raise OptError(
                f"invalid pass pipeline '{text}':\n{message}\n"
                f"(lowbit passes, usable as top-level entries: {_lowbit_pass_list()}; "
                "see lowbit-opt --list-passes)"
            ) from None
    return stages


# --------------------------------------------------------------------------------------------
# Diagnostics
# --------------------------------------------------------------------------------------------
_FILE_LOC = re.compile(r'^loc\("(?P<file>[^"]*)":(?P<line>\d+):(?P<col>\d+)(?:\s+to\s+[^)]*)?\)$')


def _format_location(loc, filename: str) -> str:
    text = str(loc)
    m = _FILE_LOC.match(text)
    if m:
        file = filename if m.group("file") in ("-", "") else m.group("file")
        return f"{file}:{m.group('line')}:{m.group('col')}"
    return text[4:-1] if text.startswith("loc(") and text.endswith(")") else text


def _severity(diag) -> str:
    name = str(diag.severity).rsplit(".", 1)[-1].lower()
    return {"error": "error", "warning": "warning", "note": "note", "remark": "remark"}.get(name, name)


def format_mlir_error(err, filename: str) -> str:
    """mlir-opt style lines 'file:line:col: error: message' (+ notes) for an ir.MLIRError."""
    diags = getattr(err, "error_diagnostics", None) or []
    lines = []

    def emit(diag, severity=None):
        lines.append(f"{_format_location(diag.location, filename)}: {severity or _severity(diag)}: {diag.message}")
        for note in diag.notes:
            emit(note, "note")

    for diag in diags:
        emit(diag)
    if not lines:
        return str(err).strip()
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------
def split_input(text: str) -> List[Tuple[int, str]]:
    """(first line index, chunk) for each chunk between lines that are exactly '// -----'."""
    chunks, current, start = [], [], 0
    for i, line in enumerate(text.splitlines(keepends=True)):
        if _SPLIT_LINE.match(line.rstrip("\r\n")):
            chunks.append((start, "".join(current)))
            current, start = [], i + 1
        else:
            current.append(line)
    chunks.append((start, "".join(current)))
    return chunks


def process_chunk(source: str, first_line: int, filename: str, stages, ctx, generic: bool) -> str:
    """Parses one chunk, runs the stages, returns the printed module; raises OptError with diagnostics."""
    from mlir import ir, passmanager

    # Leading newlines keep diagnostics' line numbers those of the whole input file.
    padded = "\n" * first_line + source
    with ctx, ir.Location.unknown():
        try:
            module = ir.Module.parse(padded)
        except ir.MLIRError as err:
            raise OptError(format_mlir_error(err, filename)) from None

        for kind, what in stages:
            if kind == "upstream":
                try:
                    passmanager.PassManager.parse(what).run(module.operation)
                except ir.MLIRError as err:
                    raise OptError(f"{format_mlir_error(err, filename)}\n{filename}: error: failed to run '{what}'") from None
                except Exception as err:
                    raise OptError(f"{filename}: error: failed to run '{what}': {err}") from None
            else:
                try:
                    _lowbit_passes()[what]().run(module)
                except ir.MLIRError as err:  # its locations are in the IR text the pass generated
                    raise OptError(f"{format_mlir_error(err, f'<IR generated by {what}>')}\n"
                                   f"{filename}: error: lowbit pass '{what}' failed") from None
                except Exception as err:
                    raise OptError(f"{filename}: error: lowbit pass '{what}' failed: {type(err).__name__}: {err}") from None
                try:
                    module.operation.verify()
                except ir.MLIRError as err:
                    raise OptError(
                        f"{format_mlir_error(err, filename)}\n{filename}: error: the IR after lowbit pass '{what}' does not verify"
                    ) from None
        if generic:
            return module.operation.get_asm(print_generic_op_form=True)
        return str(module)


def list_passes(out) -> None:
    passes = _lowbit_passes()
    width = max(map(len, passes)) if passes else 0
    out.write("lowbit passes (top-level entries of --pass-pipeline='builtin.module(...)'):\n")
    for name in sorted(passes):
        out.write(f"  {name.ljust(width)}  {getattr(passes[name], 'description', '')}\n")
    out.write("Every other entry is handed to MLIR's pass manager: any upstream pass or nested pipeline\n"
              "(e.g. canonicalize, cse, func.func(convert-scf-to-cf), gpu.module(convert-gpu-to-nvvm)).\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lowbit-opt",
        description="Runs upstream MLIR passes and lowbit passes on MLIR with the lowbit dialect loaded.",
    )
    p.add_argument("input", nargs="?", default="-", help="input file ('-' or nothing: stdin)")
    p.add_argument("--pass-pipeline", "-p", dest="pipeline", metavar="PIPELINE",
                   help="textual pipeline, e.g. 'builtin.module(lowbit-lower-matmul-to-loops, canonicalize)'")
    p.add_argument("-o", dest="output", default="-", metavar="OUT", help="output file (default: stdout)")
    p.add_argument("--split-input-file", action="store_true",
                   help=f"process each chunk between '{SPLIT_MARKER}' lines separately")
    p.add_argument("--list-passes", action="store_true", help="list the lowbit passes and exit")
    p.add_argument("--mlir-print-op-generic", action="store_true", help="print every op in generic form")
    p.add_argument("--allow-unregistered-dialect", action="store_true", help="allow ops of unknown dialects")
    return p


def _run(args) -> int:
    if args.list_passes:
        list_passes(sys.stdout)
        return 0

    from lowbit.dialects import make_context

    ctx = make_context()
    ctx.allow_unregistered_dialects = args.allow_unregistered_dialect
    stages = plan_pipeline(args.pipeline, ctx)

    if args.input == "-":
        filename, text = "<stdin>", sys.stdin.read()
    else:
        filename = args.input
        try:
            with open(args.input, encoding="utf-8") as f:
                text = f.read()
        except OSError as err:
            raise OptError(f"lowbit-opt: error: could not open input file '{args.input}': {err.strerror}") from None

    chunks = split_input(text) if args.split_input_file else [(0, text)]
    outputs, failed = [], False
    for first_line, source in chunks:
        try:
            outputs.append(process_chunk(source, first_line, filename, stages, ctx, args.mlir_print_op_generic))
        except OptError as err:
            failed = True
            sys.stderr.write(str(err).rstrip("\n") + "\n")
            sys.stderr.flush()

    result = ("\n" + SPLIT_MARKER + "\n").join(o.rstrip("\n") + "\n" for o in outputs)
    if args.output == "-":
        sys.stdout.write(result)
        sys.stdout.flush()
    else:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(result)
        except OSError as err:
            raise OptError(f"lowbit-opt: error: could not write '{args.output}': {err.strerror}") from None
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except OptError as err:
        message = str(err)
        if not message.startswith("lowbit-opt:"):
            message = "lowbit-opt: error: " + message
        sys.stderr.write(message.rstrip("\n") + "\n")
        return 1
    except BrokenPipeError:
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # a bug or a broken install: one line, the traceback only on request
        if os.environ.get("LOWBIT_DEBUG"):
            traceback.print_exc()
        where = ""
        tb = traceback.extract_tb(err.__traceback__)
        if isinstance(err, SyntaxError) and err.filename:
            where = f" ({err.filename}:{err.lineno})"
        elif tb:
            where = f" (at {tb[-1].filename}:{tb[-1].lineno})"
        sys.stderr.write(f"lowbit-opt: internal error: {type(err).__name__}: {err}{where}\n"
                         "(set LOWBIT_DEBUG=1 for the Python traceback)\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
