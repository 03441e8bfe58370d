"""nfzoo: normalizing flows for TensorFlow / Keras 3, every layer also a TFP bijector.

import nfzoo
flow = nfzoo.build("maf", 2)          # or nfzoo.build("glow", (8, 8, 1))
flow.fit(x, epochs=10)
flow.log_prob(x), flow.sample(100)
flow = nfzoo.load("maf-moons")         # a pretrained entry (nfzoo.list_pretrained())
"""

from nfzoo import data, kinds, layers, npe, presets, targets, vae, vi
from nfzoo.bijector_layer import BijectorLayer
from nfzoo.exporting import export
from nfzoo.flow import Flow
from nfzoo.models import architecture, build, list_architectures
from nfzoo.pretrained import list_pretrained, load, pretrained_entry

__version__ = "0.1.0"

__all__ = [
    "BijectorLayer",
    "Flow",
    "architecture",
    "build",
    "data",
    "export",
    "kinds",
    "layers",
    "list_architectures",
    "list_pretrained",
    "load",
    "npe",
    "presets",
    "pretrained_entry",
    "targets",
    "vae",
    "vi",
]
