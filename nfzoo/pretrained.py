"""Pretrained models: the registry of shipped entries, ``load``, ``verify`` and
``save_pretrained``.

Layout of one pretrained model (a registry entry, or any folder written by
``save_pretrained``):

    config.json         the model's Keras config (under "flow" for a Flow, "flow_vae" for a
                        FlowVAE), its weights' sha256 and, for an entry, its record: the
                        preset's declaration, the metrics measured and the facts of the run
    model.weights.h5    the weights (Keras HDF5 weights; no pickle anywhere)
    card.md             the same facts for people

The entries' recipes are the presets of ``nfzoo.presets``; their files live in the top-level
``pretrained/`` folder of the source tree, which the wheel and the sdist carry into the
installed package as ``nfzoo/_pretrained/`` (setup.cfg maps that package onto the folder, so
there is one copy). ``pretrained/index.json`` is the registry: for each shipped entry the
sha256 of its config.json and of its weights, its size and its metrics. ``load`` checks both
digests before it parses a byte of either file, so a truncated or altered file is refused
with a clear error.

How ``load`` (and every ``nfzoo`` command) resolves a string:

1. a ``pathlib.Path`` (any ``os.PathLike``), or a string that looks like a path (it holds a
   path separator, or starts with "." or "~"), is a folder written by ``save_pretrained``;
   a path-like string is never joined onto the pretrained folder;
2. a bare name ("maf-moons") is a registry entry or one of its aliases (former names), unless
   the working directory holds a ``save_pretrained`` folder (one with a config.json) of that
   name: then the folder wins, as the user's own files come first, and an
   ``AmbiguousNameWarning`` names both. ``load("./maf-moons")`` takes the folder and
   ``load("maf-moons", source="pretrained")`` the entry, without a warning.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nfzoo import config_checks
from nfzoo.files import (
    CONFIG_FILE,
    PRETRAINED_FORMAT,
    WEIGHTS_FILE,
    sha256_file,
)
from nfzoo.kinds import KINDS, Kind, Metric
from nfzoo.presets import PRESETS, Preset
from nfzoo.registry import Registry

if TYPE_CHECKING:  # imported where used: listing and resolving names need no TensorFlow
    from nfzoo.flow import Flow
    from nfzoo.vae import FlowVAE

__all__ = [
    "AmbiguousNameWarning",
    "Check",
    "IntegrityError",
    "PretrainedEntry",
    "list_pretrained",
    "load",
    "pretrained_dir",
    "pretrained_entry",
    "resolve",
    "save_pretrained",
    "verify",
]

FORMAT = PRETRAINED_FORMAT
INDEX_FILE = "index.json"
#: the folder of the entries inside the installed package (mapped from pretrained/)
PACKAGE_DATA_DIR = "_pretrained"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
#: the fields of an entry's record in index.json
INDEX_FIELDS = ("config_sha256", "weights_sha256", "metrics", "size_bytes")
#: what ``load``'s ``source`` may say
SOURCES = ("auto", "pretrained", "folder")


class IntegrityError(ValueError):
    """A pretrained file does not match its recorded sha256 (truncated or altered)."""


class AmbiguousNameWarning(UserWarning):
    """A bare name names both a ``save_pretrained`` folder in the working directory and a
    pretrained entry; the folder was taken."""


def pretrained_dir() -> Path:
    """The folder of the shipped entries: ``$NFZOO_PRETRAINED_DIR`` when set (a folder laid out
    like pretrained/); else the installed package's ``nfzoo/_pretrained/``; else, when nfzoo
    runs from a source checkout (editable install, PYTHONPATH), the checkout's
    ``pretrained/``."""
    env = os.environ.get("NFZOO_PRETRAINED_DIR")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parent
    installed = package / PACKAGE_DATA_DIR
    if (installed / INDEX_FILE).is_file():
        return installed
    return package.parent / "pretrained"


@dataclass(frozen=True)
class PretrainedEntry:
    """One shipped entry: its preset (the declaration) and its record in the registry
    (``pretrained/index.json``: digests, size, the metrics measured when it was trained)."""

    preset: Preset
    config_sha256: str
    weights_sha256: str
    metrics: dict[str, float]
    size_bytes: int

    @property
    def name(self) -> str:
        return self.preset.name

    @property
    def summary(self) -> str:
        return self.preset.summary

    @property
    def kind(self) -> str:
        return self.preset.kind

    @property
    def architecture(self) -> str:
        return self.preset.architecture

    @property
    def dataset(self) -> dict[str, Any]:
        return dict(self.preset.dataset)

    @property
    def aliases(self) -> tuple[str, ...]:
        return self.preset.aliases

    @property
    def path(self) -> Path:
        return pretrained_dir() / self.name

    @property
    def headline(self) -> tuple[str, float]:
        """(label, value) of the entry's main metric (lower is better for every kind)."""
        metric = KINDS.get(self.kind).headline
        return metric.label, float(self.metrics.get(metric.key, float("nan")))

    def load(self) -> Flow | FlowVAE:
        """The entry's model, digests checked (``nfzoo.load(name, source="pretrained")``)."""
        return _load_folder(self.path, self.config_sha256, self.weights_sha256)


