"""Kinds of pretrained entry. A kind is a small registered object (``Kind``) that knows how
an entry of that kind is built and trained from its preset, which metrics it reports (its
headline, and those recomputed from the shipped weights), its lines of the card, and whether
it exports. A new kind of entry is one more module here that registers itself.

Kinds: "density" (a Flow fitted to data by maximum likelihood; headline test NLL),
"reverse-kl" (a Flow fitted to an unnormalised density; headline KL(q || p)), "flow-vae" (a
FlowVAE; headline test importance-weighted NLL), "npe" (a conditional Flow q(theta | x)
trained by neural posterior estimation; headline mean C2ST over the task's observations).
"""

from nfzoo.kinds import density, flow_vae, npe, reverse_kl
from nfzoo.kinds.base import (
    KINDS,
    Kind,
    Metric,
    Trained,
    card,
    machine,
    record,
    register_kind,
    stale_declaration,
)

__all__ = [
    "KINDS",
    "Kind",
    "Metric",
    "Trained",
    "card",
    "density",
    "flow_vae",
    "machine",
    "npe",
    "record",
    "register_kind",
    "reverse_kl",
    "stale_declaration",
]
