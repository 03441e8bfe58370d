"""Builders of named flow architectures, with paper defaults scaled to small problems.

``build(arch, event_shape, **kwargs)`` returns a ready (built, untrained) ``Flow``;
``list_architectures()`` lists the names. Vector architectures take an event dimension D
(``build("maf", 2)``), image architectures an image shape [H, W, C] (``build("glow", (8, 8, 1))``).
Every builder takes ``dtype`` ("float32" or "float64") and ``seed`` (initialisers and
orderings), plus the options in its docstring. The same registry drives the contract test
suite, so a new builder is tested by being registered.

Conditional flows q(x | c): the vector builders whose conditioners can read a context (nice,
realnvp, maf, iaf, glow-1d, nsf, nsf-ar; ``list_architectures(conditional=True)``) take
``context_dim=C``: every coupling conditioner then reads [x_a, c] and every MADE reads c
through an unmasked input. ``conditional_base=True`` adds ``ConditionalAffine`` next to the
base noise, which makes the base N(mu(c), diag sigma(c)^2).
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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

__all__ = ["Architecture", "architecture", "build", "list_architectures"]


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

    @property
    def options(self) -> dict[str, object]:
        """The builder's options and their defaults (what ``build(arch, ..., **options)``
        accepts besides the arguments every architecture takes)."""
        params = list(inspect.signature(self.builder).parameters.values())[1:]  # after event
        return {p.name: p.default for p in params if p.name not in _COMMON_ARGUMENTS}


#: arguments ``build`` itself passes to every builder
_COMMON_ARGUMENTS = ("dtype", "seed", "context_dim")
#: option names that mean the same thing in different builders or peer libraries, for the
#: suggestion in the error on an unknown option
_SYNONYMS = (
    {"num_layers", "num_steps", "steps_per_level", "num_transforms", "transforms", "num_flows"},
    {"hidden_units", "hidden_channels", "hidden_features", "hidden", "units", "hidden_sizes"},
    {"levels", "num_scales", "num_blocks", "scales"},
    {"num_levels", "grey_levels", "num_bins_data"},
    {"num_bins", "bins", "count_bins"},
    {"bound", "tail_bound", "interval"},
    {"permutation", "ordering", "order", "mixing"},
)


def _check_options(arch: str, entry: Architecture, options: dict) -> None:
    """ValueError naming the architecture, its valid options and the likeliest intended one
    for every option its builder does not take."""
    valid = entry.options
    unknown = [k for k in options if k not in valid]
    if not unknown:
        return
    hints = []
    for k in unknown:
        alike = [v for group in _SYNONYMS if k in group for v in valid if v in group]
        alike = alike or difflib.get_close_matches(k, list(valid), n=1, cutoff=0.6)
        hints.append(f"{k!r} (did you mean {alike[0]!r}?)" if alike else repr(k))
    listing = ", ".join(f"{k}={v!r}" for k, v in valid.items()) or "none"
    raise ValueError(
        f"{arch} has no option {', '.join(hints)}. Its options (with defaults): {listing}; "
        "every architecture also takes dtype, seed, name"
        + (", context_dim, conditional_base" if entry.conditional else "")
        + " and standardize."
    )


ARCHITECTURES: Registry[Architecture] = Registry("architecture")


def register_architecture(name: str, summary: str, paper: str, **kwargs):
    def decorate(fn: Callable[..., list]) -> Callable[..., list]:
        ARCHITECTURES.add(name, Architecture(name, fn, summary, paper, **kwargs))
        return fn

    return decorate


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
    """The registry entry of ``name`` (summary, paper, builder)."""
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
      **options: architecture options (see each builder: ``num_layers``, ``hidden_units``...).
    """
    entry = ARCHITECTURES.get(arch)
    seed = check_seed(seed, "build")
    if context_dim is not None and not entry.conditional:
        raise ValueError(
            f"{arch} does not take a context; the conditional architectures are "
            f"{', '.join(list_architectures(conditional=True))}. Received "
            f"context_dim={context_dim!r}."
        )
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
    _check_options(arch, entry, options)
    if entry.conditional:
        options["context_dim"] = context_dim
    with _seeded_initializers(seed):
        layers = entry.builder(event, dtype=dtype, seed=seed, **options)
        if conditional_base:
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