def _registry() -> Registry[PretrainedEntry]:
    index_path = pretrained_dir() / INDEX_FILE
    if not index_path.is_file():
        raise FileNotFoundError(
            f"nfzoo's pretrained entries are missing: {index_path} does not exist. An "
            "installed nfzoo carries them in nfzoo/_pretrained/ (reinstall it); a source "
            "checkout in pretrained/; NFZOO_PRETRAINED_DIR, when set, must name such a folder."
        )
    registry: Registry[PretrainedEntry] = Registry("pretrained entry")
    for name, record in _read_index(index_path).items():
        registry.add(name, PretrainedEntry(preset=PRESETS.get(name), **record))
        for alias in PRESETS.aliases_of(name):
            registry.alias(alias, name)
    return registry


def _read_index(index_path: Path) -> dict[str, dict[str, Any]]:
    """index.json, checked: an object of entries, each named like a preset (a bare name, so
    it cannot reach outside the pretrained folder) with exactly ``INDEX_FIELDS``."""
    try:
        index = json.loads(index_path.read_text())
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{index_path} is not valid JSON ({e}).") from None
    if not isinstance(index, dict):
        raise ValueError(f"{index_path} must hold an object of entries; it holds a list or value.")
    for name, record in index.items():
        if not NAME_PATTERN.match(name):
            raise ValueError(
                f"{index_path} records the entry {name!r}: an entry's name is a bare name of "
                "lowercase letters, digits, '.', '_' and '-' (no path)."
            )
        if name not in PRESETS or PRESETS.canonical(name) != name:
            raise ValueError(
                f"{index_path} records {name!r}, which no preset of nfzoo.presets declares "
                "under that name."
            )
        fields = sorted(record) if isinstance(record, dict) else None
        if fields != sorted(INDEX_FIELDS):
            raise ValueError(
                f"{index_path}: the record of {name!r} must have exactly the fields "
                f"{', '.join(INDEX_FIELDS)}; found {fields if fields is not None else record!r}."
            )
        metrics = record["metrics"]
        if not (
            all(isinstance(record[k], str) for k in ("config_sha256", "weights_sha256"))
            and isinstance(record["size_bytes"], int)
            and isinstance(metrics, dict)
            and all(isinstance(v, int | float) for v in metrics.values())
        ):
            raise ValueError(
                f"{index_path}: the record of {name!r} must hold two sha256 strings, an integer "
                "size_bytes and numeric metrics."
            )
    return index


def known_architectures() -> list[str]:
    """Every architecture a pretrained entry may have (those of every kind)."""
    return sorted({arch for name in KINDS.names() for arch in KINDS.get(name).architectures()})


