"""The command-line tools: `lowbit compile`, `lowbit demo` and `lowbit-opt`.

The exit-status / stderr contract is checked through real subprocesses. Every subprocess pays for
importing torch and MLIR, so they are all started at once (when the first test needs one) and run
concurrently; each test then waits for its own. Stage-by-stage output is checked in-process.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lowbit import cli, opt

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

MATMUL_IR = """\
func.func @lowbit_matmul(%arg0: memref<1x256xf16>, %arg1: memref<64x128xi8>, %arg2: memref<64x2xf16>, %arg3: memref<64x2xf16>, %arg4: memref<1x64xf16>) attributes {llvm.emit_c_interface} {
  "lowbit.matmul"(%arg0, %arg1, %arg2, %arg3, %arg4) {A_dtype = "float16", K = 256 : i64, M = 1 : i64, N = 64 : i64, W_dtype = "uint4", accum_dtype = "float16", group_size = 128 : i64, layout = "nt", operandSegmentSizes = array<i32: 1, 1, 1, 1, 0, 1>, out_dtype = "float16", with_bias = false, with_scaling = true, with_zeros = true, zeros_mode = "original"} : (memref<1x256xf16>, memref<64x128xi8>, memref<64x2xf16>, memref<64x2xf16>, memref<1x64xf16>) -> ()
  return
}
"""
BAD_IR = MATMUL_IR.replace('W_dtype = "uint4"', 'W_dtype = "int3"')


def _tool(name: str, module: str) -> list:
    exe = BIN / name
    return [str(exe)] if exe.exists() else [sys.executable, "-m", module]


LOWBIT = _tool("lowbit", "lowbit.cli")
LOWBIT_OPT = _tool("lowbit-opt", "lowbit.opt")
MATMUL_FLAGS = ["--M", "1", "--N", "64", "--K", "256", "--W_dtype", "uint4", "--group_size", "128",
                "--with_scaling", "true", "--with_zeros", "true", "--zeros_mode", "original"]

# name -> (argv, stdin)
COMMANDS = {
    "compile_bad_field": (LOWBIT + ["compile", "matmul", "--N", "64", "--K", "256", "--W_dtype", "int3"], None),
    "opt_roundtrip": (LOWBIT_OPT + ["-", "--pass-pipeline=builtin.module()"], MATMUL_IR),
    "opt_unknown_pass": (LOWBIT_OPT + ["-", "--pass-pipeline=builtin.module(no-such-pass)"], MATMUL_IR),
    "opt_verifier_error": (LOWBIT_OPT + ["-"], BAD_IR),
    "demo": (LOWBIT + ["demo", "--N", "256", "--K", "256", "--device", "cpu", "--repeat", "3"], None),
}


class _Runs:
    """Starts every command once, concurrently; `result(name)` waits for one."""

    def __init__(self):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # the demo test is the CPU path
        self.procs = {}
        for name, (argv, stdin) in COMMANDS.items():
            p = subprocess.Popen(argv, cwd=ROOT, env=env, text=True, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self.procs[name] = (p, stdin)
        self.done = {}

    def result(self, name: str) -> subprocess.CompletedProcess:
        if name not in self.done:
            p, stdin = self.procs[name]
            out, err = p.communicate(stdin, timeout=300)
            self.done[name] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
        return self.done[name]

    def close(self):
        for p, _ in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.communicate()


@pytest.fixture(scope="module")
def runs():
    r = _Runs()
    yield r
    r.close()


def _no_traceback(res):
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr


# -- lowbit compile ---------------------------------------------------------------------------
def test_compile_bad_field_exits_2_naming_the_field(runs):
    res = runs.result("compile_bad_field")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "W_dtype" in res.stderr and "int3" in res.stderr, res.stderr
    assert res.stdout == ""
    _no_traceback(res)


@pytest.mark.parametrize("stage, present, absent", [
    ("lowbit", '"lowbit.matmul"', "scf.for"),
    ("loops", "scf.for", "lowbit.matmul"),
    ("llvm", "llvm.func @_mlir_ciface_lowbit_matmul(", "scf.for"),
])
def test_compile_cpu_stages(capsys, stage, present, absent, tmp_path):
    assert cli.main(["compile", "matmul", *MATMUL_FLAGS, "--target", "cpu", "--emit", stage]) == 0
    out = capsys.readouterr().out
    assert present in out and absent not in out
    dest = tmp_path / f"{stage}.mlir"
    assert cli.main(["compile", "matmul", *MATMUL_FLAGS, "--emit", stage, "-o", str(dest)]) == 0
    assert capsys.readouterr().out == "" and dest.read_text() == out


def test_compile_field_values_follow_the_field_types(capsys):
    # a list for M, a bool as 1, -1 for group_size, an attention config too
    assert cli.main(["compile", "matmul", "--M", "1,16,32", "--N", "64", "--K", "128", "--group_size", "-1",
                     "--with_bias", "1", "--emit", "lowbit"]) == 0
    out = capsys.readouterr().out
    assert "M = [1, 16, 32]" in out and "with_bias = true" in out and "memref<?x128xf16>" in out
    assert cli.main(["compile", "attention", "--batch", "1", "--heads", "2", "--seq_len", "16", "--dim", "16",
                     "--is_causal", "true", "--emit", "loops"]) == 0
    out = capsys.readouterr().out
    assert "math.exp" in out and "lowbit.attention" not in out


@pytest.mark.parametrize("argv, words", [
    (["--N", "64", "--K", "128", "--with_scaling", "maybe"], ["with_scaling", "maybe"]),
    (["--N", "64", "--K", "abc"], ["K", "abc"]),
    (["--N", "64", "--K", "128", "--W_dtype", "int4", "--with_scaling", "true", "--group_size", "48"], ["group_size=48"]),
    (["--K", "128"], ["--N"]),
    (["--N", "64", "--K", "128", "--emit", "ptx", "--target", "cpu"], ["GPU target"]),
])
def test_compile_bad_values_exit_2(capsys, argv, words):
    assert cli.main(["compile", "matmul", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lowbit compile: error:") and all(w in err for w in words), err


# -- lowbit-opt -------------------------------------------------------------------------------
def test_opt_roundtrip(runs):
    res = runs.result("opt_roundtrip")
    assert res.returncode == 0, res.stderr
    assert '"lowbit.matmul"(%arg0, %arg1, %arg2, %arg3, %arg4)' in res.stdout
    assert 'W_dtype = "uint4"' in res.stdout and "operandSegmentSizes = array<i32: 1, 1, 1, 1, 0, 1>" in res.stdout


def test_opt_unknown_pass_exits_1_listing_lowbit_passes(runs):
    res = runs.result("opt_unknown_pass")
    assert res.returncode == 1
    assert "no-such-pass" in res.stderr
    assert "lowbit-lower-matmul-to-loops" in res.stderr and "lowbit-lower-attention-to-loops" in res.stderr
    assert res.stdout == ""
    _no_traceback(res)


def test_opt_verifier_error_exits_1_with_the_diagnostic(runs):
    res = runs.result("opt_verifier_error")
    assert res.returncode == 1
    assert re.search(r"<stdin>:2:3: error: '\"int3\"' does not satisfy the constraint", res.stderr), res.stderr
    assert res.stdout == ""
    _no_traceback(res)


def test_opt_split_input_file_and_lowbit_pass(tmp_path, capsys):
    src = tmp_path / "in.mlir"
    src.write_text(MATMUL_IR + "\n// -----\n" + BAD_IR + "\n// -----\n" + MATMUL_IR)
    out = tmp_path / "out.mlir"
    assert opt.main([str(src), "--split-input-file", "-o", str(out),
                     "--pass-pipeline=builtin.module(lowbit-lower-matmul-to-loops, canonicalize)"]) == 1
    err = capsys.readouterr().err
    # the bad chunk's error names its line in the whole file; the good chunks are still printed
    bad_line = MATMUL_IR.count("\n") + 1 + 1 + 2
    assert f"in.mlir:{bad_line}:3: error:" in err, err
    text = out.read_text()
    assert text.count("// -----") == 1 and text.count("scf.for") >= 2 and "lowbit.matmul" not in text


def test_opt_pipeline_splitting():
    assert opt.split_pipeline("builtin.module(a, b{x=1 y=[2,3]}, func.func(c, d), gpu-module-to-binary{format=isa})") == [
        "a", "b{x=1 y=[2,3]}", "func.func(c, d)", "gpu-module-to-binary{format=isa}"]
    assert opt.split_pipeline("builtin.module()") == []
    for bad in ("a, b", "builtin.module(a", "builtin.module(a)) x", "builtin.module(a,,b)"):
        with pytest.raises(opt.OptError):
            opt.split_pipeline(bad)


def test_lit_pipeline_matches_compiler_pipeline():
    """test/lit/pipeline/cpu-to-llvm.mlir reproduces the CPU stages of compiler/pipeline.py."""
    from lowbit.compiler.pipeline import CPU_LLVM_PIPELINE, LOOPS_PIPELINE

    text = (ROOT / "test/lit/pipeline/cpu-to-llvm.mlir").read_text()
    pipelines = re.findall(r"--pass-pipeline='(builtin\.module\(.*\))'", text)
    entries = [opt.split_pipeline(p) for p in pipelines]
    lowbit_passes = ["lowbit-lower-matmul-to-loops", "lowbit-lower-attention-to-loops"]
    loops = lowbit_passes + opt.split_pipeline(LOOPS_PIPELINE)
    assert entries == [loops, loops + opt.split_pipeline(CPU_LLVM_PIPELINE)]


# -- lowbit demo ------------------------------------------------------------------------------
def test_demo_on_cpu(runs):
    res = runs.result("demo")
    assert res.returncode == 0, res.stdout + res.stderr
    m = re.search(r"relative error: ([0-9.e+-]+)", res.stdout)
    assert m and float(m.group(1)) < 1e-2, res.stdout
    assert "build time:" in res.stdout and "run time:" in res.stdout and "on cpu" in res.stdout


def test_bench_schedule_sets_parse():
    from lowbit.bench import parse_schedules

    assert parse_schedules("") == []
    assert parse_schedules("split_k=2;warps_k=1, split_k=4") == [{"split_k": 2}, {"warps_k": 1, "split_k": 4}]
    with pytest.raises(SystemExit, match="field=int"):
        parse_schedules("split_k=two")