def _couplings(cls, arch, event_dim, num_layers, **kwargs) -> list:
    """``num_layers`` couplings of ``cls`` with half masks, alternately flipped."""
    _needs_two_dims(arch, event_dim)
    return [
        cls(mask="half", flip=i % 2 == 1, **kwargs) for i in range(_count("num_layers", num_layers))
    ]


@register_architecture(
    "nice",
    "additive couplings + a final diagonal scaling",
    "arXiv:1410.8516",
    conditional=True,
)
def _nice(
    event_dim,
    dtype,
    seed,
    num_layers: int = 4,
    hidden_units: Sequence[int] = (64, 64),
    context_dim=None,
):
    layers = [ActNorm(dtype=dtype, name="scaling")]  # NICE's diagonal scaling, next to z
    return layers + _couplings(
        AdditiveCoupling,
        "nice",
        event_dim,
        num_layers,
        hidden_units=hidden_units,
        context_dim=context_dim,
        dtype=dtype,
    )


@register_architecture(
    "realnvp", "affine couplings with alternating masks", "arXiv:1605.08803", conditional=True
)
def _realnvp(
    event_dim,
    dtype,
    seed,
    num_layers: int = 6,
    hidden_units: Sequence[int] = (64, 64),
    context_dim=None,
):
    return _couplings(
        AffineCoupling,
        "realnvp",
        event_dim,
        num_layers,
        hidden_units=hidden_units,
        context_dim=context_dim,
        dtype=dtype,
    )


@register_architecture(
    "nsf",
    "neural spline flow: rational-quadratic spline couplings with alternating masks",
    "arXiv:1906.04032",
    conditional=True,
)
def _nsf(
    event_dim,
    dtype,
    seed,
    num_layers: int = 4,
    hidden_units: Sequence[int] = (64, 64),
    bins: int = 8,
    bound: float = 5.0,
    context_dim=None,
):
    """Neural spline flow, coupling variant (Durkan et al. 2019): ``num_layers`` spline
    couplings (K = ``bins`` bins on [-``bound``, ``bound``], identity outside), masks
    alternating between the two halves."""
    return _couplings(
        SplineCoupling,
        "nsf",
        event_dim,
        num_layers,
        hidden_units=hidden_units,
        bins=bins,
        bound=bound,
        context_dim=context_dim,
        dtype=dtype,
    )


def _autoregressive(cls, event_dim, dtype, seed, num_layers, hidden_units, **kwargs):
    # Orderings alternate natural / reversed between layers (Papamakarios et al. 2017).
    return [
        cls(
            hidden_units=hidden_units,
            ordering="natural" if i % 2 == 0 else "reversed",
            seed=seed + i,
            dtype=dtype,
            **kwargs,
        )
        for i in range(_count("num_layers", num_layers))
    ]


@register_architecture(
    "maf", "masked autoregressive flow (MADE layers)", "arXiv:1705.07057", conditional=True
)
def _maf(
    event_dim,
    dtype,
    seed,
    num_layers: int = 5,
    hidden_units: Sequence[int] = (64, 64),
    context_dim=None,
):
    return _autoregressive(
        MaskedAutoregressive,
        event_dim,
        dtype,
        seed,
        num_layers,
        hidden_units,
        context_dim=context_dim,
    )


@register_architecture(
    "iaf", "inverse autoregressive flow (MADE layers)", "arXiv:1606.04934", conditional=True
)
def _iaf(
    event_dim,
    dtype,
    seed,
    num_layers: int = 5,
    hidden_units: Sequence[int] = (64, 64),
    context_dim=None,
):
    return _autoregressive(
        InverseAutoregressive,
        event_dim,
        dtype,
        seed,
        num_layers,
        hidden_units,
        context_dim=context_dim,
    )


