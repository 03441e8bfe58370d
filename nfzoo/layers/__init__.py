"""Flow layers: each one is a Keras 3 layer and a TFP bijector (see ``BijectorLayer``)."""

from nfzoo.bijector_layer import BijectorLayer, register_layer, registered_layers
from nfzoo.layers.autoregressive import InverseAutoregressive, MaskedAutoregressive
from nfzoo.layers.conditional import ConditionalAffine
from nfzoo.layers.coupling import AdditiveCoupling, AffineCoupling
from nfzoo.layers.image_coupling import ImageAdditiveCoupling, ImageAffineCoupling
from nfzoo.layers.linear import InvertibleLinear, LULinear, Permute, QRLinear
from nfzoo.layers.multiscale import FactorOut
from nfzoo.layers.normalization import ActNorm
from nfzoo.layers.planar_radial import Planar, Radial
from nfzoo.layers.preprocessing import Logit
from nfzoo.layers.reshape import Squeeze
from nfzoo.layers.spline import SplineAutoregressive, SplineCoupling
from nfzoo.layers.sylvester import SylvesterHouseholder, SylvesterOrthogonal, SylvesterTriangular

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "BijectorLayer",
    "ConditionalAffine",
    "FactorOut",
    "ImageAdditiveCoupling",
    "ImageAffineCoupling",
    "InverseAutoregressive",
    "InvertibleLinear",
    "LULinear",
    "Logit",
    "MaskedAutoregressive",
    "Permute",
    "Planar",
    "QRLinear",
    "Radial",
    "SplineAutoregressive",
    "SplineCoupling",
    "Squeeze",
    "SylvesterHouseholder",
    "SylvesterOrthogonal",
    "SylvesterTriangular",
    "register_layer",
    "registered_layers",
]
