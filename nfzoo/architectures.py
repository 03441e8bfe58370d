"""Builders of named flow architectures, with paper defaults scaled to small problems.

``build(arch, event_shape, **options)`` returns a ready (built, untrained) ``Flow``;
``list_architectures()`` lists the names and ``architecture(name).options`` the options of
one with their defaults. Vector architectures take an event dimension D (``build("maf", 2)``),
image architectures an image shape [H, W, C] (``build("glow", (8, 8, 1))``). The same
registry drives the contract test suite, so a new builder is tested by being registered.

One option vocabulary serves every builder, ``nfzoo train --option K=V`` and the presets
(``nfzoo.presets``): a name means one thing wherever it is taken.

    option            meaning                                          builders
    num_layers        number of transforms (couplings, MADE layers,    every vector builder
                      Glow steps, planar / radial / Sylvester layers)
    layers_per_scale  Glow steps per scale                             glow
    num_scales        number of scales (glow: one squeeze each;        glow, realnvp-image
                      realnvp-image: num_scales - 1 squeezes)
    hidden_units      hidden widths of the MLP / MADE conditioner,     nice, realnvp, nsf, maf,
                      e.g. [64, 64] (its depth is their number)        iaf, nsf-ar, glow-1d
    hidden_channels   width of the ConvNet conditioner                 glow, realnvp-image
    activation        hidden activation of the conditioners, a Keras   every builder above
                      activation name ("relu")
    coupling          "affine" or "additive"                           glow, realnvp-image
    permutation       channel mixing: "reverse", "shuffle" (fixed),    glow
                      "1x1" (slogdet), "lu" (Glow's), "qr"
    bins, bound       K spline bins on [-bound, bound], identity       nsf, nsf-ar
                      outside
    num_levels, alpha grey levels K of dequantized data in [0, K]:     glow, realnvp-image
                      RealNVP's logit pre-processing (``Logit``) next
                      to the data, with margin alpha; None: none
    actnorm           an ActNorm after each coupling                   realnvp-image
    num_vectors       M orthonormal columns (default D)                sylvester-orthogonal
    num_reflections   Householder reflections (default D)              sylvester-householder

``build`` itself takes, for every architecture, ``dtype`` ("float32" or "float64"), ``seed``
(initialisers, orderings, permutations), ``name`` and ``standardize``; the conditional ones
(nice, realnvp, nsf, maf, iaf, nsf-ar, glow-1d; ``list_architectures(conditional=True)``)
also ``context_dim=C``: every coupling conditioner then reads [x_a, c] and every MADE reads c
through an unmasked input, and ``conditional_base=True`` adds ``ConditionalAffine`` next to
the base noise, which makes the base N(mu(c), diag sigma(c)^2).

"levels" only ever means grey levels. Former names (``Architecture.renamed``: glow-1d's
``num_steps``; glow's ``levels`` and ``steps_per_level``; realnvp-image's ``levels``) still
work for one release with a FutureWarning that names the current one, and
``current_option_names`` reads records written under them. An unknown option is a ValueError
that names the architecture, lists its options with their defaults and suggests the likeliest
intended one, also for the names of other libraries (``transforms``, ``hidden_features``,
``depth``, ``act``, ...). ``check_options`` validates options without building.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import random
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from nfzoo.flow import Flow
from nfzoo.layers import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    ConditionalAffine,
    FactorOut,
    ImageAdditiveCoupling,
    ImageAffineCoupling,
    InverseAutoregressive,
    InvertibleLinear,
    Logit,
    LULinear,
    MaskedAutoregressive,
    Permute,
    Planar,
    QRLinear,
    Radial,
    SplineAutoregressive,
    SplineCoupling,
    SylvesterHouseholder,
    SylvesterOrthogonal,
    SylvesterTriangular,
)
from nfzoo.layers.reshape import Squeeze
from nfzoo.ops import check_seed
from nfzoo.registry import Registry

__all__ = [
    "Architecture",
    "architecture",
    "build",
    "check_options",
    "current_option_names",
    "list_architectures",
]


@dataclass(frozen=True)
class Architecture:
    """A registered builder: ``builder(event, dtype=..., seed=..., **options) -> layers``,
    where ``event`` is D for vector architectures (``event_rank`` 1) and (H, W, C) for image
    architectures (``event_rank`` 3). ``example_options`` build a small instance of it on
    ``example_shape`` (the contract tests use them)."""

    name: str
    builder: Callable[..., list]
    summary: str
    paper: str
    event_rank: int = 1
    example_shape: tuple[int, ...] = (3,)
    example_options: tuple[tuple[str, object], ...] = ()
    #: whether the builder takes ``context_dim`` (conditional flows)
    conditional: bool = False
    #: (former name, current name) of each renamed option: the former name still works, with
    #: a FutureWarning, for one release
    renamed: tuple[tuple[str, str], ...] = ()

    @property
    def options(self) -> dict[str, object]:
        """The builder's options and their defaults (what ``build(arch, ..., **options)``
        accepts besides the arguments ``build`` itself takes)."""
        params = list(inspect.signature(self.builder).parameters.values())[1:]  # after event
        return {p.name: p.default for p in params if p.name not in _BUILDER_ARGUMENTS}

    @property
    def former_names(self) -> dict[str, str]:
        """Former option name -> current name."""
        return dict(self.renamed)


#: arguments ``build`` passes to every builder (``context_dim``: to the conditional ones)
_BUILDER_ARGUMENTS = ("dtype", "seed", "context_dim")
#: what ``build`` takes itself, for every architecture (``check_options`` lets them through)
BUILD_ARGUMENTS = ("dtype", "seed", "name", "context_dim", "conditional_base", "standardize")
#: names that mean one thing, here or in peer libraries (zuko, nflows, sbi, normflows, TFP,
#: Pyro), for the suggestion in the error on an unknown option: the first group that holds
#: the unknown name and one of the architecture's options gives the suggestion, so a name
#: may sit in several groups (``depth``: the number of transforms, else Glow's steps per
#: scale) and each group may carry a note
_SYNONYMS: tuple[tuple[frozenset[str], str], ...] = tuple(
    (frozenset(names.split()), note)
    for names, note in (
        (
            "num_layers num_steps num_transforms transforms num_flows n_flows flows flow_length"
            " n_layers num_bijectors depth num_couplings num_flow_steps steps_per_level"
            " layers_per_scale num_steps_per_block",
            "",
        ),
        (
            "layers_per_scale steps_per_level num_steps_per_block steps_per_scale"
            " layers_per_level num_steps num_layers depth n_steps",
            "",
        ),
        ("num_scales levels scales n_scales num_glow_blocks num_blocks n_levels", ""),
        (
            "hidden_units hidden_features hidden_dims hidden_sizes hidden_layer_sizes hidden"
            " units hidden_size hidden_dim width hidden_channels channels filters n_hidden",
            "",
        ),
        (
            "hidden_units num_blocks num_blocks_per_layer hidden_layers num_hidden_layers"
            " n_hidden_layers",
            "hidden_units lists the widths of the conditioners' layers, so its length is their"
            " depth; the number of transforms is num_layers",
        ),
        ("activation act activation_fn nonlinearity activation_function", ""),
        ("bins num_bins count_bins n_bins", ""),
        ("bound tail_bound tails_bound interval", ""),
        ("num_levels grey_levels gray_levels quantization_levels", ""),
        ("permutation ordering order mixing permute shuffle", ""),
        ("coupling coupling_type flow_coupling", ""),
        ("num_vectors num_ortho_vecs num_orthogonal", ""),
        ("num_reflections num_householder householder", ""),
        ("seed random_state rng", ""),
        ("context_dim context_features context_size cond_dim conditional_dim", ""),
        ("standardize normalize standardise", ""),
    )
)


def _suggestion(name: str, valid: Sequence[str]) -> str | None:
    """The likeliest intended option for the unknown ``name`` ("did you mean ..."), with a
    note where one helps."""
    groups = [(group, note) for group, note in _SYNONYMS if name in group]
    for group, note in groups:
        alike = [v for v in valid if v in group]
        if alike:
            return f"did you mean {alike[0]!r}?" + (f" {note}" if note else "")
    if groups:  # a known meaning that this architecture has no option for
        return None
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def _renamed(arch: str, entry: Architecture, options: Mapping, warn_at: int | None) -> dict:
    """``options`` with each former name (``entry.renamed``) replaced by the current one; a
    FutureWarning per former name when ``warn_at`` (its stacklevel) is set. A former and a
    current name of one option together are a ValueError."""
    former = entry.former_names
    out = {}
    for key, value in options.items():
        current = former.get(key)
        if current is None:
            out[key] = value
            continue
        if current in options:
            raise ValueError(
                f"{arch}: {key!r} is the former name of {current!r}; pass {current!r} only "
                f"(received both, {key}={value!r} and {current}={options[current]!r})."
            )
        if warn_at is not None:
            warnings.warn(
                f"{arch}: the option {key!r} is now called {current!r}; the former name "
                "stops working in the next release.",
                FutureWarning,
                stacklevel=warn_at,
            )
        out[current] = value
    return out


def _check_names(arch: str, entry: Architecture, options: Mapping) -> None:
    """ValueError naming the architecture, its valid options and the likeliest intended one
    for every option neither its builder nor ``build`` takes."""
    valid = entry.options
    conditional = ("context_dim", "conditional_base")
    takes = [a for a in BUILD_ARGUMENTS if entry.conditional or a not in conditional]
    unknown = [k for k in options if k not in valid and k not in BUILD_ARGUMENTS]
    if options.get("context_dim") is not None and not entry.conditional:
        raise ValueError(
            f"{arch} does not take a context; the conditional architectures are "
            f"{', '.join(list_architectures(conditional=True))}. Received "
            f"context_dim={options['context_dim']!r}."
        )
    if not unknown:
        return
    hints = []
    for k in unknown:
        alike = _suggestion(k, [*valid, *takes])
        hints.append(f"{k!r} ({alike})" if alike else repr(k))
    listing = ", ".join(f"{k}={v!r}" for k, v in valid.items()) or "none"
    raise ValueError(
        f"{arch} has no option {', '.join(hints)}. Its options (with defaults): {listing}; "
        f"build also takes {', '.join(takes[:-1])} and {takes[-1]}"
        + (
            f"; former names: {', '.join(f'{a} (now {b})' for a, b in entry.renamed)}"
            if entry.renamed
            else ""
        )
        + "."
    )


def check_options(arch: str, options: Mapping) -> dict:
    """Validates the options of ``build(arch, event_shape, **options)`` without building:
    returns them under their current names (a FutureWarning for each former name). A former
    and a current name together, an option the architecture does not take (the error lists
    its options and suggests the likeliest intended one), or a context for an unconditional
    architecture are a ValueError. Values are checked when the flow is built."""
    return _checked(arch, ARCHITECTURES.get(arch), options, warn_at=4)


def _checked(arch: str, entry: Architecture, options: Mapping, warn_at: int) -> dict:
    """``options`` under current names, checked; ``warn_at``: the stacklevel of the
    warnings, counted from ``_renamed`` to the user's call."""
    current = _renamed(arch, entry, options, warn_at=warn_at)
    _check_names(arch, entry, current)
    return current