@register_architecture(
    "nsf-ar",
    "autoregressive neural spline flow: rational-quadratic splines from MADE layers",
    "arXiv:1906.04032",
    conditional=True,
)
def _nsf_ar(
    event_dim,
    dtype,
    seed,
    num_layers: int = 4,
    hidden_units: Sequence[int] = (64, 64),
    bins: int = 8,
    bound: float = 5.0,
    context_dim=None,
):
    """Neural spline flow, autoregressive variant (Durkan et al. 2019; MAF's direction: one
    MADE pass for the density, D for sampling): ``num_layers`` spline autoregressive layers
    with orderings alternating natural / reversed."""
    return _autoregressive(
        SplineAutoregressive,
        event_dim,
        dtype,
        seed,
        num_layers,
        hidden_units,
        bins=bins,
        bound=bound,
        context_dim=context_dim,
    )


@register_architecture(
    "planar", "planar flows", "arXiv:1505.05770", example_options=(("num_layers", 4),)
)
def _planar(event_dim, dtype, seed, num_layers: int = 16):
    return [Planar(seed=seed + 2 * i, dtype=dtype) for i in range(num_layers)]


@register_architecture(
    "radial", "radial flows", "arXiv:1505.05770", example_options=(("num_layers", 4),)
)
def _radial(event_dim, dtype, seed, num_layers: int = 16):
    return [Radial(seed=seed + i, dtype=dtype) for i in range(num_layers)]


@register_architecture("sylvester-orthogonal", "Sylvester flows, orthogonal Q", "arXiv:1803.05649")
def _sylvester_orthogonal(event_dim, dtype, seed, num_layers: int = 8, num_vectors=None):
    return [
        SylvesterOrthogonal(num_vectors=num_vectors, seed=seed + i, dtype=dtype)
        for i in range(num_layers)
    ]


@register_architecture(
    "sylvester-householder", "Sylvester flows, Householder Q", "arXiv:1803.05649"
)
def _sylvester_householder(event_dim, dtype, seed, num_layers: int = 8, num_reflections=None):
    return [
        SylvesterHouseholder(num_reflections=num_reflections, seed=seed + i, dtype=dtype)
        for i in range(num_layers)
    ]


@register_architecture(
    "sylvester-triangular", "Sylvester flows, permutation Q (alternating)", "arXiv:1803.05649"
)
def _sylvester_triangular(event_dim, dtype, seed, num_layers: int = 8):
    return [
        SylvesterTriangular(reverse=i % 2 == 1, seed=seed + i, dtype=dtype)
        for i in range(num_layers)
    ]


