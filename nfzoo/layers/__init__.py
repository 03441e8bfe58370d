"""Flow layers: each one is a Keras 3 layer and a TFP bijector (see ``BijectorLayer``)."""

from nfzoo.bijector_layer import BijectorLayer, register_layer, registered_layers
from nfzoo.layers.autoregressive import InverseAutoregressive, MaskedAutoregressive
from nfzoo.layers.coupling import AdditiveCoupling, AffineCoupling
from nfzoo.layers.linear import LULinear, Permute, QRLinear
from nfzoo.layers.normalization import ActNorm
from nfzoo.layers.residual import Planar, Radial
from nfzoo.layers.sylvester import SylvesterHouseholder, SylvesterOrthogonal, SylvesterTriangular

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "BijectorLayer",
    "InverseAutoregressive",
    "LULinear",
    "MaskedAutoregressive",
    "Permute",
    "Planar",
    "QRLinear",
    "Radial",
    "SylvesterHouseholder",
    "SylvesterOrthogonal",
    "SylvesterTriangular",
    "register_layer",
    "registered_layers",
]
