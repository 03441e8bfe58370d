"""``nfzoo.ops.matmul``: the product of every dense layer. Under XLA its kernel gradient is
computed in another orientation; these tests hold it to ``tf.matmul``'s gradient and check
that the other orientation is really used where it should be."""

import math

import numpy as np
import pytest
import tensorflow as tf

from nfzoo import ops
from nfzoo.nets import MADE, MLP


def _grads(product, x, w, jit):
    @tf.function(jit_compile=jit)
    def fn(x, w):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            # a non-uniform upstream gradient, so that a transposed dW would not pass
            y = product(x, w)
            loss = tf.reduce_sum(tf.sin(y) * tf.range(1.0, 1.0 + y.shape[-1], dtype=y.dtype))
        return (y, *tape.gradient(loss, [x, w]))

    return [t.numpy() for t in fn(x, w)]


@pytest.mark.parametrize("shape", [(256, 16), (8, 256), (32, 32), (12, 3), (256, 128)])
@pytest.mark.parametrize("jit", [True, False])
def test_matmul_and_its_gradients_equal_tf_matmul(shape, jit):
    rng = np.random.RandomState(0)
    x = tf.constant(rng.randn(64, shape[0]).astype(np.float32))
    w = tf.constant((rng.randn(*shape) / np.sqrt(shape[0])).astype(np.float32))
    got = _grads(ops.matmul, x, w, jit)
    want = _grads(tf.matmul, x, w, jit=False)
    for g, r in zip(got, want):
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


def _xla_ops(n_in, n_out, batch_shape=(64,)):
    @tf.function(jit_compile=True)
    def fn(x, w):
        with tf.GradientTape() as tape:
            tape.watch(w)
            loss = tf.reduce_sum(ops.matmul(x, w) ** 2)
        return tape.gradient(loss, w)

    spec = [tf.TensorSpec([*batch_shape, n_in]), tf.TensorSpec([n_in, n_out])]
    return {op.type for op in fn.get_concrete_function(*spec).graph.get_operations()}


def test_the_transposed_kernel_gradient_is_used_only_where_it_is_faster():
    assert "XlaOptimizationBarrier" in _xla_ops(256, 16)  # n_in >= 4 n_out: (dY^T X)^T
    assert "XlaOptimizationBarrier" in _xla_ops(256, 64)
    assert "XlaOptimizationBarrier" not in _xla_ops(256, 128)  # X^T dY
    assert "XlaOptimizationBarrier" not in _xla_ops(16, 256)
    assert "XlaOptimizationBarrier" not in _xla_ops(256, 16, (4, 64))  # rank 3: tf.matmul


@pytest.mark.parametrize("shape", [(256, 16), (32, 32)])
def test_an_infinite_swap_ratio_gives_tf_matmuls_gradient(shape, monkeypatch):
    """``SWAP_RATIO = math.inf`` (for benchmarks): the same gradient as XLA's for tf.matmul,
    to the bit, and no barrier."""
    monkeypatch.setattr(ops, "SWAP_RATIO", math.inf)
    rng = np.random.RandomState(0)
    x = tf.constant(rng.randn(64, shape[0]).astype(np.float32))
    w = tf.constant((rng.randn(*shape) / np.sqrt(shape[0])).astype(np.float32))
    for g, r in zip(_grads(ops.matmul, x, w, jit=True), _grads(tf.matmul, x, w, jit=True)):
        np.testing.assert_array_equal(g, r)
    assert "XlaOptimizationBarrier" not in _xla_ops(*shape)


def test_in_xla_context_tells_compiled_from_plain_graphs():
    seen = {}

    def probe(tag):
        seen[tag] = ops.in_xla_context()
        return tf.constant(0.0)

    tf.function(lambda: probe("xla"), jit_compile=True)()
    tf.function(lambda: probe("graph"))()
    probe("eager")
    assert seen == {"xla": True, "graph": False, "eager": False}


@pytest.mark.parametrize("net", ["mlp", "made"])
def test_networks_have_the_same_gradients_under_xla(net):
    """The conditioners' weights get the same gradient compiled or not."""
    rng = np.random.RandomState(1)
    layer = MLP(6, [32, 32]) if net == "mlp" else MADE(2, [32, 32], seed=0)
    x = tf.constant(rng.randn(128, 6).astype(np.float32))
    layer(x)
    for v in layer.trainable_variables:  # the output layer starts at zero: move every weight
        v.assign((rng.randn(*v.shape) / 4).astype(np.float32))

    def grads(jit):
        @tf.function(jit_compile=jit)
        def fn():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.sin(layer(x)))
            return tape.gradient(loss, layer.trainable_variables)

        return [g.numpy() for g in fn()]

    for g, r in zip(grads(True), grads(False)):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)
