"""The zoo's recipes, declared as data: one ``Preset`` per pretrained entry.

A preset says everything that makes an entry: the architecture (a name of
``nfzoo.list_architectures()``, or ``flow-vae``) with its options and event shape, the data
set and its split (or the target density), the training budget and seed, the protocol of its
evaluation, and its kind (``nfzoo.kinds``: how an entry of that kind is trained, measured and
described). ``tools/train_zoo.py NAME`` trains the preset ``NAME``; the entry's record
(config.json) and card are written from the preset and the metrics that run measured, and
``nfzoo verify NAME`` recomputes those metrics from the shipped weights.

    preset = nfzoo.presets.get("maf-moons")
    preset.training             # {"steps": 3000, "batch_size": 512, ...}
    flow = preset.build()       # the same architecture, untrained

Names are derived, never written by hand: ``<architecture>[-<variant>]-<data>``, e.g.
``glow-1d-moons`` (architecture ``glow-1d`` on two moons), ``realnvp-image-digits``,
``planar-u1`` (the data is the target U1) and ``flow-vae-iaf-digits`` (architecture
``flow-vae``, variant: its posterior). Former names stay valid as aliases.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nfzoo.registry import Registry

if TYPE_CHECKING:  # presets are declarations: importing them needs no TensorFlow
    from nfzoo.model_base import PretrainedModel

__all__ = [
    "PRESETS",
    "Preset",
    "density",
    "flow_vae",
    "get",
    "list_presets",
    "npe",
    "reverse_kl",
]


@dataclass(frozen=True)
class Preset:
    """The declaration of one pretrained entry (see the module docstring).

    Attributes:
      architecture: the architecture's registered name ("maf", "glow", ..., "flow-vae").
      data: the data set or target, as it appears in the name ("moons", "digits", "u1").
      kind: the name of the entry's kind in ``nfzoo.kinds.KINDS``.
      summary: one line for people.
      event_shape: the shape of one event (data point), e.g. (2,) or (8, 8, 1).
      options: the architecture's options (``nfzoo.build(architecture, event_shape,
        **options)``), in the current option vocabulary (``nfzoo.architectures``); a record
        written under former names is compared through ``nfzoo.kinds.stale_declaration``.
      dataset: the data set and split (``nfzoo.data.load_dataset``), or {"target": name}.
      training: the training budget and seed.
      evaluation: how the metrics are measured (noise seeds, sample counts).
      variant: what tells entries of one architecture on one data set apart (a flow-VAE's
        posterior); "" when nothing does.
      aliases: former names that still load the entry.
    """

    architecture: str
    data: str
    kind: str
    summary: str
    event_shape: tuple[int, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    dataset: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    evaluation: Mapping[str, Any] = field(default_factory=dict)
    variant: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return "-".join(part for part in (self.architecture, self.variant, self.data) if part)

    def declaration(self) -> dict[str, Any]:
        """The preset as the JSON record of an entry holds it (lists for tuples, copies)."""
        declared = {
            "name": self.name,
            "kind": self.kind,
            "summary": self.summary,
            "architecture": {
                "name": self.architecture,
                "event_shape": list(self.event_shape),
                "options": self.options,
            },
            "dataset": self.dataset,
            "training": self.training,
            "evaluation": self.evaluation,
        }
        return json.loads(json.dumps(declared))

    def build(self) -> PretrainedModel:
        """The untrained model of this preset (a Flow, or a FlowVAE), seeded as in training."""
        from nfzoo.kinds import KINDS

        return KINDS.get(self.kind).build(self)


PRESETS: Registry[Preset] = Registry("preset")


def _register(preset: Preset) -> Preset:
    PRESETS.add(preset.name, preset)
    for alias in preset.aliases:
        PRESETS.alias(alias, preset.name)
    return preset


def get(name: str) -> Preset:
    """The preset called ``name`` (or one of its aliases)."""
    return PRESETS.get(name)


def list_presets() -> list[Preset]:
    """Every declared preset, sorted by name (shipped or not: ``nfzoo.list_pretrained()``
    lists the shipped entries)."""
    return [PRESETS.get(name) for name in PRESETS.names()]


# ---- the three kinds' protocols: the factories below hold every default -------------------


def density(
    architecture: str,
    data: str,
    summary: str,
    *,
    event_shape: Sequence[int],
    dataset: Mapping[str, Any],
    options: Mapping[str, Any] | None = None,
    steps: int = 3000,
    batch_size: int = 512,
    learning_rate: float = 1e-3,
    patience: int | None = None,
    seed: int = 0,
    evaluation: Mapping[str, Any] | None = None,
    aliases: Sequence[str] = (),
) -> Preset:
    """A flow fitted to data by maximum likelihood (Adam; with ``patience``, validation NLL
    every 100 steps keeps the best weights and stops after ``patience`` checks without
    progress)."""
    return Preset(
        architecture=architecture,
        data=data,
        kind="density",
        summary=summary,
        event_shape=tuple(event_shape),
        options=copy.deepcopy(dict(options or {})),
        dataset=dict(dataset),
        training={
            "steps": steps,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "patience": patience,
            "seed": seed,
        },
        evaluation=dict(evaluation or {}),
        aliases=tuple(aliases),
    )


#: Rezende & Mohamed's figure 3 sizes: K = 32 planar (or radial) layers; Sylvester flows as
#: built by default
REVERSE_KL_OPTIONS: dict[str, dict[str, Any]] = {
    "planar": {"num_layers": 32},
    "radial": {"num_layers": 32},
}


def reverse_kl(
    architecture: str,
    target: str,
    *,
    options: Mapping[str, Any] | None = None,
    steps: int = 4000,
    num_samples: int = 256,
    learning_rate: float = 3e-3,
    anneal_fraction: float = 0.25,
    seed: int = 0,
    eval_samples: int = 100_000,
    eval_seed: int = 1,
    aliases: Sequence[str] = (),
) -> Preset:
    """A 2-D flow fitted by reverse KL to the unnormalised target ``target``
    (``nfzoo.targets.get``): ``steps`` Adam steps of ``num_samples`` fresh samples, beta
    annealed from 0.01 to 1 over the first ``anneal_fraction`` of the steps (Rezende & Mohamed
    2015, section 6.1), noise seed ``seed``; measured by ``nfzoo.vi.diagnostics`` on
    ``eval_samples`` samples from ``eval_seed``."""
    if options is None:
        options = REVERSE_KL_OPTIONS.get(architecture, {})
    return Preset(
        architecture=architecture,
        data=target,
        kind="reverse-kl",
        summary=f"{architecture} fitted by reverse KL to the energy {target.upper()} "
        "(Rezende & Mohamed 2015, figure 3)",
        event_shape=(2,),
        options=copy.deepcopy(dict(options)),
        dataset={"target": target},
        training={
            "steps": steps,
            "num_samples": num_samples,
            "learning_rate": learning_rate,
            "anneal_fraction": anneal_fraction,
            "seed": seed,
        },
        evaluation={"num_samples": eval_samples, "seed": eval_seed},
        aliases=tuple(aliases),
    )


def flow_vae(
    posterior: str,
    *,
    latent_dim: int = 8,
    hidden_units: Sequence[int] = (128, 128),
    num_flows: int = 4,
    steps: int = 3000,
    batch_size: int = 100,
    learning_rate: float = 1e-3,
    seed: int = 0,
    elbo_samples: int = 100,
    elbo_seed: int = 1,
    iw_samples: int = 500,
    iw_seed: int = 2,
    aliases: Sequence[str] = (),
) -> Preset:
    """A ``nfzoo.vae.FlowVAE`` with ``posterior`` on binarised digits: Adam, batch
    ``batch_size``, ``steps`` steps (whole epochs), no KL warm-up, no early stopping; measured
    by a ``elbo_samples``-sample ELBO (noise seed ``elbo_seed``) and the importance-weighted
    bound with k = ``iw_samples`` (noise seed ``iw_seed``)."""
    return Preset(
        architecture="flow-vae",
        variant=posterior,
        data="digits",
        kind="flow-vae",
        summary=f"Flow-VAE on binarised 8x8 digits, posterior {posterior!r}",
        event_shape=(64,),
        options={
            "posterior": posterior,
            "latent_dim": latent_dim,
            "hidden_units": list(hidden_units),
            "num_flows": num_flows,
        },
        dataset={"name": "binarized-digits", "seed": 0},
        training={
            "steps": steps,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "seed": seed,
        },
        evaluation={
            "elbo_samples": elbo_samples,
            "elbo_seed": elbo_seed,
            "iw_samples": iw_samples,
            "iw_seed": iw_seed,
        },
        aliases=tuple(aliases),
    )


#: parameters (theta) and data (x) dimensions of the NPE tasks (``nfzoo.npe.get_task``);
#: the "npe" kind checks them against the task before training
NPE_TASK_DIMS: dict[str, tuple[int, int]] = {
    "gaussian-linear": (10, 10),
    "two-moons": (2, 2),
    "gaussian-mixture": (2, 2),
    "slcp": (5, 8),
}


def npe(
    task: str,
    *,
    flow: str = "nsf",
    options: Mapping[str, Any] | None = None,
    num_simulations: int = 100_000,
    batch_size: int = 512,
    learning_rate: float = 1e-3,
    validation_fraction: float = 0.1,
    patience: int = 10,
    max_epochs: int = 150,
    seed: int = 0,
    observations: Sequence[int] = tuple(range(1, 11)),
    eval_samples: int = 1000,
    eval_seed: int = 0,
    aliases: Sequence[str] = (),
) -> Preset:
    """An amortized posterior q(theta | x) of the simulation-based inference task ``task``
    (``nfzoo.npe.get_task``): the conditional ``flow`` (``options`` default to
    ``nfzoo.npe.NPE_DEFAULTS[flow]``, sbi's 5 layers of 50 x 50) trained by
    ``nfzoo.npe.train_npe`` on ``num_simulations`` simulated pairs (simulation seed 10,000 +
    ``seed``), batch ``batch_size``, Adam ``learning_rate``, ``validation_fraction`` held out,
    early stopping after ``patience`` epochs without progress (best weights kept), at most
    ``max_epochs``; measured by C2ST (``nfzoo.npe.evaluate_npe``) between ``eval_samples``
    posterior samples and as many reference samples (seed ``eval_seed``) on each of the
    task's fixed ``observations``."""
    from nfzoo.npe.defaults import NPE_DEFAULTS  # constants only: listing entries stays light

    theta_dim, x_dim = NPE_TASK_DIMS[task]
    if options is None:
        options = {k: list(v) if isinstance(v, tuple) else v for k, v in NPE_DEFAULTS[flow].items()}
    return Preset(
        architecture="npe",
        data=task,
        kind="npe",
        summary=f"Amortized posterior q(theta | x) of the {task} task (NPE, conditional {flow})",
        event_shape=(theta_dim,),
        options={"flow": flow, "context_dim": x_dim, **copy.deepcopy(dict(options))},
        dataset={"task": task, "num_simulations": num_simulations},
        training={
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "validation_fraction": validation_fraction,
            "patience": patience,
            "max_epochs": max_epochs,
            "seed": seed,
        },
        evaluation={
            "observations": list(observations),
            "num_samples": eval_samples,
            "seed": eval_seed,
        },
        aliases=tuple(aliases),
    )


# ---- the zoo ------------------------------------------------------------------------------

#: 20,000 / 2,000 / 10,000 points drawn with seeds 0 / 1 / 2
TOY_SPLIT = {"n_train": 20000, "n_val": 2000, "n_test": 10000, "seed": 0}
_WIDE = {"hidden_units": [128, 128]}

for _arch in ("maf", "realnvp", "nice", "iaf", "glow-1d"):
    _register(
        density(
            _arch,
            "moons",
            f"{_arch} on two moons (one entry per architecture, to compare)",
            event_shape=(2,),
            dataset={"name": "moons", **TOY_SPLIT},
            options=_WIDE,
            aliases=("glow1d-moons",) if _arch == "glow-1d" else (),
        )
    )

#: The best architecture per 2-D set: MAF (8 x [128, 128]), RealNVP (8 layers x [128, 128])
#: and Glow-1d (8 steps x [128, 128]) were each trained with the budget below (4000 steps,
#: seed 0) and compared by validation NLL (nats):
#:   set           maf     realnvp  glow-1d
#:   circles       3.202   3.209    3.318
#:   8gaussians    1.879   1.843    1.934
#:   pinwheel      2.467   2.511    2.459
#:   checkerboard  3.848   3.831    NaN (diverged at step 1973, before Flow.compile clipped
#:                                  gradients by default; tests/test_gradient_spike.py; not rerun)
#:   2spirals      3.072   2.818    2.961
BEST_2D = {
    "circles": "maf",
    "8gaussians": "realnvp",
    "pinwheel": "glow-1d",
    "checkerboard": "realnvp",
    "2spirals": "realnvp",
}
_OPTIONS_2D = {
    "maf": {"num_layers": 8, "hidden_units": [128, 128]},
    "realnvp": {"num_layers": 8, "hidden_units": [128, 128]},
    "glow-1d": {"num_layers": 8, "hidden_units": [128, 128]},
}
for _set, _arch in BEST_2D.items():
    _register(
        density(
            _arch,
            _set,
            f"{_arch} on the 2-D {_set} density (the best of three by validation NLL)",
            event_shape=(2,),
            dataset={"name": _set, **TOY_SPLIT},
            options=_OPTIONS_2D[_arch],
            steps=4000,
            aliases=(f"glow1d-{_set}",) if _arch == "glow-1d" else (),
        )
    )

_register(
    density(
        "maf",
        "digits",
        "MAF on sklearn's 8x8 digits as 64-d dequantised vectors (tabular)",
        event_shape=(64,),
        dataset={"name": "digits", "seed": 0},
        # chosen on the validation split among MAF 5x[256, 256] / 8x[128, 128] / 10x[64, 64]
        # at lr 1e-3 and 5x[128, 128] at lr 3e-4 (this one); with 1000 examples, larger
        # models overfit within a few hundred steps
        options={"num_layers": 5, "hidden_units": [128, 128]},
        steps=5000,
        batch_size=100,
        learning_rate=3e-4,
        patience=5,
    )
)

#: digits as [8, 8, 1] images of 17-level counts; the metric is test bits/dim averaged over
#: 4 fixed dequantizations from seed 100 (validation: seed 1100). Glow and multi-scale
#: RealNVP at the sizes of tools/image_ablation.py; validation bits/dim every 100 steps keeps
#: the best weights (with 1000 training images they overfit).
_DIGIT_IMAGES: dict[str, Any] = {
    "event_shape": (8, 8, 1),
    "dataset": {"name": "digits-images", "seed": 0},
    "evaluation": {"dequantization_draws": 4, "seed": 100},
    "steps": 3000,
    "batch_size": 64,
    "learning_rate": 1e-3,
    "patience": 5,
}
_register(
    density(
        "glow",
        "digits",
        "Glow (2 levels x 8 steps, LU 1x1 convs, affine couplings) on 8x8 digit images",
        options={
            "num_scales": 2,
            "layers_per_scale": 8,
            "permutation": "lu",
            "hidden_channels": 64,
            "num_levels": 17,
        },
        **_DIGIT_IMAGES,
    )
)
_register(
    density(
        "realnvp-image",
        "digits",
        "Multi-scale RealNVP (checkerboard and channel couplings) on 8x8 digit images",
        options={"num_scales": 2, "hidden_channels": 64, "num_levels": 17},
        aliases=("realnvp-digits",),
        **_DIGIT_IMAGES,
    )
)

#: reverse KL to Rezende & Mohamed's energies (figure 3): planar K = 32 and the Sylvesters
VI_ARCHITECTURES = (
    "planar",
    "sylvester-orthogonal",
    "sylvester-householder",
    "sylvester-triangular",
)
for _target in ("u1", "u2", "u3", "u4"):
    for _arch in VI_ARCHITECTURES:
        _register(reverse_kl(_arch, _target))

#: flow-VAEs on binarised digits, one per posterior (nfzoo.vae.POSTERIORS), seed 0
for _posterior in (
    "none",
    "planar",
    "iaf",
    "sylvester-orthogonal",
    "sylvester-householder",
    "sylvester-triangular",
):
    _register(flow_vae(_posterior, aliases=(f"vae-digits-{_posterior}",)))

#: amortized posteriors (NPE) of the four tasks of nfzoo.npe, nsf at 10^5 simulations, seed 0.
#: gaussian-linear's C2ST (10-d) costs about a minute per observation at 500 + 500 samples on
#: a 2-core CPU (and twice that at 1000), so its entry is measured with 500.
for _task in ("two-moons", "gaussian-mixture", "slcp"):
    _register(npe(_task))
_register(npe("gaussian-linear", eval_samples=500))