def current_option_names(arch: str, options: Mapping) -> dict:
    """``options`` as recorded (a pretrained entry's config.json, a preset written earlier)
    under the current option names, silently: the one place where former names are read back.
    Names it does not know are passed through unchanged; a former and a current name
    together are a ValueError."""
    entry = ARCHITECTURES.get(arch)
    return _renamed(arch, entry, options, warn_at=None)


ARCHITECTURES: Registry[Architecture] = Registry("architecture")


def register_architecture(
    name: str, summary: str, paper: str, *, renamed: Mapping[str, str] | None = None, **kwargs
):
    """Registers the decorated builder under ``name``; ``renamed`` maps former option names
    to current ones."""

    def decorate(fn: Callable[..., list]) -> Callable[..., list]:
        _add(name, fn, summary, paper, renamed=renamed, **kwargs)
        return fn

    return decorate


def _add(name, fn, summary, paper, *, renamed=None, **kwargs) -> None:
    entry = Architecture(name, fn, summary, paper, renamed=tuple((renamed or {}).items()), **kwargs)
    stale = [new for new in entry.former_names.values() if new not in entry.options]
    if stale:
        raise ValueError(f"{name}: renamed options point to no option: {stale}.")
    ARCHITECTURES.add(name, entry)


def list_architectures(event_rank: int | None = None, conditional: bool | None = None) -> list[str]:
    """Names accepted by ``build``; with ``event_rank`` 1 (vectors) or 3 (images), only those
    architectures; with ``conditional=True``, only those that take ``context_dim``."""
    names = ARCHITECTURES.names()
    if event_rank is not None:
        names = [n for n in names if ARCHITECTURES.get(n).event_rank == event_rank]
    if conditional is not None:
        names = [n for n in names if ARCHITECTURES.get(n).conditional == conditional]
    return names


