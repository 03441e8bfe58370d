"""Compiled passes over many rows run in row blocks (``nfzoo.ops.in_row_blocks``): the same
values and gradients as one pass over the whole batch. And the base noise
(``nfzoo.ops.standard_normal``): seeded draws repeat, and eagerly are TFP's draws."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from conftest import perturb

import nfzoo
from nfzoo import ops

#: rows: not a multiple of the block (the last block is completed with the first rows)
N = 8 * 64 + 37


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(ops, "ROW_BLOCK", 64)


@pytest.mark.parametrize("context_dim", [None, 2])
def test_compiled_passes_in_row_blocks_equal_one_pass(small_blocks, context_dim):
    flow = nfzoo.build("realnvp", 3, num_layers=2, hidden_units=[16], context_dim=context_dim)
    perturb(flow, seed=0, scale=0.3)
    rng = np.random.RandomState(0)
    x = rng.randn(N, 3).astype(np.float32)
    kwargs = {} if context_dim is None else {"context": rng.randn(N, 2).astype(np.float32)}
    for jit in (False, True):
        for method, inputs in [("log_prob", x), ("generate", x), ("encode", x)]:
            eager = getattr(flow, method)(inputs, **kwargs).numpy()
            compiled = tf.function(getattr(flow, method), jit_compile=jit)(inputs, **kwargs)
            np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-5)
        z, log_q = tf.function(flow.generate_and_log_prob, jit_compile=jit)(x, **kwargs)
        ez, elog_q = flow.generate_and_log_prob(x, **kwargs)
        np.testing.assert_allclose(z, ez, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(log_q, elog_q, rtol=1e-5, atol=1e-5)
    # the blocked path was taken: a graph with a loop over N / 64 blocks
    graph = (
        tf.function(flow.log_prob)
        .get_concrete_function(tf.TensorSpec([N, 3]), **{k: tf.TensorSpec([N, 2]) for k in kwargs})
        .graph.as_graph_def()
    )
    assert any(node.op in ("While", "StatelessWhile") for node in graph.node)


def test_gradients_through_row_blocks_equal_one_pass(small_blocks, monkeypatch):
    flow = nfzoo.build("maf", 3, num_layers=2, hidden_units=[16], dtype="float64")
    perturb(flow, seed=1, scale=0.3)
    x = tf.constant(np.random.RandomState(1).randn(N, 3))

    @tf.function
    def grads():
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(flow.log_prob(x))
        return tape.gradient(loss, flow.trainable_variables)

    blocked = grads()
    monkeypatch.setattr(ops, "ROW_BLOCK", 10 * N)  # one pass
    whole = tf.function(grads.python_function)()
    for b, w in zip(blocked, whole):
        np.testing.assert_allclose(b, w, rtol=1e-10, atol=1e-12)


def test_standard_normal_draws():
    a = ops.standard_normal([500, 3], tf.float32, (5, 0))
    assert np.array_equal(a, ops.standard_normal([500, 3], tf.float32, (5, 0)))
    assert not np.array_equal(a, ops.standard_normal([500, 3], tf.float32, (6, 0)))
    # eagerly the draws of TFP's distributions for the same seed
    tfp_draws = tfp.distributions.Normal(tf.zeros(3), 1.0).sample(500, seed=(5, 0))
    np.testing.assert_array_equal(a, tfp_draws)
    fresh = [ops.standard_normal([500, 3], tf.float64) for _ in range(2)]
    assert not np.array_equal(*fresh) and fresh[0].dtype == tf.float64
    tf.random.set_seed(3)
    first = ops.standard_normal([4], tf.float32)
    tf.random.set_seed(3)
    np.testing.assert_array_equal(first, ops.standard_normal([4], tf.float32))
    compiled = tf.function(lambda: ops.standard_normal([20000], tf.float32), jit_compile=True)
    draws = compiled().numpy()
    assert abs(draws.mean()) < 0.05 and abs(draws.std() - 1.0) < 0.05