def list_pretrained(
    pattern: str | None = None, *, architecture: str | None = None, kind: str | None = None
) -> list[PretrainedEntry]:
    """The shipped entries, with their metrics, sorted by name.

    Args:
      pattern: a glob pattern (``fnmatch``: ``*``, ``?``, ``[...]``) that an entry's name or
        one of its aliases matches, e.g. "maf-*" or "*-u1".
      architecture: only entries of this architecture (exactly: "realnvp" is not
        "realnvp-image").
      kind: only entries of this kind ("density", "reverse-kl", "flow-vae").
    """
    if pattern is not None and not isinstance(pattern, str):
        raise ValueError(f"pattern must be a glob string such as 'maf-*'; received {pattern!r}.")
    if kind is not None:
        KINDS.get(kind)  # raises, naming the known kinds
    registry = _registry()
    entries = [registry.get(name) for name in registry.names()]
    # an architecture no entry has may still be a known one (nothing shipped): only then is
    # the list of architectures (which imports TensorFlow) needed
    shipped = {e.architecture for e in entries}
    if architecture is not None and architecture not in shipped:
        known = known_architectures()
        if architecture not in known:
            raise ValueError(f"Unknown architecture {architecture!r}; known: {', '.join(known)}.")
    return [
        e
        for e in entries
        if (kind is None or e.kind == kind)
        and (architecture is None or e.architecture == architecture)
        and (pattern is None or any(fnmatch.fnmatchcase(n, pattern) for n in (e.name, *e.aliases)))
    ]


def pretrained_entry(name: str) -> PretrainedEntry:
    """The registry entry called ``name`` or one of its aliases (ValueError with the closest
    names otherwise)."""
    return _registry().get(name)