@register_architecture(
    "glow-1d",
    "Glow steps for vectors: ActNorm + LU linear + affine coupling",
    "arXiv:1807.03039",
    conditional=True,
)
def _glow_1d(
    event_dim,
    dtype,
    seed,
    num_steps: int = 4,
    hidden_units: Sequence[int] = (64, 64),
    context_dim=None,
):
    _needs_two_dims("glow-1d", event_dim)
    layers = []
    for i in range(_count("num_steps", num_steps)):
        # generative order within a step: coupling, then 1x1 (LU), then ActNorm next to x
        layers += [
            AffineCoupling(
                mask="half", hidden_units=hidden_units, context_dim=context_dim, dtype=dtype
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


def _check_levels(arch: str, image_shape, levels: int) -> None:
    height, width, _ = image_shape
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"{arch}: levels must be a positive integer; received {levels!r}.")
    factor = 2**levels
    if height % factor or width % factor:
        raise ValueError(
            f"{arch} with {levels} levels squeezes {levels} times and needs height and width "
            f"divisible by {factor}; received image shape {tuple(image_shape)}."
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
        ("levels", 2),
        ("steps_per_level", 2),
        ("hidden_channels", 8),
        ("num_levels", 4),
    ),
)
def _glow(
    image_shape,
    dtype,
    seed,
    levels: int = 2,
    steps_per_level: int = 8,
    hidden_channels: int = 64,
    coupling: str = "affine",
    permutation: str = "lu",
    num_levels: int | None = None,
    alpha: float = 0.05,
):
    """Glow (Kingma & Dhariwal 2018) on images [H, W, C]. Each of the ``levels`` levels
    squeezes (2x2 space-to-depth), then runs ``steps_per_level`` steps of ActNorm -> channel
    mixing -> coupling (channel mask, ConvNet conditioner of ``hidden_channels``) in the
    normalizing direction; every level but the last then factors out half the channels
    to a learned conditional Gaussian (``FactorOut``).

    Options:
      coupling: "affine" or "additive" (Glow's ablation).
      permutation: the channel mixing: "reverse" / "shuffle" (fixed permutations), "1x1"
        (plain invertible 1x1 conv, slogdet), "lu" (LU-decomposed, Glow's default), "qr".
      num_levels: K, the number of grey levels of dequantized data in [0, K]: adds RealNVP's
        logit pre-processing (``Logit``) next to the data, so log_prob is a density on
        [0, K]^D. None: no pre-processing (real-valued data).
      alpha: the logit's margin.
    """
    _check_levels("glow", image_shape, levels)
    _choice("coupling", coupling, COUPLINGS)
    _choice("permutation", permutation, PERMUTATIONS)
    counter = iter(range(seed, seed + 10_000))

    def level(index: int) -> list:
        layers = []  # generative order: a step is coupling, then mixing, then ActNorm
        for _ in range(steps_per_level):
            layers += [
                COUPLINGS[coupling](mask="channel", hidden_channels=hidden_channels, dtype=dtype),
                _channel_mixer(permutation, next(counter), dtype),
                ActNorm(event_ndims=3, dtype=dtype),
            ]
        if index < levels - 1:
            layers = [FactorOut(level(index + 1), dtype=dtype), *layers]
        return [*layers, Squeeze(dtype=dtype)]

    return level(0) + _preprocessing(num_levels, alpha, dtype)


@register_architecture(
    "realnvp-image",
    "multi-scale RealNVP: checkerboard and channel couplings, squeezes, factored-out halves",
    "arXiv:1605.08803",
    event_rank=3,
    example_shape=(4, 4, 1),
    example_options=(("levels", 2), ("hidden_channels", 8)),
)
def _realnvp_image(
    image_shape,
    dtype,
    seed,
    levels: int = 2,
    hidden_channels: int = 64,
    coupling: str = "affine",
    actnorm: bool = True,
    num_levels: int | None = None,
    alpha: float = 0.05,
):
    """Multi-scale RealNVP (Dinh et al. 2016, section 3.6) on images [H, W, C]. In the
    normalizing direction each level but the last runs 3 checkerboard couplings, a squeeze,
    3 channel couplings (masks alternating) and factors out half the channels; the last level
    runs 4 checkerboard couplings. ``levels - 1`` squeezes, so H and W must be divisible by
    2^(levels - 1).

    Options:
      coupling: "affine" or "additive".
      actnorm: an ActNorm after each coupling (in place of RealNVP's batch normalisation).
      num_levels, alpha: as for ``glow`` (logit pre-processing of dequantized data).
    """
    if levels > 1:
        _check_levels("realnvp-image", image_shape, levels - 1)
    elif levels != 1:
        raise ValueError(f"realnvp-image: levels must be a positive integer; received {levels!r}.")
    _choice("coupling", coupling, COUPLINGS)
    law = COUPLINGS[coupling]

    def couplings(mask: str, count: int) -> list:
        layers = []  # normalizing order: coupling, then ActNorm
        for i in range(count):
            layers.append(
                law(mask=mask, flip=i % 2 == 1, hidden_channels=hidden_channels, dtype=dtype)
            )
            if actnorm:
                layers.append(ActNorm(event_ndims=3, dtype=dtype))
        return layers[::-1]  # generative order

    def level(index: int) -> list:
        if index == levels - 1:
            return couplings("checkerboard", 4)
        inner = [FactorOut(level(index + 1), dtype=dtype)]
        return (
            inner + couplings("channel", 3) + [Squeeze(dtype=dtype)] + couplings("checkerboard", 3)
        )

    return level(0) + _preprocessing(num_levels, alpha, dtype)
