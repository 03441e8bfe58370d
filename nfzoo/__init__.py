"""nfzoo: normalizing flows for TensorFlow / Keras 3, every layer also a TFP bijector.

    import nfzoo
    flow = nfzoo.build("maf", 2)          # or nfzoo.build("glow", (8, 8, 1))
    flow.fit(x, epochs=10)
    flow.log_prob(x), flow.sample(100)
    flow = nfzoo.load("maf-moons")         # a pretrained entry (nfzoo.list_pretrained())

``import nfzoo`` itself is light: TensorFlow is imported, with every nfzoo layer registered
with Keras, the first time a name that needs it is used (``nfzoo.build``, ``nfzoo.Flow``,
``nfzoo.layers``, ...). That keeps ``nfzoo --help`` and ``nfzoo list`` to a fraction of a
second. In a fresh process that only reloads a ``.keras`` file, touch nfzoo first
(``import nfzoo.layers``) so that Keras finds its classes.
"""

import importlib
import importlib.util

__version__ = "0.1.0"

#: public names -> the module defining them
_NAMES = {
    "BijectorLayer": "bijector_layer",
    "Flow": "flow",
    "export": "exporting",
    "architecture": "architectures",
    "build": "architectures",
    "check_options": "architectures",
    "list_architectures": "architectures",
    "list_pretrained": "pretrained",
    "load": "pretrained",
    "pretrained_entry": "pretrained",
    "NonFiniteLossError": "flow",
}
_SUBMODULES = ("data", "kinds", "layers", "npe", "presets", "targets", "vae", "vi")
#: modules that import without TensorFlow (the command line lists entries with them)
_LIGHT = (
    "arrays",
    "cli",
    "config_checks",
    "console",
    "data",
    "files",
    "kinds",
    "presets",
    "pretrained",
    "registry",
)
#: what ``import nfzoo`` imported before it was light: importing these registers every class
_LIBRARY = ("layers", "architectures", "flow", "pretrained", "exporting", "targets", "vae", "vi")

__all__ = sorted([*_NAMES, *_SUBMODULES])


def __getattr__(name: str):
    module = _NAMES.get(name, name)
    if importlib.util.find_spec(f"nfzoo.{module}") is None:
        raise AttributeError(f"module 'nfzoo' has no attribute {name!r}")
    # a public name (nfzoo.build, nfzoo.Flow, ...) loads the whole library, as an eager import
    # would have had it; a module (nfzoo.layers, or the library's own ``from nfzoo import
    # _compat``, which asks this function first) is imported alone, so that a module that is
    # half-way through its import never starts the library over
    if name in _NAMES and module not in _LIGHT:
        for heavy in _LIBRARY:
            importlib.import_module(f"nfzoo.{heavy}")
    value = importlib.import_module(f"nfzoo.{module}")
    if name in _NAMES:
        value = getattr(value, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