def architecture(name: str) -> Architecture:
    """The registry entry of ``name`` (summary, paper, builder, options)."""
    return ARCHITECTURES.get(name)


def build(
    arch: str,
    event_shape: int | Sequence[int],
    *,
    dtype: str = "float32",
    seed: int = 0,
    name: str | None = None,
    context_dim: int | None = None,
    conditional_base: bool = False,
    standardize: bool = False,
    **options,
) -> Flow:
    """Builds the architecture ``arch`` for data of ``event_shape``.

    Args:
      arch: one of ``list_architectures()``.
      event_shape: D (or (D,)) for vector architectures; (H, W, C) for image architectures.
      dtype: "float32" or "float64".
      seed: seed of the initialisers, orderings and permutations.
      name: model name (default: the architecture name).
      context_dim: C, for a conditional flow q(x | c) (architectures in
        ``list_architectures(conditional=True)``); None: unconditional.
      conditional_base: with ``context_dim``, make the base N(mu(c), diag sigma(c)^2) (a
        ``ConditionalAffine`` layer next to the base noise).
      standardize: add an ``ActNorm`` next to the data, initialised from the first batch to
        its mean and standard deviation: the layers then see standardised data (spline
        layers act on [-bound, bound] only). A conditional flow standardises its context
        in any case (``Flow(standardize_context=True)``).
      **options: the architecture's options, in the vocabulary of the module docstring
        (``num_layers``, ``hidden_units``, ``activation``, ...; ``architecture(arch).options``
        lists them with their defaults).
    """
    entry = ARCHITECTURES.get(arch)
    seed = check_seed(seed, "build")
    options = _checked(arch, entry, {**options, "context_dim": context_dim}, warn_at=4)
    options.pop("context_dim")
    if conditional_base and context_dim is None:
        raise ValueError("conditional_base=True needs context_dim (the base is N(mu(c), ...)).")
    shape = _event_shape(event_shape)
    if len(shape) != entry.event_rank:
        kind = "a dimension D" if entry.event_rank == 1 else "an image shape (H, W, C)"
        raise ValueError(
            f"{arch} builds flows on events of rank {entry.event_rank} and takes {kind}; "
            f"received event_shape {event_shape!r}."
        )
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64'; received {dtype!r}.")
    event = shape[0] if entry.event_rank == 1 else shape
    if entry.conditional:
        options["context_dim"] = context_dim
    with _seeded_initializers(seed):
        layers = entry.builder(event, dtype=dtype, seed=seed, **options)
        if conditional_base and context_dim is not None:  # checked above: both or neither
            layers = [ConditionalAffine(context_dim, dtype=dtype, name="conditional_base"), *layers]
        if standardize:
            layers.append(ActNorm(event_ndims=entry.event_rank, dtype=dtype, name="standardize"))
        return Flow(layers, event_shape=shape, name=name or arch.replace("-", "_"), dtype=dtype)


