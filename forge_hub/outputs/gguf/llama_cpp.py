"""llama.cpp's own tools, where installed: its quantizer for k-quants, its converter for the
architectures forge-hub does not convert itself.

k-quant files (Q4_K_M, ...) mix tensor types by llama.cpp's rules (which tensors get more bits,
which blocks of scales), so they are made by llama.cpp, from an F16 GGUF, never approximated.
Two ways to reach its quantizer, tried in this order:

- the ``llama-quantize`` program: in the build folder of a llama.cpp checkout (``--llama-cpp``
  or ``$LLAMA_CPP_DIR``), else on ``PATH``;
- ``llama-cpp-python`` (``pip install llama-cpp-python``): ``llama_cpp.llama_model_quantize``.

Everything here runs as a subprocess or a library call on files; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from forge_hub.errors import LlamaCppError, MissingDependencyError

LLAMA_CPP_ENV = "LLAMA_CPP_DIR"
QUANTIZE_PROGRAM = "llama-quantize"
CONVERT_SCRIPT = "convert_hf_to_gguf.py"
# Output types llama.cpp's converter writes directly; the rest go through its quantizer.
CONVERT_OUTTYPES = ("F32", "F16", "BF16", "Q8_0")
_BUILD_DIRS = ("build/bin", "build/bin/Release", "bin", ".")
INSTALL_HINT = ("install llama.cpp's quantizer: `pip install llama-cpp-python`, or build llama.cpp and give its "
                f"checkout as {{llama_cpp}} (or set ${LLAMA_CPP_ENV}), or put {QUANTIZE_PROGRAM} on PATH")


def llama_cpp_dir(given: str | Path | None = None) -> Path | None:
    """The llama.cpp checkout: the one given, else ``$LLAMA_CPP_DIR``, else none."""
    value = given if given is not None else os.environ.get(LLAMA_CPP_ENV) or None
    if value is None:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise LlamaCppError(f"llama.cpp folder {path} does not exist",
                            f"point {{llama_cpp}} (or ${LLAMA_CPP_ENV}) at a llama.cpp checkout", input="llama_cpp")
    return path


@dataclass(frozen=True)
class Quantizer:
    """llama.cpp's quantizer, as a program (``program``) or through llama-cpp-python (``None``)."""

    program: Path | None

    def describe(self) -> str:
        return str(self.program) if self.program else "llama-cpp-python (llama_cpp.llama_model_quantize)"

    def command(self, source: Path, output: Path, type_name: str, *, threads: int | None = None) -> list[str]:
        """``llama-quantize SOURCE OUTPUT TYPE [THREADS]``: the program's documented argument order."""
        if self.program is None:
            raise ValueError("llama-cpp-python is called in-process, not as a command")
        return [str(self.program), str(source), str(output), type_name, str(threads or os.cpu_count() or 1)]

    def run(self, source: Path, output: Path, type_name: str, *, threads: int | None = None) -> None:
        """Quantize the F16 GGUF ``source`` into ``output`` as ``type_name`` (e.g. ``Q4_K_M``)."""
        if self.program is not None:
            run_tool(self.command(source, output, type_name, threads=threads), f"{QUANTIZE_PROGRAM} ({type_name})")
        else:
            _quantize_in_process(source, output, type_name, threads)
        if not output.is_file():
            raise LlamaCppError(f"llama.cpp's quantizer reported success but wrote no {output.name}",
                                "check the llama.cpp installation (run llama-quantize by hand to see why)")


def find_quantizer(llama_cpp: Path | None = None) -> Quantizer | None:
    """llama.cpp's quantizer where one is installed (see the module docstring for the order)."""
    if llama_cpp is not None:
        for folder in _BUILD_DIRS:
            candidate = llama_cpp / folder / QUANTIZE_PROGRAM
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return Quantizer(candidate)
    on_path = shutil.which(QUANTIZE_PROGRAM)
    if on_path:
        return Quantizer(Path(on_path))
    if importlib.util.find_spec("llama_cpp") is not None:
        return Quantizer(None)
    return None


def require_quantizer(llama_cpp: Path | None, types: list[str]) -> Quantizer:
    """The quantizer, or a clear error naming what to install (raised before any work)."""
    quantizer = find_quantizer(llama_cpp)
    if quantizer is None:
        verb = "needs" if len(types) == 1 else "need"
        raise MissingDependencyError(f"{', '.join(types)} {verb} llama.cpp's quantizer, which is not installed",
                                     INSTALL_HINT)
    return quantizer


def convert_script(llama_cpp: Path) -> Path:
    script = llama_cpp / CONVERT_SCRIPT
    if not script.is_file():
        raise LlamaCppError(f"{llama_cpp} has no {CONVERT_SCRIPT}, so it is not a llama.cpp checkout",
                            "point {llama_cpp} at the root of a llama.cpp clone "
                            "(git clone https://github.com/ggml-org/llama.cpp)")
    return script


def convert_command(llama_cpp: Path, model_dir: Path, outfile: Path, outtype: str) -> list[str]:
    """llama.cpp's converter for one output type (one of :data:`CONVERT_OUTTYPES`)."""
    return [sys.executable, str(convert_script(llama_cpp)), str(model_dir), "--outfile", str(outfile),
            "--outtype", outtype.lower()]


def run_tool(command: list[str], what: str) -> None:
    """Run a llama.cpp tool; on failure, raise with the end of its output (its own error message)."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise LlamaCppError(f"could not run {what}: {exc}", INSTALL_HINT) from exc
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout or "").strip().splitlines()[-15:])
        raise LlamaCppError(f"{what} failed with exit code {result.returncode}:\n{tail}",
                            "see llama.cpp's message above; the source model is untouched")


def _quantize_in_process(source: Path, output: Path, type_name: str, threads: int | None) -> None:
    import ctypes

    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{type_name}", None)
    if ftype is None:
        raise LlamaCppError(f"this llama-cpp-python does not know the type {type_name}",
                            "upgrade llama-cpp-python, or use the llama-quantize program")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or os.cpu_count() or 1
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(output).encode(), ctypes.byref(params))
    if status != 0:
        raise LlamaCppError(f"llama_model_quantize failed ({status}) for {type_name}",
                            "run llama-quantize by hand on the F16 file to see llama.cpp's message")
