"""Small examples of every registered layer, for the contract suite (tests/test_contract.py).
``test_every_registered_layer_has_a_case`` fails when a registered layer has no case here.

A case is a factory ``make(dtype) -> layer`` and the event shapes (forward-input, base side)
it is tested on: the first is the default, the others feed the property-based tests. Vector
layers take any D >= 2. A layer may have several cases ("Name" and "Name/variant"); the
"/context" variants are conditional layers (``context_dim=CONTEXT_DIM``), which the contract
feeds a context of the input's batch shape."""

from typing import NamedTuple

from nfzoo import layers as L

VECTOR_SHAPES = ((3,), (2,), (4,), (5,))
CONTEXT_DIM = 2


class Case(NamedTuple):
    make: object
    shapes: tuple = VECTOR_SHAPES

    @property
    def shape(self):
        return self.shapes[0]


def _factor_out(dt):
    # the kept half goes through a channel coupling and a squeeze: a two-scale flow in one layer
    inner = [
        L.ImageAffineCoupling(mask="channel", hidden_channels=4, dtype=dt),
        L.Squeeze(dtype=dt),
    ]
    return L.FactorOut(inner, prior_hidden_channels=4, dtype=dt)


LAYER_CASES = {
    "AdditiveCoupling": Case(
        lambda dt: L.AdditiveCoupling(mask="alternating", hidden_units=[8, 8], dtype=dt)
    ),
    "AffineCoupling": Case(
        lambda dt: L.AffineCoupling(mask="half", flip=True, hidden_units=[8, 8], dtype=dt)
    ),
    "AdditiveCoupling/context": Case(
        lambda dt: L.AdditiveCoupling(
            mask="half", hidden_units=[8], context_dim=CONTEXT_DIM, dtype=dt
        )
    ),
    "AffineCoupling/context": Case(
        lambda dt: L.AffineCoupling(
            mask="alternating", hidden_units=[8, 8], context_dim=CONTEXT_DIM, dtype=dt
        )
    ),
    "SplineCoupling": Case(
        lambda dt: L.SplineCoupling(
            mask="alternating", hidden_units=[8, 8], bins=5, bound=3.0, dtype=dt
        )
    ),
    # a narrow interval: many test points fall in the identity tails
    "SplineCoupling/context": Case(
        lambda dt: L.SplineCoupling(
            mask="half",
            flip=True,
            hidden_units=[8],
            bins=4,
            bound=1.5,
            context_dim=CONTEXT_DIM,
            dtype=dt,
        )
    ),
    "SplineAutoregressive": Case(
        lambda dt: L.SplineAutoregressive(
            hidden_units=[8, 8], ordering="random", seed=3, bins=5, bound=3.0, dtype=dt
        )
    ),
    "SplineAutoregressive/context": Case(
        lambda dt: L.SplineAutoregressive(
            hidden_units=[8],
            ordering="reversed",
            seed=4,
            bins=4,
            bound=1.5,
            context_dim=CONTEXT_DIM,
            dtype=dt,
        )
    ),
    "ConditionalAffine": Case(
        lambda dt: L.ConditionalAffine(context_dim=CONTEXT_DIM, hidden_units=[8], dtype=dt)
    ),
    "MaskedAutoregressive": Case(
        lambda dt: L.MaskedAutoregressive(hidden_units=[8, 8], ordering="random", seed=1, dtype=dt)
    ),
    "MaskedAutoregressive/context": Case(
        lambda dt: L.MaskedAutoregressive(
            hidden_units=[8], ordering="natural", seed=1, context_dim=CONTEXT_DIM, dtype=dt
        )
    ),
    "InverseAutoregressive": Case(
        lambda dt: L.InverseAutoregressive(hidden_units=[8], ordering="reversed", seed=2, dtype=dt)
    ),
    "InverseAutoregressive/context": Case(
        lambda dt: L.InverseAutoregressive(
            hidden_units=[8, 8], ordering="random", seed=2, context_dim=CONTEXT_DIM, dtype=dt
        )
    ),
    "Permute": Case(lambda dt: L.Permute("random", seed=3, dtype=dt)),
    "Permute/channels": Case(
        lambda dt: L.Permute("random", seed=3, event_ndims=3, dtype=dt), ((2, 2, 3), (1, 3, 4))
    ),
    "InvertibleLinear": Case(lambda dt: L.InvertibleLinear(seed=1, dtype=dt)),
    "InvertibleLinear/1x1": Case(
        lambda dt: L.InvertibleLinear(seed=1, event_ndims=3, dtype=dt), ((2, 2, 3), (3, 1, 2))
    ),
    "LULinear": Case(lambda dt: L.LULinear(seed=1, dtype=dt)),
    "LULinear/1x1": Case(
        lambda dt: L.LULinear(seed=1, event_ndims=3, dtype=dt), ((2, 2, 3), (3, 1, 2))
    ),
    "QRLinear": Case(lambda dt: L.QRLinear(seed=2, dtype=dt)),
    "QRLinear/1x1": Case(
        lambda dt: L.QRLinear(seed=2, event_ndims=3, dtype=dt), ((2, 2, 3), (3, 1, 2))
    ),
    "ActNorm": Case(lambda dt: L.ActNorm(dtype=dt)),
    "ActNorm/image": Case(lambda dt: L.ActNorm(event_ndims=3, dtype=dt), ((2, 2, 3), (3, 2, 1))),
    "Planar": Case(lambda dt: L.Planar(seed=1, dtype=dt)),
    "Radial": Case(lambda dt: L.Radial(seed=1, dtype=dt)),
    "SylvesterOrthogonal": Case(lambda dt: L.SylvesterOrthogonal(num_vectors=2, seed=1, dtype=dt)),
    "SylvesterHouseholder": Case(
        lambda dt: L.SylvesterHouseholder(num_reflections=2, seed=1, dtype=dt)
    ),
    "SylvesterTriangular": Case(lambda dt: L.SylvesterTriangular(reverse=True, seed=1, dtype=dt)),
    "ImageAdditiveCoupling": Case(
        lambda dt: L.ImageAdditiveCoupling(mask="checkerboard", hidden_channels=4, dtype=dt),
        ((4, 4, 1), (2, 3, 2)),
    ),
    "ImageAffineCoupling": Case(
        lambda dt: L.ImageAffineCoupling(mask="channel", flip=True, hidden_channels=4, dtype=dt),
        ((2, 2, 3), (3, 2, 2), (2, 2, 5)),
    ),
    "ImageAffineCoupling/checkerboard": Case(
        lambda dt: L.ImageAffineCoupling(
            mask="checkerboard", flip=True, hidden_channels=4, dtype=dt
        ),
        ((3, 3, 2), (2, 4, 1)),
    ),
    "Squeeze": Case(lambda dt: L.Squeeze(dtype=dt), ((2, 2, 8), (1, 3, 4))),
    "FactorOut": Case(_factor_out, ((2, 2, 4), (4, 2, 3))),
    # alpha and K chosen so that standard-normal test inputs lie inside the data range
    "Logit": Case(lambda dt: L.Logit(num_levels=10, alpha=0.4, dtype=dt), ((2, 3, 1), (1, 2, 2))),
}