@contextlib.contextmanager
def _seeded_initializers(seed: int):
    """Keras 3 gives each unseeded initializer a seed drawn from Python's ``random`` when the
    layer is constructed; seeding that draw makes ``build(..., seed=s)`` give the same initial
    weights in every process. The caller's ``random`` state is restored afterwards."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def _event_shape(event_shape) -> tuple[int, ...]:
    shape = (event_shape,) if isinstance(event_shape, int | np.integer) else event_shape
    try:
        shape = tuple(shape)
    except TypeError:
        shape = None
    if (
        not shape
        or any(isinstance(d, bool) or not isinstance(d, int | np.integer) for d in shape)
        or any(d < 1 for d in shape)
    ):
        raise ValueError(
            "event_shape must be a positive integer D or a tuple of positive integers such as "
            f"(8, 8, 1); received {event_shape!r}."
        )
    return tuple(int(d) for d in shape)


def _needs_two_dims(arch: str, event_dim: int) -> None:
    if event_dim < 2:
        raise ValueError(
            f"{arch} splits the event in two parts and needs event_dim >= 2; received {event_dim}."
        )


def _count(option: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{option} must be a positive integer; received {value!r}.")
    return int(value)


def _activation(value) -> str:
    """A Keras activation name (what every conditioner's config stores)."""
    known = isinstance(value, str)
    if known:
        try:
            keras.activations.get(value)
        except ValueError:
            known = False
    if not known:
        raise ValueError(
            "activation must be the name of a Keras activation such as 'relu', 'tanh', "
            f"'elu', 'gelu' or 'silu'; received {value!r}."
        )
    return value


# ---- vector architectures -----------------------------------------------------------------

#: the options of every MLP / MADE conditioner, and their defaults
_CONDITIONER: dict[str, Any] = {"hidden_units": (64, 64), "activation": "relu"}
#: the options of the spline layers, and their defaults
_SPLINE = {"bins": 8, "bound": 5.0}


def _register_conditioned(
    name: str,
    summary: str,
    paper: str,
    layer: type,
    *,
    num_layers: int,
    autoregressive: bool,
    spline: bool = False,
    scaling: bool = False,
    doc: str,
) -> None:
    """Registers the builder of ``num_layers`` (its default) transforms of ``layer``, each with
    its own conditioner: couplings with half masks, alternately flipped, or (``autoregressive``)
    MADE layers with orderings alternating natural / reversed (Papamakarios et al. 2017).
    ``spline`` adds ``bins`` and ``bound``; ``scaling`` puts NICE's diagonal scaling (an
    ActNorm) next to the base noise."""
    defaults = {"num_layers": num_layers, **_CONDITIONER, **(_SPLINE if spline else {})}
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = inspect.Signature(
        [inspect.Parameter(p, positional) for p in ("event_dim", "dtype", "seed")]
        + [
            inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v)
            for k, v in {**defaults, "context_dim": None}.items()
        ]
    )

    def builder(*args, **kwargs) -> list:
        given = signature.bind(*args, **kwargs)  # a TypeError names an unknown option
        given.apply_defaults()
        options = dict(given.arguments)
        event_dim, dtype, seed = (options.pop(k) for k in ("event_dim", "dtype", "seed"))
        count = _count("num_layers", options.pop("num_layers"))
        options["activation"] = _activation(options["activation"])
        if autoregressive:
            return [
                layer(
                    ordering="natural" if i % 2 == 0 else "reversed",
                    seed=seed + i,
                    dtype=dtype,
                    **options,
                )
                for i in range(count)
            ]
        _needs_two_dims(name, event_dim)
        first = [ActNorm(dtype=dtype, name="scaling")] if scaling else []
        return first + [
            layer(mask="half", flip=i % 2 == 1, dtype=dtype, **options) for i in range(count)
        ]

    builder.__dict__["__signature__"] = signature  # what inspect and Architecture.options read
    builder.__name__ = builder.__qualname__ = "_" + name.replace("-", "_")
    builder.__doc__ = doc
    _add(name, builder, summary, paper, conditional=True)


