"""Rational-quadratic splines: the same function as TFP's ``tfb.RationalQuadraticSpline``, exact
inverses and log-dets at the hard points (in the tails, on the knots, at the interval's edges)
for both spline layers in float64, monotone for any parameters, the identity at start."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from conftest import brute_force_log_det, perturb
from hypothesis import given, settings
from hypothesis import strategies as st

from nfzoo import layers as L
from nfzoo.layers.spline import rational_quadratic_spline, spline_knots

tfb = tfp.bijectors


def _params(seed, n, bins, scale):
    return tf.constant(scale * np.random.RandomState(seed).randn(n, 3 * bins - 1))


@given(
    seed=st.integers(0, 10_000),
    bins=st.integers(2, 12),
    bound=st.floats(0.5, 8.0),
    scale=st.floats(0.0, 4.0),
)
@settings(max_examples=25, deadline=None)
def test_same_function_as_tfp_rational_quadratic_spline(seed, bins, bound, scale):
    n = 64
    params = _params(seed, n, bins, scale)
    u = tf.constant(np.random.RandomState(seed + 1).uniform(-1.5 * bound, 1.5 * bound, n))
    xs, ys, ds = spline_knots(params, bound)
    reference = tfb.RationalQuadraticSpline(
        xs[:, 1:] - xs[:, :-1], ys[:, 1:] - ys[:, :-1], ds[:, 1:-1], range_min=-bound
    )
    y, log_slope = rational_quadratic_spline(u, params, bound)
    np.testing.assert_allclose(y, reference.forward(u), atol=1e-10, rtol=0)
    np.testing.assert_allclose(
        log_slope, reference.forward_log_det_jacobian(u, event_ndims=0), atol=1e-10, rtol=0
    )
    x, inverse_log_slope = rational_quadratic_spline(y, params, bound, inverse=True)
    np.testing.assert_allclose(x, reference.inverse(y), atol=1e-8, rtol=0)
    np.testing.assert_allclose(inverse_log_slope, -log_slope, atol=1e-8, rtol=0)


def test_monotone_and_finite_for_extreme_parameters():
    bins, bound = 8, 3.0
    u = tf.constant(np.linspace(-4.0, 4.0, 2001))
    for seed in range(5):
        params = tf.tile(_params(seed, 1, bins, 60.0), [len(u), 1])  # saturated softmaxes
        for dtype in (tf.float64, tf.float32):
            y, log_slope = rational_quadratic_spline(
                tf.cast(u, dtype), tf.cast(params, dtype), bound
            )
            assert np.all(np.isfinite(y)) and np.all(np.isfinite(log_slope))
            # monotone, up to a few units of rounding at the interval's scale
            assert np.all(np.diff(y.numpy()) >= -4 * np.finfo(dtype.as_numpy_dtype).eps * bound)


def test_zero_parameters_give_the_identity():
    u = tf.constant(np.linspace(-7.0, 7.0, 101))
    y, log_slope = rational_quadratic_spline(u, tf.zeros((101, 3 * 6 - 1), tf.float64), 5.0)
    np.testing.assert_allclose(y, u, atol=1e-12)
    np.testing.assert_allclose(log_slope, 0.0, atol=1e-12)
    for layer in (
        L.SplineCoupling(bins=6, dtype="float64"),
        L.SplineAutoregressive(bins=6, dtype="float64"),
    ):
        x = tf.constant(np.random.RandomState(0).randn(5, 4) * 3)
        out, ldj = layer.forward_and_log_det(x)
        np.testing.assert_allclose(out, x, atol=1e-12)
        np.testing.assert_allclose(ldj, 0.0, atol=1e-12)


#: where a coordinate is put, relative to its spline: a knot (index), an edge, a tail, inside
PLACES = st.one_of(
    st.tuples(st.just("knot"), st.integers(0, 10)),
    st.tuples(st.sampled_from(["lower edge", "upper edge", "tail"]), st.just(0)),
    st.tuples(st.just("inside"), st.integers(0, 1000)),
)


def _place(where, index, knots, bound, rng):
    kind = where
    if kind == "knot":
        return float(knots[index % len(knots)])
    if kind == "lower edge":
        return -bound
    if kind == "upper edge":
        return bound
    if kind == "tail":
        return float(rng.choice([-1, 1]) * bound * rng.uniform(1.0001, 3.0))
    return float(rng.uniform(-bound, bound))


def _check_exact(layer, x, c):
    """x -> z -> x in float64, and both log-dets against brute force, to 1e-8."""
    z, ildj = layer.inverse_and_log_det(x, **c)
    x_back, fldj = layer.forward_and_log_det(z, **c)
    np.testing.assert_allclose(x_back, x, atol=1e-8, rtol=0)
    np.testing.assert_allclose(ildj, -fldj, atol=1e-8, rtol=0)
    brute = brute_force_log_det(lambda u: layer.inverse(u, **c), tf.constant(x))
    np.testing.assert_allclose(ildj, brute, atol=1e-8, rtol=0)
    brute = brute_force_log_det(lambda u: layer.forward(u, **c), z)
    np.testing.assert_allclose(fldj, brute, atol=1e-8, rtol=0)


@given(
    places=st.lists(PLACES, min_size=8, max_size=8),
    seed=st.integers(0, 1000),
    conditional=st.booleans(),
)
@settings(max_examples=15, deadline=None)
def test_spline_coupling_at_knots_edges_and_tails(places, seed, conditional):
    bins, bound, dim = 5, 2.0, 4
    layer = L.SplineCoupling(
        mask="half", hidden_units=[8], bins=bins, bound=bound,
        context_dim=2 if conditional else None, dtype="float64",
    )  # fmt: skip
    layer.build((None, dim))
    perturb(layer, seed, scale=0.5)
    rng = np.random.RandomState(seed)
    x = rng.randn(2, dim)
    c = {"context": tf.constant(rng.randn(2, 2))} if conditional else {}
    # the moved half's splines depend on the kept half only: put each moved coordinate
    # where ``places`` says relative to its own spline's x knots (data side)
    params = layer._conditioner_output(tf.constant(x[:, layer._keep]), c.get("context"))
    params = tf.reshape(params, [2, len(layer._move), -1])
    _, knots, _ = spline_knots(params, bound)  # y knots: the data side of g (forward: z -> x)
    places = iter(places)
    for row in range(2):
        for j, dim_index in enumerate(layer._move):
            where, index = next(places)
            x[row, dim_index] = _place(where, index, knots[row, j].numpy(), bound, rng)
    _check_exact(layer, x, c)


@given(
    places=st.lists(PLACES, min_size=6, max_size=6),
    seed=st.integers(0, 1000),
    conditional=st.booleans(),
)
@settings(max_examples=15, deadline=None)
def test_spline_autoregressive_at_knots_edges_and_tails(places, seed, conditional):
    bins, bound, dim = 4, 2.0, 3
    layer = L.SplineAutoregressive(
        hidden_units=[8], ordering="random", seed=seed, bins=bins, bound=bound,
        context_dim=2 if conditional else None, dtype="float64",
    )  # fmt: skip
    layer.build((None, dim))
    perturb(layer, seed, scale=0.5)
    rng = np.random.RandomState(seed)
    c = {"context": tf.constant(rng.randn(2, 2))} if conditional else {}
    # coordinate i's spline depends on the coordinates before it in the ordering: set them
    # in that order, each relative to the knots its predecessors give it
    x = np.zeros((2, dim))
    places = iter(places)
    for i in np.argsort(layer.made.input_degrees):
        h = layer.made(tf.constant(x), c.get("context"))  # [2, P, D]
        _, knots, _ = spline_knots(tf.transpose(h, [0, 2, 1]), bound)
        for row in range(2):
            where, index = next(places)
            x[row, i] = _place(where, index, knots[row, i].numpy(), bound, rng)
    _check_exact(layer, x, c)


@pytest.mark.parametrize("cls", [L.SplineCoupling, L.SplineAutoregressive])
def test_bad_spline_options_are_clear_errors(cls):
    with pytest.raises(ValueError, match="bins must be an integer >= 2; received 1"):
        cls(bins=1)
    with pytest.raises(ValueError, match="bound must be a number > 0; received -1"):
        cls(bound=-1.0)