def resolve(name_or_dir: str | os.PathLike, source: str = "auto") -> PretrainedEntry | Path:
    """What ``name_or_dir`` names: a registry entry, or the path of a folder (see the module
    docstring for the rule). ``source`` forces one reading: "pretrained" (an entry) or
    "folder"."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}; received {source!r}.")
    if not isinstance(name_or_dir, str | os.PathLike):
        raise ValueError(
            "expected the name of a pretrained entry or the path of a folder; received "
            f"{type(name_or_dir).__name__} {name_or_dir!r}."
        )
    key = os.fspath(name_or_dir)
    bare = isinstance(name_or_dir, str) and NAME_PATTERN.match(key) is not None
    if source == "pretrained":
        return _registry().get(key)
    folder = Path(key).expanduser()
    if source == "folder" or not bare:
        if folder.is_dir():
            return folder
        if source == "folder":
            raise ValueError(f"{key!r} is not a folder.")
        raise ValueError(
            f"{key!r} is neither a pretrained entry nor a folder written by save_pretrained "
            "(path-like names are read as folders only)."
        )
    try:
        registry = _registry()
    except FileNotFoundError:
        if folder.is_dir():  # a user's folder loads even where the zoo's files are missing
            return folder
        raise
    saved_here = (folder / CONFIG_FILE).is_file()
    if key in registry and saved_here:
        warnings.warn(
            f"{key!r} names both the folder ./{key} (written by save_pretrained) and the "
            f"pretrained entry {registry.canonical(key)!r}; taking the folder. Pass "
            f"'./{key}' for the folder or source='pretrained' for the entry.",
            AmbiguousNameWarning,
            stacklevel=3,
        )
        return folder
    if key in registry:
        return registry.get(key)
    if folder.is_dir():
        return folder
    return registry.get(key)  # raises, with the closest names


def load(name_or_dir: str | os.PathLike, *, source: str = "auto") -> Flow | FlowVAE:
    """A ready model from a registry entry's name (or alias) or a ``save_pretrained`` folder:
    a Flow, or a FlowVAE for the "flow-vae" entries. How a string is read is the module
    docstring's rule; ``source="pretrained"`` or ``"folder"`` forces one reading.

    The sha256 of config.json and of the weights are checked before either is parsed; the
    config may only name nfzoo and Keras classes; weights load from HDF5 (no pickle)."""
    found = resolve(name_or_dir, source)
    if isinstance(found, PretrainedEntry):
        return found.load()
    return _load_folder(found, None, None)


@dataclass(frozen=True)
class Check:
    """One metric of an entry recomputed from its shipped weights (``verify``)."""

    entry: str
    metric: Metric
    recorded: float
    recomputed: float

    @property
    def ok(self) -> bool:
        return self.metric.agrees(self.recorded, self.recomputed)


def verify(name: str) -> list[Check]:
    """Loads the entry ``name`` (digests checked) and recomputes the metrics its kind checks,
    with its preset's protocol: one ``Check`` per metric, holding the recorded and the
    recomputed value."""
    entry = pretrained_entry(name)
    kind: Kind = KINDS.get(entry.kind)
    recomputed = kind.evaluate(entry.load(), entry.preset)
    return [
        Check(entry.name, metric, float(entry.metrics[metric.key]), float(recomputed[metric.key]))
        for metric in kind.checked(entry.preset)
    ]


def _check_digest(path: Path, expected: str) -> None:
    if not path.is_file():
        raise IntegrityError(f"{path} is missing.")
    actual = sha256_file(path)
    if actual != expected:
        raise IntegrityError(
            f"{path} does not match its recorded sha256 (expected {expected}, found {actual}, "
            f"{path.stat().st_size} bytes): the file is truncated or altered; refusing to load it."
        )


def _model_class(key: str) -> Any:
    """The class stored under ``key``; importing it registers every nfzoo class with Keras."""
    import nfzoo.layers  # noqa: F401  (registers the layers a config names)
    from nfzoo.flow import Flow
    from nfzoo.vae import FlowVAE

    return {"flow": Flow, "flow_vae": FlowVAE}[key]


def _load_folder(
    folder: Path, config_sha256: str | None, weights_sha256: str | None
) -> Flow | FlowVAE:
    """Checks both files (digests, then config.json's layout and its sizes against the
    weights file: ``nfzoo.config_checks``) before a single weight is allocated, then builds
    the model and loads its weights."""
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if config_sha256 is not None:
        _check_digest(config_path, config_sha256)
    elif not config_path.is_file():
        raise ValueError(f"{folder} has no {CONFIG_FILE}: not a save_pretrained folder.")
    config, key = config_checks.read_config(config_path, digest_known=weights_sha256 is not None)
    _check_digest(weights_path, weights_sha256 or config["weights_sha256"])
    config_checks.check_against_weights(config, key, weights_path, config_path)
    import keras

    try:
        with keras.saving.custom_object_scope({}):
            model = _model_class(key).from_config(config[key])
        model.load_weights(weights_path)
    except MemoryError:
        raise
    except Exception as e:  # a config the checks let through can still fail anywhere
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"{folder} does not hold a model nfzoo can build from its {CONFIG_FILE} and "
            f"{WEIGHTS_FILE}: {type(e).__name__}: {detail}"
        ) from e
    return model


def save_pretrained(
    model: Flow | FlowVAE,
    directory: str | os.PathLike,
    *,
    metadata: dict[str, Any] | None = None,
    card: str | None = None,
    overwrite: bool = False,
) -> Path:
    """``model.save_pretrained(directory, ...)`` for a Flow or a FlowVAE (see
    ``nfzoo.model_base.PretrainedModel.save_pretrained``); a TypeError for anything else."""
    from nfzoo.model_base import PretrainedModel

    if not isinstance(model, PretrainedModel):
        raise TypeError(
            "save_pretrained writes a nfzoo Flow or FlowVAE; received "
            f"{type(model).__module__}.{type(model).__name__}."
        )
    return model.save_pretrained(directory, metadata=metadata, card=card, overwrite=overwrite)