_register_conditioned(
    "nice",
    "additive couplings + a final diagonal scaling",
    "arXiv:1410.8516",
    AdditiveCoupling,
    num_layers=4,
    autoregressive=False,
    scaling=True,
    doc="""NICE (Dinh et al. 2014): ``num_layers`` additive couplings x_b = z_b + m(z_a)
    (half masks, alternately flipped; log|det J| = 0) and the diagonal scaling next to z (an
    ActNorm: log|det J| = sum log|s|).""",
)
_register_conditioned(
    "realnvp",
    "affine couplings with alternating masks",
    "arXiv:1605.08803",
    AffineCoupling,
    num_layers=6,
    autoregressive=False,
    doc="""RealNVP, vector form (Dinh et al. 2016): ``num_layers`` affine couplings
    x_b = z_b * exp(s(z_a)) + t(z_a), half masks alternately flipped.""",
)
_register_conditioned(
    "nsf",
    "neural spline flow: rational-quadratic spline couplings with alternating masks",
    "arXiv:1906.04032",
    SplineCoupling,
    num_layers=4,
    autoregressive=False,
    spline=True,
    doc="""Neural spline flow, coupling variant (Durkan et al. 2019): ``num_layers`` spline
    couplings (``bins`` bins on [-``bound``, ``bound``], identity outside), masks alternating
    between the two halves.""",
)
_register_conditioned(
    "maf",
    "masked autoregressive flow (MADE layers)",
    "arXiv:1705.07057",
    MaskedAutoregressive,
    num_layers=5,
    autoregressive=True,
    doc="""MAF (Papamakarios et al. 2017): ``num_layers`` affine MADE layers, orderings
    alternating natural / reversed; the density takes one MADE pass per layer, sampling D.""",
)
_register_conditioned(
    "iaf",
    "inverse autoregressive flow (MADE layers)",
    "arXiv:1606.04934",
    InverseAutoregressive,
    num_layers=5,
    autoregressive=True,
    doc="""IAF (Kingma et al. 2016): MAF's layers in the other direction: sampling takes one
    MADE pass per layer, the density of external points D.""",
)
_register_conditioned(
    "nsf-ar",
    "autoregressive neural spline flow: rational-quadratic splines from MADE layers",
    "arXiv:1906.04032",
    SplineAutoregressive,
    num_layers=4,
    autoregressive=True,
    spline=True,
    doc="""Neural spline flow, autoregressive variant (Durkan et al. 2019; MAF's direction: one
    MADE pass for the density, D for sampling): ``num_layers`` spline autoregressive layers
    with orderings alternating natural / reversed.""",
)


