"""The sequential direction of the autoregressive layers (MAF and spline-autoregressive
sampling, IAF's density) by ``MADE.solve``, which computes each MADE unit once, against the
textbook solution: D fixed-point sweeps u <- law(target; MADE(u)), each a full MADE pass.
Both give the same u for the same target, eagerly, under XLA and written out step by step;
and the same gradients. The exported graphs of these layers have no loop up to
``UNROLL_LIMIT`` dimensions."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import perturb

import nfzoo
from nfzoo.exporting.graphs import UNROLL_LIMIT, freeze_endpoints

#: (layer, direction solved sequentially)
LAYERS = [
    ("MaskedAutoregressive", False),
    ("InverseAutoregressive", True),
    ("SplineAutoregressive", False),
]
#: (D, hidden units, ordering, context size)
SHAPES = [
    (8, [32, 32], "natural", None),
    (5, [3], "reversed", 2),  # fewer hidden units than degrees: empty degree blocks
    (11, [16, 16, 16], "random", None),
    (3, [], "natural", None),  # no hidden layer: outputs read the inputs directly
    (1, [8], "natural", 3),  # one dimension: its output reads only the context
]
#: |solve - sweeps| <= TOLERANCE * (1 + |sweeps|)
TOLERANCE = {"float32": 1e-6, "float64": 1e-12}
#: the spline law itself is accurate to about 1.6e-6 in float32 (the sweeps' own distance from
#: the float64 answer): there, solve's float32 result may be as far from the sweeps as twice
#: the sweeps' distance from the float64 answer
SPLINE_FACTOR = 2.0


def _layer(name, shape, dtype):
    D, hidden, ordering, context_dim = shape
    kwargs = {"context_dim": context_dim} if context_dim else {}
    layer = getattr(nfzoo.layers, name)(
        hidden_units=hidden, ordering=ordering, seed=3, dtype=dtype, **kwargs
    )
    layer.build((None, D))
    perturb(layer, seed=1, scale=0.1)
    return layer


def _sweeps(layer, target, context, inverse):
    """D fixed-point sweeps from u = 0: after sweep k the first k coordinates in the ordering
    are exact."""
    u = tf.zeros_like(target)
    for _ in range(layer.event_dim):
        u, log_det = layer._law(target, layer.made(u, context), inverse)
    return u, log_det


def _inputs(layer, dtype, n=64):
    rng = np.random.RandomState(7)
    target = tf.constant(rng.randn(n, layer.event_dim), dtype)
    context = None
    if layer.context_dim is not None:
        context = tf.constant(rng.randn(n, layer.context_dim), dtype)
    return target, context


def _relative(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected) / (1.0 + np.abs(expected))))


def _close(actual, expected, tolerance):
    assert _relative(actual, expected) <= tolerance, _relative(actual, expected)


def _tolerances(layer, target, context, inverse, expected):
    """(tolerance of u, of the log-det) for comparisons with the float32 or float64 sweeps."""
    dtype = layer.dtype.name
    if dtype == "float64" or not isinstance(layer, nfzoo.layers.SplineAutoregressive):
        return TOLERANCE[dtype], TOLERANCE[dtype]
    twin = _layer(type(layer).__name__, _shape_of(layer), "float64")
    for w64, w32 in zip(twin.weights, layer.weights):
        w64.assign(tf.cast(w32, tf.float64))
    cast = [None if t is None else tf.cast(t, tf.float64) for t in (target, context)]
    truth = _sweeps(twin, cast[0], cast[1], inverse)
    return tuple(
        max(TOLERANCE[dtype], SPLINE_FACTOR * _relative(e, t)) for e, t in zip(expected, truth)
    )


def _shape_of(layer):
    return (layer.event_dim, layer.hidden_units, layer.ordering, layer.context_dim)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"D{s[0]}-{s[2]}-c{s[3]}")
@pytest.mark.parametrize(("name", "inverse"), LAYERS, ids=[n for n, _ in LAYERS])
def test_solve_gives_the_fixed_point_sweeps_answer(name, inverse, shape, dtype):
    layer = _layer(name, shape, dtype)
    target, context = _inputs(layer, dtype)
    expected_u, expected_log_det = _sweeps(layer, target, context, inverse)
    tol_u, tol_ldj = _tolerances(layer, target, context, inverse, (expected_u, expected_log_det))
    direction = layer.inverse if inverse else layer.forward
    kwargs = {} if context is None else {"context": context}
    compiled = tf.function(lambda t, c: layer.autoregressive_pass(t, c, inverse), jit_compile=True)
    written_out = layer.autoregressive_pass(target, context, inverse, unroll=True)
    for u, log_det in [
        layer.autoregressive_pass(target, context, inverse),  # eager
        compiled(target, context),  # XLA: one while loop
        written_out,
    ]:
        _close(u, expected_u, tol_u)
        _close(log_det, expected_log_det, tol_ldj)
    # the public direction and its log-det are the same solve
    _close(direction(target, **kwargs), expected_u, tol_u)
    ldj = layer.inverse_log_det_jacobian if inverse else layer.forward_log_det_jacobian
    _close(ldj(target, event_ndims=1, **kwargs), expected_log_det, tol_ldj)


@pytest.mark.parametrize(("name", "inverse"), LAYERS, ids=[n for n, _ in LAYERS])
def test_solve_has_the_gradients_of_the_sweeps(name, inverse):
    layer = _layer(name, (6, [16, 16], "random", 2), "float64")
    target, context = _inputs(layer, "float64", n=16)
    weights = layer.trainable_variables

    def gradients(fn):
        with tf.GradientTape() as tape:
            tape.watch(target)
            u, log_det = fn()
            loss = tf.reduce_sum(tf.sin(u)) + tf.reduce_sum(log_det)
        return tape.gradient(loss, [target, *weights])

    expected = gradients(lambda: _sweeps(layer, target, context, inverse))
    actual = gradients(lambda: layer.autoregressive_pass(target, context, inverse))
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-9, atol=1e-11)


def _loops(frozen) -> int:
    ops = [n.op for n in frozen.graph_def.node]
    ops += [n.op for f in frozen.graph_def.library.function for n in f.node_def]
    return sum(op in ("While", "StatelessWhile") for op in ops)


@pytest.mark.parametrize("arch", ["maf", "iaf", "nsf-ar"])
def test_exported_sequential_directions_have_no_loop_up_to_the_unroll_limit(arch):
    flow = nfzoo.build(arch, 4, num_layers=2, hidden_units=[8])
    frozen = freeze_endpoints(flow)
    assert set(frozen) >= {"log_prob", "generate"}
    assert all(_loops(f) == 0 for f in frozen.values()), {k: _loops(f) for k, f in frozen.items()}


def test_exported_sequential_direction_beyond_the_unroll_limit_is_one_loop():
    flow = nfzoo.build("maf", UNROLL_LIMIT + 1, num_layers=1, hidden_units=[8])
    frozen = freeze_endpoints(flow, endpoints=["log_prob", "generate"])
    assert _loops(frozen["log_prob"]) == 0  # the parallel direction: one MADE pass
    assert _loops(frozen["generate"]) == 1
