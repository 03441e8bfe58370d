"""Pretrained flows: the registry of shipped entries, ``load`` and ``save_pretrained``.

Layout of one pretrained flow (a registry entry under ``pretrained/<name>/`` or any folder
written by ``save_pretrained``):

    config.json         the model's Keras config (under "flow" for a Flow, "flow_vae" for a
                        FlowVAE), its weights' sha256, dataset or target, training budget,
                        held-out metrics and the command that reproduced it
    model.weights.h5    the weights (Keras HDF5 weights; no pickle anywhere)
    card.md             the same facts for people

The registry is ``pretrained/index.json``: for each entry, the sha256 of its config.json and
of its weights, its summary, its kind and its metrics. Kinds: "density" (a Flow fitted to data
by maximum likelihood; headline metric test NLL), "reverse-kl" (a Flow fitted to an
unnormalised target density; headline KL(q || p)), "flow-vae" (a FlowVAE; headline test
importance-weighted NLL). ``load(name)`` checks both digests before it parses a byte of either
file, so a truncated or altered file is refused with a clear error.
Only names listed in the index are entries: a string that looks like a path is never joined
onto the pretrained folder; ``load`` treats an existing directory as a ``save_pretrained``
folder (whose config.json records its own weights' digest).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras

from nfzoo.files import atomic_directory, sha256_file
from nfzoo.flow import Flow
from nfzoo.registry import Registry
from nfzoo.vae import FlowVAE

__all__ = [
    "PretrainedEntry",
    "list_pretrained",
    "load",
    "pretrained_dir",
    "pretrained_entry",
    "save_pretrained",
]

FORMAT = "nfzoo.pretrained/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
CARD_FILE = "card.md"
INDEX_FILE = "index.json"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
#: the key of the model's Keras config in config.json, per loadable class
MODEL_KEYS: dict[str, type] = {"flow": Flow, "flow_vae": FlowVAE}
#: each kind's headline metric: (key in metrics, label)
HEADLINES = {
    "density": ("test_nll_nats", "test NLL"),
    "reverse-kl": ("kl_nats", "KL(q||p)"),
    "flow-vae": ("test_iw_nll_nats", "test IW-NLL"),
}


class IntegrityError(ValueError):
    """A pretrained file does not match its recorded sha256 (truncated or altered)."""


def pretrained_dir() -> Path:
    """The folder of the shipped entries: ``$NFZOO_PRETRAINED_DIR`` or the repository's
    ``pretrained/``."""
    env = os.environ.get("NFZOO_PRETRAINED_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "pretrained"


@dataclass(frozen=True)
class PretrainedEntry:
    """One registry entry, as recorded in ``pretrained/index.json``."""

    name: str
    summary: str
    config_sha256: str
    weights_sha256: str
    metrics: dict[str, float] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    architecture: str = ""
    size_bytes: int = 0
    kind: str = "density"

    @property
    def path(self) -> Path:
        return pretrained_dir() / self.name

    @property
    def headline(self) -> tuple[str, float]:
        """(label, value) of the entry's main metric (lower is better for every kind)."""
        key, label = HEADLINES[self.kind]
        return label, float(self.metrics.get(key, float("nan")))


def _registry() -> Registry[PretrainedEntry]:
    registry: Registry[PretrainedEntry] = Registry("pretrained entry")
    index_path = pretrained_dir() / INDEX_FILE
    if index_path.exists():
        for name, record in json.loads(index_path.read_text()).items():
            registry.add(name, PretrainedEntry(name=name, **record))
    return registry


def list_pretrained() -> list[PretrainedEntry]:
    """Every shipped entry, with its metrics, sorted by name."""
    registry = _registry()
    return [registry.get(name) for name in registry.names()]


def pretrained_entry(name: str) -> PretrainedEntry:
    """The registry entry called ``name`` (ValueError with the closest names otherwise)."""
    return _registry().get(name)


def load(name_or_dir: str | os.PathLike) -> Flow | FlowVAE:
    """A ready model from a registry entry name or a ``save_pretrained`` folder: a Flow, or a
    FlowVAE for the "flow-vae" entries.

    The sha256 of config.json and of the weights are checked before either is parsed; the
    config may only name nfzoo and Keras classes; weights load from HDF5 (no pickle)."""
    registry = _registry()
    key = os.fspath(name_or_dir)
    if isinstance(name_or_dir, str) and key in registry:
        entry = registry.get(key)
        return _load_folder(entry.path, entry.config_sha256, entry.weights_sha256)
    path = Path(key).expanduser()
    if path.is_dir():
        return _load_folder(path, None, None)
    if isinstance(name_or_dir, str) and NAME_PATTERN.match(key):
        registry.get(key)  # raises with the closest names
    raise ValueError(
        f"{key!r} is neither a pretrained entry nor a folder written by save_pretrained. "
        f"Entries: {', '.join(registry.names()) or 'none'}."
    )