@register_architecture(
    "planar", "planar flows", "arXiv:1505.05770", example_options=(("num_layers", 4),)
)
def _planar(event_dim, dtype, seed, num_layers: int = 16):
    """Planar flows (Rezende & Mohamed 2015): ``num_layers`` layers x = z + u tanh(w^T z + b)."""
    return [Planar(seed=seed + 2 * i, dtype=dtype) for i in range(_count("num_layers", num_layers))]


@register_architecture(
    "radial", "radial flows", "arXiv:1505.05770", example_options=(("num_layers", 4),)
)
def _radial(event_dim, dtype, seed, num_layers: int = 16):
    """Radial flows (Rezende & Mohamed 2015): ``num_layers`` radial layers."""
    return [Radial(seed=seed + i, dtype=dtype) for i in range(_count("num_layers", num_layers))]


@register_architecture("sylvester-orthogonal", "Sylvester flows, orthogonal Q", "arXiv:1803.05649")
def _sylvester_orthogonal(event_dim, dtype, seed, num_layers: int = 8, num_vectors=None):
    """Sylvester flows (van den Berg et al. 2018) with ``num_vectors`` orthonormal columns."""
    return [
        SylvesterOrthogonal(num_vectors=num_vectors, seed=seed + i, dtype=dtype)
        for i in range(_count("num_layers", num_layers))
    ]


