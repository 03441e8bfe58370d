"""Checks of a pretrained folder's config.json before anything is built from it.

A config.json is data from outside: a folder passed to ``nfzoo.load`` may hold any file. Keras
would allocate whatever sizes a config names (``hidden_units [60000, 60000]`` is 13 GiB per
layer) and fail with a KeyError, TypeError or RecursionError on a malformed one. So, before a
single weight is allocated, ``read_config`` and ``check_against_weights`` refuse with one
ValueError that names the file and what is wrong:

* the JSON itself: unreadable, nested deeper than ``MAX_DEPTH``, not an object;
* the layout: the format, exactly one model under a known key, the weights' sha256, a
  Flow's list of layers; every object naming a ``class_name`` also names its ``module``
  (nfzoo's or Keras's only) and its ``config``;
* the sizes, against the shapes stored in model.weights.h5 (read with h5py, nothing built):
  each width (``hidden_units``, ``hidden_channels``) is a dimension of some stored array;
  each other size (the last, feature or channel, dimension of every event and input shape,
  bins, context, latent and input sizes, number of flows) is at most the largest stored
  dimension; a Flow has as many layers as the file has layer groups. A config that passes
  cannot ask for more weights than a model of the size of its weights file. Events are also
  capped at ``MAX_EVENT_SIZE`` values (an image's height and width need no weights).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from nfzoo.files import PRETRAINED_FORMAT

__all__ = [
    "MAX_DEPTH",
    "MAX_EVENT_SIZE",
    "MODEL_KEYS",
    "check_against_weights",
    "check_classes",
    "read_config",
]

#: the key of the model's Keras config in config.json: "flow" (a Flow), "flow_vae" (a FlowVAE)
MODEL_KEYS = ("flow", "flow_vae")
#: deepest nesting of a config.json (the shipped ones nest 10 levels)
MAX_DEPTH = 64
#: sizes that are layer widths: each must be a dimension of a stored array
WIDTH_KEYS = ("hidden_units", "hidden_channels")
#: other sizes: each at most the largest stored dimension
BOUNDED_KEYS = ("bins", "context_dim", "input_dim", "latent_dim", "num_flows")
#: shapes of an event or a layer's input: the last dimension is bounded, the size capped
SHAPE_KEYS = ("event_shape", "input_shape")
#: most values in one event (a 4096 x 4096 grey image)
MAX_EVENT_SIZE = 2**24
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def read_config(path: Path, digest_known: bool = False) -> tuple[dict, str]:
    """config.json parsed and checked (layout, classes, nesting); returns the config and its
    model key. ``digest_known``: the weights' sha256 comes from the registry, so config.json
    need not record it."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e.reason}).") from None
    try:
        config = json.loads(text)
    except RecursionError:
        raise ValueError(f"{path} nests deeper than {MAX_DEPTH} levels.") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}).") from None
    if not isinstance(config, dict):
        raise ValueError(
            f"{path} must hold a JSON object (format, model config, weights_sha256); it "
            f"holds a {type(config).__name__}."
        )
    _check_depth(config, path)
    if config.get("format") != PRETRAINED_FORMAT:
        raise ValueError(
            f"{path} has format {config.get('format')!r}; expected {PRETRAINED_FORMAT!r}."
        )
    keys = [key for key in MODEL_KEYS if key in config]
    if len(keys) != 1:
        raise ValueError(
            f"{path} must hold exactly one model config under one of {sorted(MODEL_KEYS)}; "
            f"found {keys or 'none'}."
        )
    key = keys[0]
    if not digest_known and not _SHA256.match(str(config.get("weights_sha256", ""))):
        raise ValueError(
            f"{path} must record the sha256 of model.weights.h5 as 64 hex digits under "
            f"'weights_sha256'; found {config.get('weights_sha256')!r}."
        )
    model = config[key]
    if not isinstance(model, dict):
        raise ValueError(f"{path}: '{key}' must be an object; found {type(model).__name__}.")
    if key == "flow":
        layers = model.get("layers")
        if not isinstance(layers, list) or not all(isinstance(la, dict) for la in layers):
            raise ValueError(f"{path}: 'flow' must hold 'layers', a list of layer configs.")
    check_classes(model, path)
    return config, key


