"""The package type-checks, and its public API is annotated.

mypy runs over nfzoo/ with the configuration in pyproject.toml (TensorFlow, Keras, TFP and the
other numerical dependencies are typed as Any there). The second test walks every public
module's ``__all__`` and requires annotations on every public function and method defined
in nfzoo: parameters (but self, cls, *args and **kwargs) and the return value (but
``__init__``'s)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import nfzoo

REPO = Path(__file__).resolve().parents[1]


def test_mypy_finds_no_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout, result.stdout


def _public_modules() -> list[str]:
    names = ["nfzoo"]
    for info in pkgutil.walk_packages(nfzoo.__path__, "nfzoo."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts[1:]) or parts[1] == "models":
            continue  # private modules, and the former name that only forwards
        names.append(info.name)
    return names


def _unannotated(fn, qualname: str) -> list[str]:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    missing = [
        f"{qualname}({p.name})"
        for i, p in enumerate(signature.parameters.values())
        if p.annotation is inspect.Parameter.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and not (i == 0 and p.name in ("self", "cls"))
    ]
    if signature.return_annotation is inspect.Signature.empty and fn.__name__ != "__init__":
        missing.append(f"{qualname} -> ?")
    return missing


def _own_functions(module):
    """(qualified name, function) of the module's public functions, and of the public methods
    (and __init__) that its public classes define themselves."""
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        if getattr(obj, "__module__", None) != module.__name__:
            continue  # re-exported: checked where it is defined
        if inspect.isfunction(obj):
            yield f"{module.__name__}.{name}", obj
        elif inspect.isclass(obj):
            for attr, value in vars(obj).items():
                if attr.startswith("_") and attr != "__init__":
                    continue
                if isinstance(value, staticmethod | classmethod):
                    value = value.__func__
                if isinstance(value, property):
                    value = value.fget
                if inspect.isfunction(value):
                    yield f"{module.__name__}.{name}.{attr}", value


@pytest.mark.parametrize("module_name", _public_modules())
def test_public_api_is_annotated(module_name):
    module = importlib.import_module(module_name)
    missing = [m for qualname, fn in _own_functions(module) for m in _unannotated(fn, qualname)]
    assert not missing, f"{len(missing)} unannotated: " + ", ".join(missing)