def _check_digest(path: Path, expected: str) -> None:
    if not path.is_file():
        raise IntegrityError(f"{path} is missing.")
    actual = sha256_file(path)
    if actual != expected:
        raise IntegrityError(
            f"{path} does not match its recorded sha256 (expected {expected}, found {actual}, "
            f"{path.stat().st_size} bytes): the file is truncated or altered; refusing to load it."
        )


def _check_classes(config: Any) -> None:
    """Refuses configs that name anything but nfzoo's registered classes and Keras's own."""
    if isinstance(config, dict):
        module = config.get("module")
        registered = config.get("registered_name")
        if "class_name" in config and module is not None:
            if not (module == "keras" or module.startswith(("keras.", "nfzoo."))):
                raise ValueError(f"pretrained config names a class outside nfzoo/Keras: {module}")
            if registered is not None and not str(registered).startswith("nfzoo>"):
                raise ValueError(f"pretrained config names an unknown class: {registered}")
        for value in config.values():
            _check_classes(value)
    elif isinstance(config, list):
        for value in config:
            _check_classes(value)


def _load_folder(
    folder: Path, config_sha256: str | None, weights_sha256: str | None
) -> Flow | FlowVAE:
    config_path = folder / CONFIG_FILE
    if config_sha256 is not None:
        _check_digest(config_path, config_sha256)
    elif not config_path.is_file():
        raise ValueError(f"{folder} has no {CONFIG_FILE}: not a save_pretrained folder.")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise IntegrityError(f"{config_path} is not valid JSON ({e}).") from None
    if config.get("format") != FORMAT:
        raise ValueError(f"{config_path} has format {config.get('format')!r}; expected {FORMAT!r}.")
    keys = [key for key in MODEL_KEYS if key in config]
    if len(keys) != 1:
        raise ValueError(
            f"{config_path} must hold exactly one model config under one of "
            f"{sorted(MODEL_KEYS)}; found {keys or 'none'}."
        )
    _check_digest(folder / WEIGHTS_FILE, weights_sha256 or config["weights_sha256"])
    _check_classes(config[keys[0]])
    with keras.saving.custom_object_scope({}):
        model = MODEL_KEYS[keys[0]].from_config(config[keys[0]])
    model.load_weights(folder / WEIGHTS_FILE)
    return model


def save_pretrained(
    model: Flow | FlowVAE,
    directory: str | os.PathLike,
    *,
    metadata: dict[str, Any] | None = None,
    card: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes ``model`` (a Flow or a FlowVAE) as config.json + model.weights.h5 + card.md into
    ``directory``, atomically: everything is written to a temporary folder beside it and
    renamed at the end, so a failure leaves the previous contents (or nothing) in place.

    Args:
      metadata: extra facts stored in config.json (dataset, training budget, metrics,
        command). Must be JSON-serialisable.
      card: the Markdown card; a short default is written when None.
      overwrite: replace an existing folder.
    """
    keys = [key for key, cls in MODEL_KEYS.items() if isinstance(model, cls)]
    if not keys:
        raise TypeError(
            "save_pretrained writes a nfzoo Flow or FlowVAE; received "
            f"{type(model).__module__}.{type(model).__name__}."
        )
    directory = Path(directory)
    with atomic_directory(directory, overwrite=overwrite) as tmp:
        model.save_weights(tmp / WEIGHTS_FILE)
        config = {
            "format": FORMAT,
            keys[0]: model.get_config(),
            "weights_sha256": sha256_file(tmp / WEIGHTS_FILE),
            **(metadata or {}),
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (tmp / CARD_FILE).write_text(card or _default_card(model, config))
    return directory


def _default_card(model: Flow | FlowVAE, config: dict) -> str:
    if isinstance(model, FlowVAE):
        what = (
            f"A VAE on {model.input_dim}-d binary vectors with a {model.latent_dim}-d latent and "
            f"the {model.posterior_name!r} posterior ({model.num_flows} flow steps)."
        )
    else:
        layers = ", ".join(type(layer).__name__ for layer in model.flow_layers)
        what = (
            f"A normalizing flow on events of shape {list(model.data_event_shape)}.\n\n"
            f"Layers (generative order): {layers}."
        )
    return f"# {model.name}\n\n{what}\n\nWeights sha256: `{config['weights_sha256']}`.\n"
