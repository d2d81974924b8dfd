"""llama.cpp's own tools, where installed: its quantizer for k-quants, its converter for the
architectures forge-hub does not convert itself.

k-quant files (Q4_K_M, ...) mix tensor types by llama.cpp's rules (which tensors get more bits,
which blocks of scales), so they are made by llama.cpp, from an F16 GGUF, never approximated.
Two ways to reach its quantizer, tried in this order:

- the ``llama-quantize`` program: in the build folder of a llama.cpp checkout (``--llama-cpp``
  or ``$LLAMA_CPP_DIR``), else on ``PATH``;
- ``llama-cpp-python`` (``pip install llama-cpp-python``): ``llama_cpp.llama_model_quantize``.

**One tensor at a time** (:class:`TensorQuantizer`, for writing an edited k-quant tensor back in
its own type). Neither way has a per-tensor call: both quantize a *file*. So the tensor goes into
a GGUF of its own: the source's metadata without the tokenizer (llama.cpp reads the architecture's
hyperparameters before it quantizes anything, but not the vocabulary), and the one tensor in
F32, which loses nothing. llama.cpp quantizes it with ``--pure`` (``params.pure``), which gives
every tensor the file type's base type instead of its per-tensor mix: Q4_K_M gives Q4_K, Q5_K_M
gives Q5_K, Q3_K_M gives Q3_K, Q6_K and Q2_K give themselves (:data:`K_QUANT_FILE_TYPES`). The
result is read back with the ``gguf`` package, whose numpy dequantizer reads every k-quant, and
its type is checked: anything else is an error, never a silent change. The alternative, calling
``ggml_quantize_chunk`` in llama.cpp's shared library through ctypes, would skip the files but
depends on the library's C ABI and file name, and a static ``llama-quantize`` has no library at
all; the file route uses only the two documented interfaces, so both ways behave the same. It
costs a few milliseconds of file writing per call, small next to the quantization itself.

Everything here runs as a subprocess or a library call on files; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forge_hub.errors import LlamaCppError, MissingDependencyError
from forge_hub.outputs.gguf.quant import K_QUANT_FILE_TYPES

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

    def command(self, source: Path, output: Path, type_name: str, *, threads: int | None = None,
                pure: bool = False) -> list[str]:
        """``llama-quantize [--pure] SOURCE OUTPUT TYPE [THREADS]``: the program's documented argument order."""
        if self.program is None:
            raise ValueError("llama-cpp-python is called in-process, not as a command")
        options = ["--pure"] if pure else []
        return [str(self.program), *options, str(source), str(output), type_name, str(threads or os.cpu_count() or 1)]

    def run(self, source: Path, output: Path, type_name: str, *, threads: int | None = None,
            pure: bool = False) -> None:
        """Quantize the F16 (or F32) GGUF ``source`` into ``output`` as ``type_name`` (e.g. ``Q4_K_M``);
        ``pure`` gives every tensor the type's base type (Q4_K for Q4_K_M) instead of llama.cpp's mix."""
        if self.program is not None:
            run_tool(self.command(source, output, type_name, threads=threads, pure=pure),
                     f"{QUANTIZE_PROGRAM} ({type_name})")
        else:
            _quantize_in_process(source, output, type_name, threads, pure)
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


class TensorQuantizer:
    """Quantize single tensors to a k-quant type with llama.cpp (see the module docstring for how).

    ``metadata``: ``(key, value, value type, array item type)`` for every key the one-tensor file
    carries (the architecture's, without the tokenizer); ``workdir``: a folder for its files,
    which are removed after each call. ``tq(array, "Q4_K", name)`` returns the stored bytes of
    ``array`` (numpy order, rows last) in that type, as ``GGUFReader`` gives a tensor's data.

    Example::

        tq = TensorQuantizer(find_quantizer(), "llama", metadata, Path("tmp"))
        data = tq(weight, "Q4_K", "blk.0.ffn_down.weight")
    """

    def __init__(self, quantizer: Quantizer, arch: str, metadata: Sequence[tuple], workdir: Path,
                 *, threads: int | None = None):
        self.quantizer = quantizer
        self.arch = arch
        self.metadata = list(metadata)
        self.workdir = Path(workdir)
        self.threads = threads
        self.calls = 0

    def __call__(self, array: np.ndarray, type_name: str, name: str = "blk.0.ffn_down.weight") -> np.ndarray:
        import gguf

        file_type = K_QUANT_FILE_TYPES.get(type_name)
        if file_type is None:
            raise ValueError(f"{type_name} is not a k-quant tensor type ({', '.join(K_QUANT_FILE_TYPES)})")
        self.calls += 1
        source = self.workdir / f"tensor-{self.calls}.f32.gguf"
        output = self.workdir / f"tensor-{self.calls}.{type_name}.gguf"
        try:
            writer = gguf.GGUFWriter(source, self.arch)
            for key, value, kind, sub_type in self.metadata:
                writer.add_key_value(key, value, kind, sub_type=sub_type)
            writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
            self.quantizer.run(source, output, file_type, threads=self.threads, pure=True)
            reader = gguf.GGUFReader(output)
            stored = next((t for t in reader.tensors if t.name == name), None)
            if stored is None or stored.tensor_type.name != type_name:
                got = "no such tensor" if stored is None else stored.tensor_type.name
                raise LlamaCppError(f"llama.cpp's quantizer wrote {name} as {got}, not {type_name}",
                                    "upgrade llama.cpp (llama-cpp-python), whose --pure gives every tensor "
                                    "the file type's base type")
            data = np.array(stored.data, copy=True)  # off the memory map before the file goes
            del reader, stored
            return data
        finally:
            source.unlink(missing_ok=True)
            output.unlink(missing_ok=True)


def _quantize_in_process(source: Path, output: Path, type_name: str, threads: int | None, pure: bool = False) -> None:
    import ctypes

    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{type_name}", None)
    if ftype is None:
        raise LlamaCppError(f"this llama-cpp-python does not know the type {type_name}",
                            "upgrade llama-cpp-python, or use the llama-quantize program")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or os.cpu_count() or 1
    params.pure = pure
    with _errors_only():
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(output).encode(), ctypes.byref(params))
    if status != 0:
        raise LlamaCppError(f"llama_model_quantize failed ({status}) for {type_name}",
                            "run llama-quantize by hand on the F16 file to see llama.cpp's message")


@contextmanager
def _errors_only() -> Iterator[None]:
    """llama-cpp-python prints every llama.cpp log line at or above its logger's level, which is
    unset (everything) until a ``Llama(verbose=False)`` sets it; keep quantization to its errors."""
    logger = logging.getLogger("llama-cpp-python")
    previous = logger.level
    logger.setLevel(max(previous, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(previous)
