"""What the ``nfzoo`` command and the tools print: TensorFlow without its start-up noise, and
Keras progress bars only on a terminal.

TensorFlow's native libraries log through absl before anything can configure them ("All log
messages before absl::InitializeLog() ...", oneDNN and CUDA notices, a failed cuInit on a
machine without a GPU): ``TF_CPP_MIN_LOG_LEVEL`` does not reach those lines, so
``import_tensorflow`` sends file descriptor 2 to the null device while TensorFlow loads and
finds its devices, then restores it. Python-level noise (TensorFlow's deprecation notices,
raised by tf2onnx on every export, and third-party warnings) is filtered by ``quiet_python``.
``NFZOO_VERBOSE=1`` keeps everything.

Keras draws its progress bar with ANSI codes whenever ``posix`` is imported, terminal or not;
``progress_verbosity`` gives the bar on a terminal and one plain line per epoch otherwise.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import TextIO

__all__ = [
    "import_tensorflow",
    "native_stderr_silenced",
    "progress_verbosity",
    "quiet_python",
    "verbose_requested",
]

#: environment variables that quiet TensorFlow's native logging once absl is initialised
_QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "GRPC_VERBOSITY": "ERROR"}


def verbose_requested() -> bool:
    """Whether the user asked for everything (``NFZOO_VERBOSE=1``): native logs, warnings and
    tracebacks."""
    return os.environ.get("NFZOO_VERBOSE", "") not in ("", "0")


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Points file descriptor 2 at the null device for the block (native libraries write
    there directly, past ``sys.stderr``), then restores it. Does nothing under
    ``NFZOO_VERBOSE=1`` or when fd 2 is not open."""
    if verbose_requested():
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    sys.stderr.flush()
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def import_tensorflow() -> ModuleType:
    """Imports TensorFlow (and Keras) quietly and returns the ``tensorflow`` module. The first
    import in a process also enumerates the devices inside the silenced block, since that is
    when a machine without a GPU logs its failed cuInit."""
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    first = "tensorflow" not in sys.modules
    with native_stderr_silenced():
        import keras  # noqa: F401  (Keras 3 loads its backend, TensorFlow, here)
        import tensorflow as tf

        if first:
            tf.config.list_physical_devices()
    quiet_python()
    return tf


def quiet_python() -> None:
    """Silences TensorFlow's Python logger (deprecation notices) and absl's below ERROR, and
    third-party Python warnings; nfzoo's own warnings still show. No-op under
    ``NFZOO_VERBOSE=1``."""
    if verbose_requested():
        return
    import logging

    for name in ("tensorflow", "absl", "tf2onnx", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "absl.logging" in sys.modules:
        sys.modules["absl.logging"].set_verbosity("error")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for module in ("tensorflow", "keras", "tf2onnx", "onnx", "tensorflow_probability", "h5py"):
        warnings.filterwarnings("ignore", module=module)


def progress_verbosity(stream: TextIO | None = None) -> int:
    """Keras ``verbose``: 1 (a progress bar) when ``stream`` (default stdout) is a terminal,
    2 (one plain line per epoch) otherwise, e.g. when the output goes to a log file."""
    stream = sys.stdout if stream is None else stream
    try:
        return 1 if stream.isatty() else 2
    except (AttributeError, ValueError):
        return 2
