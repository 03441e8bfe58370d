"""Chains of BijectorLayers in generative order: building them from the data shape, the two
passes, and data-dependent initialisation. The one implementation, used by ``Flow`` and by
layers that hold layers (``FactorOut``)."""

from __future__ import annotations

import tensorflow as tf

__all__ = ["build_chain", "chain_forward", "chain_inverse", "initialize_chain"]


def build_chain(layers, data_event_shape) -> tuple[int, ...]:
    """Builds ``layers`` (generative order) for data events of ``data_event_shape``, walking
    from the data side: each layer is built on its forward-input shape, the inverse image of
    the shape after it. Returns the base-side event shape."""
    shape = tf.TensorShape(tuple(data_event_shape))
    for layer in reversed(layers):
        shape = layer.inverse_event_shape(shape)
        if not layer.built:
            layer.build((None, *shape.as_list()))
    return tuple(shape.as_list())


def chain_forward(layers, z):
    """z -> x through ``layers`` in order; returns (x, sum of log|det dx/dz|)."""
    total = 0.0
    for layer in layers:
        z, ldj = layer._forward_and_log_det(z)
        total = total + ldj
    return z, total


def chain_inverse(layers, x):
    """x -> z through ``layers`` in reverse order; returns (z, sum of log|det dz/dx|)."""
    total = 0.0
    for layer in reversed(layers):
        x, ldj = layer._inverse_and_log_det(x)
        total = total + ldj
    return x, total


def initialize_chain(layers, x) -> None:
    """Initialises the data-dependent layers of ``layers`` (ActNorm) from a batch ``x`` on the
    data side, running the inverse pass from the data side up to the last such layer."""
    pending = [layer.needs_data_init for layer in layers]
    for i in reversed(range(len(layers))):
        if not any(pending[: i + 1]):
            break
        layer = layers[i]
        if layer.needs_data_init and not layer.is_data_initialized:
            layer.data_initialize(x)
        x = layer._inverse_and_log_det(x)[0]
