"""What every kind of pretrained entry provides (``Kind``), the registry of kinds, and the
two things written the same way for every kind: an entry's record (config.json metadata) and
its card."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from nfzoo.registry import Registry

if TYPE_CHECKING:
    from nfzoo.model_base import PretrainedModel
    from nfzoo.presets import Preset

__all__ = [
    "KINDS",
    "Kind",
    "Metric",
    "Trained",
    "card",
    "machine",
    "record",
    "register_kind",
    "stale_declaration",
]


@dataclass(frozen=True)
class Metric:
    """A metric of an entry: its key in the entry's metrics, a label for people, and how far
    a recomputation from the shipped weights may land from the recorded value (float32
    arithmetic on another machine or thread count moves the last digits)."""

    key: str
    label: str
    atol: float = 1e-4
    rtol: float = 0.0

    def agrees(self, recorded: float, recomputed: float) -> bool:
        return abs(recomputed - recorded) <= self.atol + self.rtol * abs(recorded)


@dataclass
class Trained:
    """What training a preset produced: the model, the metrics measured right after training,
    and the facts of the run (steps run, wall time, machine, split sizes, ...)."""

    model: Any
    metrics: dict[str, float]
    run: dict[str, Any] = field(default_factory=dict)


class Kind:
    """A kind of pretrained entry: how its model is built and trained from a preset, which
    metrics it reports (the headline and those recomputed from the shipped weights), the
    kind's lines of the card, and whether it exports. Subclasses register an instance with
    ``register_kind``; nothing else in nfzoo branches on kinds."""

    #: the kind's name, as presets and records name it
    name: ClassVar[str] = ""
    #: the key of the model's Keras config in config.json ("flow", "flow_vae")
    model_key: ClassVar[str] = ""
    #: the metric ``nfzoo list`` shows (lower is better for every kind)
    headline: ClassVar[Metric]
    #: why entries of this kind are not exported by ``nfzoo.export``, or None if they are
    not_exportable: ClassVar[str | None] = None

    @property
    def model_class(self) -> type:
        raise NotImplementedError

    def architectures(self) -> list[str]:
        """The architecture names a preset of this kind may use."""
        raise NotImplementedError

    def build(self, preset: Preset) -> PretrainedModel:
        """The preset's untrained model."""
        raise NotImplementedError

    def current_options(self, architecture: str, options: dict[str, Any]) -> dict[str, Any]:
        """An entry's recorded ``architecture`` ``options`` under the current option names: a
        record keeps the names it was written with (its digest is recorded). Kinds whose
        options name an architecture of ``nfzoo.architectures`` translate them through
        ``architectures.current_option_names``; the others' options have no former names."""
        return dict(options)

    def train(self, preset: Preset, verbose: int = 2) -> Trained:
        """Trains the preset from scratch and measures it."""
        raise NotImplementedError

    def checked(self, preset: Preset) -> tuple[Metric, ...]:
        """The metrics ``evaluate`` recomputes from a model's weights."""
        raise NotImplementedError

    def evaluate(self, model: PretrainedModel, preset: Preset) -> dict[str, float]:
        """Recomputes the ``checked`` metrics of ``model`` with the preset's protocol."""
        raise NotImplementedError

    def card_facts(self, preset: Preset, record: dict[str, Any]) -> list[str]:
        """The kind's Markdown bullets of the card (data, metrics, training), from the
        preset and the entry's record."""
        raise NotImplementedError


KINDS: Registry[Kind] = Registry("kind of pretrained entry")


def register_kind(kind: Kind) -> Kind:
    KINDS.add(kind.name, kind)
    return kind


def machine() -> str:
    """The machine a run happened on, for records and cards."""
    import tensorflow as tf

    return f"{platform.machine()}, {os.cpu_count()} cores, TF {tf.__version__}"


def record(preset: Preset, metrics: dict[str, float], run: dict[str, Any]) -> dict[str, Any]:
    """An entry's record (the metadata of its config.json): the preset's declaration, the
    metrics measured and the facts of the run, and the command that reproduces it."""
    return {
        **preset.declaration(),
        "metrics": metrics,
        "run": run,
        "command": f"python tools/train_zoo.py {preset.name}",
    }


def stale_declaration(preset: Preset, record: dict[str, Any]) -> list[str]:
    """The keys of ``preset.declaration()`` whose value the entry's ``record`` (its
    config.json) holds otherwise, i.e. what changed in the preset since the entry was
    trained. The recorded architecture options are compared under the current option names
    (``Kind.current_options``), so a renamed option is no change."""
    recorded = dict(record)
    arch = record.get("architecture")
    name = arch.get("name") if isinstance(arch, dict) else None
    if isinstance(arch, dict) and isinstance(name, str) and isinstance(arch.get("options"), dict):
        options = KINDS.get(preset.kind).current_options(name, arch["options"])
        recorded["architecture"] = {**arch, "options": options}
    return [key for key, value in preset.declaration().items() if recorded.get(key) != value]


def card(preset: Preset, record: dict[str, Any]) -> str:
    """An entry's card (card.md), for every kind: title, summary, the architecture, the kind's
    facts, how to reproduce, load and check it."""
    kind = KINDS.get(preset.kind)
    arch = record["architecture"]
    options = json.dumps(arch["options"])
    aliases = _and(f"`{a}`" for a in preset.aliases)
    checked = _and(metric.label for metric in kind.checked(preset))
    lines = [
        f"# {preset.name}",
        "",
        f"{preset.summary}.",
        "",
        f"- kind: `{preset.kind}`; architecture: `{arch['name']}` with options `{options}`, "
        f"events of shape {tuple(arch['event_shape'])}",
        *kind.card_facts(preset, record),
        f"- reproduce: `{record['command']}`",
        "",
        f'Load with `nfzoo.load("{preset.name}")` (a {kind.model_class.__name__})'
        + (f"; it also loads by its former name {aliases}." if aliases else "."),
        f"`nfzoo verify {preset.name}` recomputes the {checked} from the shipped weights and "
        "compares them with the figures above.",
        "",
    ]
    return "\n".join(lines)


def _and(words) -> str:
    """Joins words as "a", "a and b", "a, b and c"."""
    words = list(words)
    return " and ".join([", ".join(words[:-1]), words[-1]]) if len(words) > 1 else "".join(words)