@register_architecture(
    "sylvester-householder", "Sylvester flows, Householder Q", "arXiv:1803.05649"
)
def _sylvester_householder(event_dim, dtype, seed, num_layers: int = 8, num_reflections=None):
    """Sylvester flows with Q a product of ``num_reflections`` Householder reflections."""
    return [
        SylvesterHouseholder(num_reflections=num_reflections, seed=seed + i, dtype=dtype)
        for i in range(_count("num_layers", num_layers))
    ]


@register_architecture(
    "sylvester-triangular", "Sylvester flows, permutation Q (alternating)", "arXiv:1803.05649"
)
def _sylvester_triangular(event_dim, dtype, seed, num_layers: int = 8):
    """Sylvester flows with Q alternating between the identity and the reversal."""
    return [
        SylvesterTriangular(reverse=i % 2 == 1, seed=seed + i, dtype=dtype)
        for i in range(_count("num_layers", num_layers))
    ]


@register_architecture(
    "glow-1d",
    "Glow steps for vectors: ActNorm + LU linear + affine coupling",
    "arXiv:1807.03039",
    conditional=True,
    renamed={"num_steps": "num_layers"},
)
def _glow_1d(
    event_dim,
    dtype,
    seed,
    num_layers: int = 4,
    hidden_units: Sequence[int] = _CONDITIONER["hidden_units"],
    activation: str = _CONDITIONER["activation"],
    context_dim=None,
):
    """Glow's step on vectors (Kingma & Dhariwal 2018): ``num_layers`` steps of ActNorm ->
    LU-decomposed linear map -> affine coupling (half mask) in the normalizing direction."""
    _needs_two_dims("glow-1d", event_dim)
    activation = _activation(activation)
    layers = []
    for i in range(_count("num_layers", num_layers)):
        # generative order within a step: coupling, then 1x1 (LU), then ActNorm next to x
        layers += [
            AffineCoupling(
                mask="half",
                hidden_units=hidden_units,
                activation=activation,
                context_dim=context_dim,
                dtype=dtype,
            ),
            LULinear(seed=seed + i, dtype=dtype),
            ActNorm(dtype=dtype),
        ]
    return layers


# ---- image architectures ------------------------------------------------------------------

#: Glow's channel mixing between couplings: a fixed permutation or an invertible 1x1 conv
PERMUTATIONS = ("reverse", "shuffle", "1x1", "lu", "qr")
COUPLINGS = {"affine": ImageAffineCoupling, "additive": ImageAdditiveCoupling}