def _check_depth(config: Any, path: Path) -> None:
    stack = [(config, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"{path} nests deeper than {MAX_DEPTH} levels.")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _objects(config: Any):
    """Every JSON object inside ``config`` (depth-first, iteratively)."""
    stack = [config]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            yield value
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def check_classes(config: Any, path: Path | str = "config") -> None:
    """Refuses configs that name anything but nfzoo's registered classes and Keras's own, or
    name a class without its module and config."""
    for obj in _objects(config):
        if "class_name" not in obj:
            continue
        module, registered = obj.get("module"), obj.get("registered_name")
        if not isinstance(module, str) or not isinstance(obj.get("config"), dict):
            raise ValueError(
                f"{path}: the object of class_name {obj['class_name']!r} must name its "
                "'module' (a string) and its 'config' (an object)."
            )
        if not (module == "keras" or module.startswith(("keras.", "nfzoo."))):
            raise ValueError(f"pretrained config names a class outside nfzoo/Keras: {module}")
        if registered is not None and not str(registered).startswith("nfzoo>"):
            raise ValueError(f"pretrained config names an unknown class: {registered}")


def _stored_shapes(weights: Path) -> tuple[list[tuple[int, ...]], dict[str, int]]:
    """The shapes of the model's arrays in a Keras weights file (optimizer state left out),
    and the number of sub-groups of each top-level group."""
    import h5py

    shapes: list[tuple[int, ...]] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and not name.startswith("optimizer/"):
            shapes.append(tuple(int(d) for d in obj.shape))

    try:
        with h5py.File(weights, "r") as f:
            f.visititems(visit)
            groups = {k: len(v) for k, v in f.items() if isinstance(v, h5py.Group)}
    except OSError as e:
        raise ValueError(f"{weights} is not a readable HDF5 weights file ({e}).") from None
    return shapes, groups


def _sizes(config: Any, keys) -> list[tuple[str, int]]:
    found = []
    for obj in _objects(config):
        for key in keys:
            value = obj.get(key)
            values = value if isinstance(value, list) else [value]
            found += [(key, v) for v in values if isinstance(v, int) and not isinstance(v, bool)]
    return found


def _shapes(config: Any, path: Path) -> list[tuple[str, list]]:
    """The shapes under ``SHAPE_KEYS``: lists of integers or null (a list of such lists for
    a layer of several inputs). Anything else there is refused: Keras builds from a
    dimension of 1139422852.0 as readily as from 2."""
    found = []
    for obj in _objects(config):
        for key in SHAPE_KEYS:
            if obj.get(key) is None:
                continue
            shape = obj[key]
            shapes = (
                shape
                if isinstance(shape, list) and shape and all(isinstance(d, list) for d in shape)
                else [shape]
            )
            for one in shapes:
                if not isinstance(one, list) or not all(
                    d is None or (isinstance(d, int) and not isinstance(d, bool)) for d in one
                ):
                    raise ValueError(
                        f"{path} gives {key} {json.dumps(one)[:80]}: a shape is a list of "
                        "integers (or null for the batch)."
                    )
                found.append((key, one))
    return found


def check_against_weights(config: dict, key: str, weights: Path, path: Path) -> None:
    """Refuses a config whose sizes the weights file does not bear out (module docstring)."""
    shapes, groups = _stored_shapes(weights)
    dims = {d for shape in shapes for d in shape}
    largest = max(dims, default=0)
    model = config[key]
    sizes = _sizes(model, BOUNDED_KEYS)
    for name, shape in _shapes(model, path):
        size = math.prod(d for d in shape if d is not None)
        if size > MAX_EVENT_SIZE or any(d is not None and d < 0 for d in shape):
            raise ValueError(
                f"{path} gives {name} {shape}: events hold at most {MAX_EVENT_SIZE} values, "
                "and dimensions are not negative."
            )
        if shape and shape[-1] is not None:
            sizes.append((name, shape[-1]))
    for name, value in _sizes(model, WIDTH_KEYS):
        if value not in dims:
            raise ValueError(
                f"{path} gives {name} {value}, but no array in {weights.name} has a dimension "
                f"of {value} (stored dimensions: {sorted(dims)[:12]}): the config does not "
                "describe these weights."
            )
    for name, value in sizes:
        if value > largest:
            raise ValueError(
                f"{path} gives {name} {value}, larger than any dimension stored in "
                f"{weights.name} (at most {largest}): the config does not describe these "
                "weights."
            )
    if key == "flow" and "flow_layers" in groups and len(model["layers"]) != groups["flow_layers"]:
        raise ValueError(
            f"{path} lists {len(model['layers'])} layers; {weights.name} holds weights for "
            f"{groups['flow_layers']}: the config does not describe these weights."
        )
