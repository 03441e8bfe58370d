"""One small example of every registered layer, for the contract suite (tests/test_contract.py).
``test_every_registered_layer_has_a_case`` fails when a registered layer has no entry here."""

from nfzoo import layers as L

#: name -> factory(dtype) of a layer acting on vectors of any dimension >= 2
LAYER_CASES = {
    "AdditiveCoupling": lambda dt: L.AdditiveCoupling(
        mask="alternating", hidden_units=[8, 8], dtype=dt
    ),
    "AffineCoupling": lambda dt: L.AffineCoupling(
        mask="half", flip=True, hidden_units=[8, 8], dtype=dt
    ),
    "MaskedAutoregressive": lambda dt: L.MaskedAutoregressive(
        hidden_units=[8, 8], ordering="random", seed=1, dtype=dt
    ),
    "InverseAutoregressive": lambda dt: L.InverseAutoregressive(
        hidden_units=[8], ordering="reversed", seed=2, dtype=dt
    ),
    "Permute": lambda dt: L.Permute("random", seed=3, dtype=dt),
    "LULinear": lambda dt: L.LULinear(seed=1, dtype=dt),
    "QRLinear": lambda dt: L.QRLinear(seed=2, dtype=dt),
    "ActNorm": lambda dt: L.ActNorm(dtype=dt),
    "Planar": lambda dt: L.Planar(seed=1, dtype=dt),
    "Radial": lambda dt: L.Radial(seed=1, dtype=dt),
    "SylvesterOrthogonal": lambda dt: L.SylvesterOrthogonal(num_vectors=2, seed=1, dtype=dt),
    "SylvesterHouseholder": lambda dt: L.SylvesterHouseholder(num_reflections=2, seed=1, dtype=dt),
    "SylvesterTriangular": lambda dt: L.SylvesterTriangular(reverse=True, seed=1, dtype=dt),
}
