"""Builders of named flow architectures, with paper defaults scaled to small problems.

``build(arch, event_dim, **kwargs)`` returns a ready (built, untrained) ``Flow``;
``list_architectures()`` lists the names. Every builder takes ``dtype`` ("float32" or
"float64") and ``seed`` (initialisers and orderings), plus the options in its docstring.
The same registry drives the contract test suite, so a new builder is tested by registering it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nfzoo.flow import Flow
from nfzoo.layers import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    InverseAutoregressive,
    LULinear,
    MaskedAutoregressive,
    Planar,
    Radial,
    SylvesterHouseholder,
    SylvesterOrthogonal,
    SylvesterTriangular,
)
from nfzoo.registry import Registry

__all__ = ["Architecture", "architecture", "build", "list_architectures"]


@dataclass(frozen=True)
class Architecture:
    """A registered builder: ``builder(event_dim, dtype=..., seed=..., **options) -> Flow``."""

    name: str
    builder: Callable[..., Flow]
    summary: str
    paper: str


ARCHITECTURES: Registry[Architecture] = Registry("architecture")


def register_architecture(name: str, summary: str, paper: str):
    def decorate(fn: Callable[..., Flow]) -> Callable[..., Flow]:
        ARCHITECTURES.add(name, Architecture(name, fn, summary, paper))
        return fn

    return decorate


def list_architectures() -> list[str]:
    """Names accepted by ``build``."""
    return ARCHITECTURES.names()


def architecture(name: str) -> Architecture:
    """The registry entry of ``name`` (summary, paper, builder)."""
    return ARCHITECTURES.get(name)


def build(
    arch: str,
    event_dim: int,
    *,
    dtype: str = "float32",
    seed: int = 0,
    name: str | None = None,
    **options,
) -> Flow:
    """Builds the architecture ``arch`` for ``event_dim``-dimensional data.

    Args:
      arch: one of ``list_architectures()``.
      event_dim: dimension D of one data point.
      dtype: "float32" or "float64".
      seed: seed of the initialisers, orderings and permutations.
      name: model name (default: the architecture name).
      **options: architecture options (see each builder: ``num_layers``, ``hidden_units``...).
    """
    entry = ARCHITECTURES.get(arch)
    if isinstance(event_dim, bool) or not isinstance(event_dim, int) or event_dim < 1:
        raise ValueError(f"event_dim must be a positive integer; received {event_dim!r}.")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64'; received {dtype!r}.")
    layers = entry.builder(event_dim, dtype=dtype, seed=seed, **options)
    return Flow(layers, event_shape=(event_dim,), name=name or arch.replace("-", "_"), dtype=dtype)


def _needs_two_dims(arch: str, event_dim: int) -> None:
    if event_dim < 2:
        raise ValueError(
            f"{arch} splits the event in two parts and needs event_dim >= 2; received {event_dim}."
        )


@register_architecture("nice", "additive couplings + a final diagonal scaling", "arXiv:1410.8516")
def _nice(event_dim, dtype, seed, num_layers: int = 4, hidden_units: Sequence[int] = (64, 64)):
    _needs_two_dims("nice", event_dim)
    layers = [ActNorm(dtype=dtype, name="scaling")]  # NICE's diagonal scaling, next to z
    layers += [
        AdditiveCoupling(mask="half", flip=i % 2 == 1, hidden_units=hidden_units, dtype=dtype)
        for i in range(num_layers)
    ]
    return layers


@register_architecture("realnvp", "affine couplings with alternating masks", "arXiv:1605.08803")
def _realnvp(event_dim, dtype, seed, num_layers: int = 6, hidden_units: Sequence[int] = (64, 64)):
    _needs_two_dims("realnvp", event_dim)
    return [
        AffineCoupling(mask="half", flip=i % 2 == 1, hidden_units=hidden_units, dtype=dtype)
        for i in range(num_layers)
    ]


def _autoregressive(cls, event_dim, dtype, seed, num_layers, hidden_units):
    # Orderings alternate natural / reversed between layers (Papamakarios et al. 2017).
    return [
        cls(
            hidden_units=hidden_units,
            ordering="natural" if i % 2 == 0 else "reversed",
            seed=seed + i,
            dtype=dtype,
        )
        for i in range(num_layers)
    ]


@register_architecture("maf", "masked autoregressive flow (MADE layers)", "arXiv:1705.07057")
def _maf(event_dim, dtype, seed, num_layers: int = 5, hidden_units: Sequence[int] = (64, 64)):
    return _autoregressive(MaskedAutoregressive, event_dim, dtype, seed, num_layers, hidden_units)


@register_architecture("iaf", "inverse autoregressive flow (MADE layers)", "arXiv:1606.04934")
def _iaf(event_dim, dtype, seed, num_layers: int = 5, hidden_units: Sequence[int] = (64, 64)):
    return _autoregressive(InverseAutoregressive, event_dim, dtype, seed, num_layers, hidden_units)


@register_architecture("planar", "planar flows", "arXiv:1505.05770")
def _planar(event_dim, dtype, seed, num_layers: int = 16):
    return [Planar(seed=seed + 2 * i, dtype=dtype) for i in range(num_layers)]


@register_architecture("radial", "radial flows", "arXiv:1505.05770")
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
    "glow-1d", "Glow steps for vectors: ActNorm + LU linear + affine coupling", "arXiv:1807.03039"
)
def _glow_1d(event_dim, dtype, seed, num_steps: int = 4, hidden_units: Sequence[int] = (64, 64)):
    _needs_two_dims("glow-1d", event_dim)
    layers = []
    for i in range(num_steps):
        # generative order within a step: coupling, then 1x1 (LU), then ActNorm next to x
        layers += [
            AffineCoupling(mask="half", hidden_units=hidden_units, dtype=dtype),
            LULinear(seed=seed + i, dtype=dtype),
            ActNorm(dtype=dtype),
        ]
    return layers
