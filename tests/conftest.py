"""Shared test set-up: quiet TensorFlow, deterministic seeds, and the helpers every contract
test uses (weight perturbation and brute-force log-determinants)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    tf.random.set_seed(0)


def perturb(layer_or_model, seed: int, scale: float = 0.3) -> None:
    """Adds N(0, scale^2) noise to every trainable weight, so that tests run at a generic
    point: at initialisation conditioners output zero and many layers are the identity, which
    would let a wrong log-det or a missing gradient pass unnoticed."""
    rng = np.random.RandomState(seed)
    for w in layer_or_model.trainable_weights:
        value = w.numpy()
        w.assign(value + scale * rng.standard_normal(value.shape).astype(value.dtype))


def brute_force_log_det(fn, u: tf.Tensor) -> tf.Tensor:
    """log|det d fn(u) / du| per batch element, from the full Jacobian (autodiff) and slogdet.
    ``u`` is [batch, *event]; events of any rank (images) are flattened, so the Jacobian of a
    map between [H, W, C] and [H', W', C'] of equal size is a square matrix."""
    with tf.GradientTape() as tape:
        tape.watch(u)
        out = fn(u)
    try:
        jac = tape.batch_jacobian(out, u)
    except (ValueError, tf.errors.InvalidArgumentError):  # loops that pfor cannot vectorise
        with tf.GradientTape() as tape:
            tape.watch(u)
            out = fn(u)
        jac = tape.batch_jacobian(out, u, experimental_use_pfor=False)
    size = int(np.prod(u.shape[1:]))
    return tf.linalg.slogdet(tf.reshape(jac, [-1, size, size]))[1]


#: files of the longest single tests (the installed wheel, the README's examples: 1-2 minutes
#: each); they are started first, so that a parallel run does not end on one of them alone
LONG_FIRST = ("test_install.py", "test_readme.py")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.path.name not in LONG_FIRST)  # stable: order kept within