def _choice(option: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{option} must be one of {tuple(choices)}; received {value!r}.")


def _check_squeezes(arch: str, image_shape, squeezes: int) -> None:
    height, width, _ = image_shape
    factor = 2**squeezes
    if height % factor or width % factor:
        raise ValueError(
            f"{arch} squeezes {squeezes} times and needs height and width divisible by "
            f"{factor}; received image shape {tuple(image_shape)}."
        )


def _preprocessing(num_levels, alpha, dtype) -> list:
    """RealNVP's logit pre-processing next to the data, for dequantized counts in [0, K]."""
    return [] if num_levels is None else [Logit(num_levels, alpha=alpha, dtype=dtype)]


def _channel_mixer(permutation: str, seed: int, dtype):
    if permutation in ("reverse", "shuffle"):
        spec = "reversed" if permutation == "reverse" else "random"
        return Permute(spec, seed=seed, event_ndims=3, dtype=dtype)
    cls = {"1x1": InvertibleLinear, "lu": LULinear, "qr": QRLinear}[permutation]
    return cls(seed=seed, event_ndims=3, dtype=dtype)


@register_architecture(
    "glow",
    "Glow: multi-scale ActNorm + invertible 1x1 conv + coupling, learned-prior splits",
    "arXiv:1807.03039",
    event_rank=3,
    example_shape=(4, 4, 1),
    example_options=(
        ("num_scales", 2),
        ("layers_per_scale", 2),
        ("hidden_channels", 8),
        ("num_levels", 4),
    ),
    renamed={"levels": "num_scales", "steps_per_level": "layers_per_scale"},
)
def _glow(
    image_shape,
    dtype,
    seed,
    num_scales: int = 2,
    layers_per_scale: int = 8,
    hidden_channels: int = 64,
    activation: str = "relu",
    coupling: str = "affine",
    permutation: str = "lu",
    num_levels: int | None = None,
    alpha: float = 0.05,
):
    """Glow (Kingma & Dhariwal 2018) on images [H, W, C]. Each of the ``num_scales`` scales
    squeezes (2x2 space-to-depth), then runs ``layers_per_scale`` steps of ActNorm -> channel
    mixing (``permutation``) -> coupling (channel mask, ConvNet conditioner) in the
    normalizing direction; every scale but the last then factors out half the channels to a
    learned conditional Gaussian (``FactorOut``). H and W must be divisible by
    2^num_scales."""
    _check_squeezes("glow", image_shape, _count("num_scales", num_scales))
    steps = _count("layers_per_scale", layers_per_scale)
    _choice("coupling", coupling, COUPLINGS)
    _choice("permutation", permutation, PERMUTATIONS)
    activation = _activation(activation)
    counter = iter(range(seed, seed + 10_000))

    def scale(index: int) -> list:
        layers = []  # generative order: a step is coupling, then mixing, then ActNorm
        for _ in range(steps):
            layers += [
                COUPLINGS[coupling](
                    mask="channel",
                    hidden_channels=hidden_channels,
                    activation=activation,
                    dtype=dtype,
                ),
                _channel_mixer(permutation, next(counter), dtype),
                ActNorm(event_ndims=3, dtype=dtype),
            ]
        if index < num_scales - 1:
            layers = [FactorOut(scale(index + 1), dtype=dtype), *layers]
        return [*layers, Squeeze(dtype=dtype)]

    return scale(0) + _preprocessing(num_levels, alpha, dtype)


@register_architecture(
    "realnvp-image",
    "multi-scale RealNVP: checkerboard and channel couplings, squeezes, factored-out halves",
    "arXiv:1605.08803",
    event_rank=3,
    example_shape=(4, 4, 1),
    example_options=(("num_scales", 2), ("hidden_channels", 8)),
    renamed={"levels": "num_scales"},
)
def _realnvp_image(
    image_shape,
    dtype,
    seed,
    num_scales: int = 2,
    hidden_channels: int = 64,
    activation: str = "relu",
    coupling: str = "affine",
    actnorm: bool = True,
    num_levels: int | None = None,
    alpha: float = 0.05,
):
    """Multi-scale RealNVP (Dinh et al. 2016, section 3.6) on images [H, W, C]. In the
    normalizing direction each scale but the last runs 3 checkerboard couplings, a squeeze,
    3 channel couplings (masks alternating) and factors out half the channels; the last scale
    runs 4 checkerboard couplings. ``num_scales - 1`` squeezes, so H and W must be divisible
    by 2^(num_scales - 1)."""
    _check_squeezes("realnvp-image", image_shape, _count("num_scales", num_scales) - 1)
    _choice("coupling", coupling, COUPLINGS)
    activation = _activation(activation)
    law = COUPLINGS[coupling]

    def couplings(mask: str, count: int) -> list:
        layers = []  # normalizing order: coupling, then ActNorm
        for i in range(count):
            layers.append(
                law(
                    mask=mask,
                    flip=i % 2 == 1,
                    hidden_channels=hidden_channels,
                    activation=activation,
                    dtype=dtype,
                )
            )
            if actnorm:
                layers.append(ActNorm(event_ndims=3, dtype=dtype))
        return layers[::-1]  # generative order

    def scale(index: int) -> list:
        if index == num_scales - 1:
            return couplings("checkerboard", 4)
        inner = [FactorOut(scale(index + 1), dtype=dtype)]
        return (
            inner + couplings("channel", 3) + [Squeeze(dtype=dtype)] + couplings("checkerboard", 3)
        )

    return scale(0) + _preprocessing(num_levels, alpha, dtype)
