"""The layer contract: every registered layer and every registered builder passes it.

Parametrised over ``nfzoo.layers.registered_layers()`` (through tests/layer_cases.py) and
``nfzoo.list_architectures()``: a new layer or builder is tested by being registered.
Math is checked in float64 at a perturbed (generic) point, against brute-force Jacobians
(events of any rank are flattened: an image layer's Jacobian is a (HWC) x (HWC) matrix).
"""

import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from conftest import brute_force_log_det, perturb
from hypothesis import given, settings
from hypothesis import strategies as st
from layer_cases import LAYER_CASES

import nfzoo
from nfzoo.layers import registered_layers

tfb, tfd = tfp.bijectors, tfp.distributions

DIM = 3
LAYER_NAMES = sorted(LAYER_CASES)
ARCHS = nfzoo.list_architectures()


def make_layer(name, dtype="float64", shape=None, seed=0):
    layer = LAYER_CASES[name].make(dtype)
    layer.build((None, *(shape or LAYER_CASES[name].shape)))
    perturb(layer, seed)
    return layer


def noise(n=6, shape=(DIM,), dtype=np.float64, seed=1, scale=1.0):
    return tf.constant(scale * np.random.RandomState(seed).randn(n, *shape).astype(dtype))


def base_noise(layer, **kwargs):
    """Noise on the layer's forward-input (base) side."""
    return noise(shape=layer.event_shape, **kwargs)


def data_noise(layer, **kwargs):
    """Noise on the layer's forward-output (data) side."""
    return noise(shape=layer.output_event_shape, **kwargs)


def test_every_registered_layer_has_a_case():
    assert set(registered_layers()) == {name.split("/")[0] for name in LAYER_CASES}, (
        "every registered layer needs a contract case in tests/layer_cases.py"
    )


# ---- layers: the math ------------------------------------------------------------------


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_round_trip(name):
    layer = make_layer(name)
    if not layer.has_inverse:
        with pytest.raises(NotImplementedError, match=type(layer).__name__):
            layer.inverse(data_noise(layer))
        return
    z = base_noise(layer)
    np.testing.assert_allclose(layer.inverse(layer.forward(z)), z, atol=1e-10, rtol=0)
    x = data_noise(layer, seed=2)
    np.testing.assert_allclose(layer.forward(layer.inverse(x)), x, atol=1e-10, rtol=0)
    layer32 = make_layer(name, dtype="float32")
    z32 = base_noise(layer32, dtype=np.float32)
    np.testing.assert_allclose(layer32.inverse(layer32.forward(z32)), z32, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_log_det_matches_brute_force(name):
    layer = make_layer(name)
    z = base_noise(layer)
    fldj = layer.forward_log_det_jacobian(z, event_ndims=layer.event_ndims)
    np.testing.assert_allclose(fldj, brute_force_log_det(layer.forward, z), atol=1e-8, rtol=0)
    x, fused_ldj = layer.forward_and_log_det(z)
    np.testing.assert_allclose(fused_ldj, fldj, atol=1e-12, rtol=0)
    np.testing.assert_allclose(x, layer.forward(z), atol=1e-12, rtol=0)
    if layer.has_inverse:
        ildj = layer.inverse_log_det_jacobian(x, event_ndims=layer.event_ndims)
        np.testing.assert_allclose(ildj, -fldj, atol=1e-8, rtol=0)
        np.testing.assert_allclose(ildj, brute_force_log_det(layer.inverse, x), atol=1e-8, rtol=0)


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_event_ndims_reduction_like_tfp(name):
    # With one more event dim TFP sums the log-det over one more axis, as for its own bijectors;
    # extra batch axes pass through every layer.
    layer = make_layer(name)
    k = layer.event_ndims
    z = tf.reshape(base_noise(layer), (2, 3, *layer.event_shape))
    per_event = layer.forward_log_det_jacobian(z, event_ndims=k)
    assert per_event.shape == (2, 3)
    np.testing.assert_allclose(
        layer.forward_log_det_jacobian(z, event_ndims=k + 1),
        tf.reduce_sum(per_event, -1),
        atol=1e-12,
    )
    x = layer.forward(z)
    assert x.shape == (2, 3, *layer.output_event_shape)
    np.testing.assert_allclose(
        tf.reshape(x, (6, *layer.output_event_shape)),
        layer.forward(tf.reshape(z, (6, *layer.event_shape))),
        atol=1e-12,
    )


@given(data=st.data(), seed=st.integers(0, 10_000))
@settings(max_examples=4, deadline=None)
@pytest.mark.parametrize("name", LAYER_NAMES)
def test_property_round_trip_and_log_det(name, data, seed):
    shape = data.draw(st.sampled_from(LAYER_CASES[name].shapes), label="event shape")
    layer = make_layer(name, shape=shape, seed=seed)
    z = noise(n=4, shape=shape, seed=seed)
    x, fldj = layer.forward_and_log_det(z)
    np.testing.assert_allclose(fldj, brute_force_log_det(layer.forward, z), atol=1e-8, rtol=0)
    if layer.has_inverse:
        z_back, ildj = layer.inverse_and_log_det(x)
        np.testing.assert_allclose(z_back, z, atol=1e-9, rtol=0)
        np.testing.assert_allclose(ildj, -fldj, atol=1e-8, rtol=0)


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_extreme_inputs_stay_finite(name):
    layer = make_layer(name, dtype="float32")
    big = base_noise(layer, dtype=np.float32, seed=3).numpy()
    big = tf.constant(1e4 * np.sign(big))  # |x| = 1e4 in every coordinate
    x, fldj = layer.forward_and_log_det(big)
    assert np.isfinite(x).all() and np.isfinite(fldj).all()
    if layer.has_inverse:
        big = tf.constant(1e4 * np.sign(data_noise(layer, dtype=np.float32, seed=3).numpy()))
        z, ildj = layer.inverse_and_log_det(big)
        assert np.isfinite(z).all() and np.isfinite(ildj).all()


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_bad_input_is_a_clear_value_error(name):
    layer = make_layer(name, dtype="float32")
    shape = layer.event_shape
    wrong = (*shape[:-1], shape[-1] + 1)
    expected = re.escape(f"event shape {shape}); received shape {(2, *wrong)}")
    with pytest.raises(ValueError, match=expected):
        layer.forward(np.zeros((2, *wrong), np.float32))
    with pytest.raises(ValueError, match="floating-point input.*received dtype int32"):
        layer.forward(np.zeros((2, *shape), np.int32))


# ---- layers: the TFP role ----------------------------------------------------------------


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_works_in_chain_invert_and_transformed_distribution(name):
    layer = make_layer(name)
    k = layer.event_ndims
    z = base_noise(layer)
    shift = tfb.Shift(tf.constant(0.5, tf.float64))
    chain = tfb.Chain([shift, layer])  # forward: layer first, then shift
    np.testing.assert_allclose(chain.forward(z), layer.forward(z) + 0.5, atol=1e-12)
    np.testing.assert_allclose(
        chain.forward_log_det_jacobian(z, event_ndims=k),
        layer.forward_log_det_jacobian(z, event_ndims=k),
        atol=1e-12,
    )
    composed = layer(shift)  # TFP's __call__ composes with a bijector
    np.testing.assert_allclose(composed.forward(z), layer.forward(z + 0.5), atol=1e-12)
    base = tfd.Independent(tfd.Normal(tf.zeros(layer.event_shape, tf.float64), 1.0), k)
    if layer.has_inverse:
        x = layer.forward(z)
        np.testing.assert_allclose(tfb.Invert(layer).forward(x), layer.inverse(x), atol=1e-12)
        dist = tfd.TransformedDistribution(base, layer)
        expected = base.log_prob(z) - layer.forward_log_det_jacobian(z, event_ndims=k)
        np.testing.assert_allclose(dist.log_prob(x), expected, atol=1e-9)
        assert len(dist.trainable_variables) == len(layer.trainable_weights)
    samples = tfd.TransformedDistribution(base, layer).sample(4, seed=(1, 2))
    assert samples.shape == (4, *layer.output_event_shape)


# ---- layers: the Keras role ---------------------------------------------------------------


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_config_round_trip(name):
    layer = make_layer(name)
    config = layer.get_config()
    clone = type(layer).from_config(config)
    clone.build((None, *layer.event_shape))
    clone.set_weights(layer.get_weights())
    z = base_noise(layer)
    for a, b in zip(layer.forward_and_log_det(z), clone.forward_and_log_det(z)):
        np.testing.assert_array_equal(a, b)
    assert clone.get_config() == config


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_keras_file_round_trip(name, tmp_path):
    layer = make_layer(name)
    flow = nfzoo.Flow([layer], event_shape=layer.output_event_shape, dtype="float64")
    path = tmp_path / "flow.keras"
    flow.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode stays on
    z = base_noise(layer)
    for a, b in zip(flow.generate_and_log_prob(z), loaded.generate_and_log_prob(z)):
        np.testing.assert_array_equal(a, b)
    if flow.has_inverse:
        x = flow.generate(z)
        np.testing.assert_array_equal(flow.log_prob(x), loaded.log_prob(x))


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_layer_in_keras_functional_model(name):
    layer = make_layer(name)
    inputs = keras.Input(layer.event_shape, dtype="float64")
    model = keras.Model(inputs, layer(inputs))
    assert model.output_shape == (None, *layer.output_event_shape)
    z = base_noise(layer)
    np.testing.assert_array_equal(model(z), layer.forward(z))


def _reverse_kl_step(flow):
    """One XLA-compiled gradient step of reverse KL to N(1, I): for flows without inverse,
    which cannot be fitted by likelihood."""
    optimizer = keras.optimizers.Adam(1e-2)
    variables = flow.trainable_variables

    @tf.function(jit_compile=True)
    def step(z):
        with tf.GradientTape() as tape:
            x, log_q = flow.generate_and_log_prob(z)
            loss = tf.reduce_mean(log_q + 0.5 * tf.reduce_sum((x - 1.0) ** 2, axis=-1))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    step(tf.random.normal((64, *flow.base_event_shape), dtype=flow.compute_dtype))


def _assert_every_weight_moves(flow, train):
    before = [w.numpy().copy() for w in flow.trainable_weights]
    train()
    unchanged = [
        w.path for w, b in zip(flow.trainable_weights, before) if np.array_equal(w.numpy(), b)
    ]
    assert not unchanged, f"weights not updated by one compiled step: {unchanged}"


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_one_jit_training_step_moves_every_weight(name):
    layer = make_layer(name, dtype="float32")
    flow = nfzoo.Flow([layer], event_shape=layer.output_event_shape)
    if not flow.has_inverse:
        _assert_every_weight_moves(flow, lambda: _reverse_kl_step(flow))
        return
    x = np.random.RandomState(0).randn(64, *flow.data_event_shape).astype(np.float32)
    flow.compile(learning_rate=1e-2)
    assert flow.jit_compile is True
    _assert_every_weight_moves(flow, lambda: flow.fit(x, batch_size=64, epochs=1, verbose=0))


# ---- layers: no stale or gradient-blind results from TFP's cache ---------------------------


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_same_tensor_sees_new_weights(name):
    layer = make_layer(name)
    k = layer.event_ndims
    z, x = base_noise(layer), data_noise(layer, seed=2)
    forward_methods = [layer.forward, lambda u: layer.forward_log_det_jacobian(u, event_ndims=k)]
    inverse_methods = [layer.inverse, lambda u: layer.inverse_log_det_jacobian(u, event_ndims=k)]
    calls = [(m, z) for m in forward_methods]
    if layer.has_inverse:
        calls += [(m, x) for m in inverse_methods]
    before = [m(u).numpy() for m, u in calls]
    perturb(layer, seed=99)
    after = [m(u).numpy() for m, u in calls]
    fresh = [m(tf.identity(u)).numpy() for m, u in calls]  # a new tensor object: no cache
    for a, f in zip(after, fresh):
        np.testing.assert_array_equal(a, f)
    if layer.trainable_weights:
        assert any(not np.allclose(b, a) for b, a in zip(before, after))


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_gradients_flow_through_every_public_method(name):
    layer = make_layer(name)
    z = base_noise(layer)
    layer.forward(z)  # an earlier call on the same tensor must not serve a cached result
    directions = [(layer.forward, layer.forward_log_det_jacobian)]
    if layer.has_inverse:
        x = layer.forward(z)
        layer.inverse(x)
        directions.append((layer.inverse, layer.inverse_log_det_jacobian))
    for transform, log_det in directions:
        u = z if transform == layer.forward else x
        with tf.GradientTape() as tape:
            tape.watch(u)
            loss = tf.reduce_sum(transform(u)) + tf.reduce_sum(
                log_det(u, event_ndims=layer.event_ndims)
            )
        grads = tape.gradient(loss, [u, *layer.trainable_weights])
        missing = [w.path for w, g in zip(layer.trainable_weights, grads[1:]) if g is None]
        assert grads[0] is not None and np.isfinite(grads[0]).all()
        assert not missing, f"no gradient through {transform.__name__} for {missing}"


# ---- builders --------------------------------------------------------------------------------


def make_flow(arch, dtype="float64", seed=0):
    """A small instance of ``arch`` (its registered example), at a perturbed point."""
    entry = nfzoo.models.architecture(arch)
    flow = nfzoo.build(
        arch, entry.example_shape, dtype=dtype, seed=seed, **dict(entry.example_options)
    )
    perturb(flow, seed, scale=0.1)
    return flow


def flow_noise(flow, **kwargs):
    return noise(shape=flow.base_event_shape, **kwargs)


def training_data(flow, n=64):
    """Data for one training step: moons padded with noise for vector flows; dequantized
    counts in [0, K] (K from the flow's Logit layer) or Gaussian pixels for image flows."""
    if len(flow.data_event_shape) == 1:
        x = nfzoo.data.make_moons(n)
        pad = np.zeros((n, flow.data_event_shape[0] - 2), np.float32)
        return np.concatenate([x, pad], axis=1) + 0.1 * noise(n=n, dtype=np.float32).numpy()
    rng = np.random.RandomState(0)
    logit = [layer for layer in flow.flow_layers if isinstance(layer, nfzoo.layers.Logit)]
    shape = (n, *flow.data_event_shape)
    if logit:
        k = logit[0].num_levels
        return (rng.randint(0, k, shape) + rng.rand(*shape)).astype(np.float32)
    return rng.randn(*shape).astype(np.float32)


@pytest.mark.parametrize("arch", ARCHS)
def test_builder_density_matches_brute_force(arch):
    flow = make_flow(arch)
    z = flow_noise(flow)
    x, log_q = flow.generate_and_log_prob(z)
    brute = flow.base_distribution.log_prob(z) - brute_force_log_det(flow.generate, z)
    np.testing.assert_allclose(log_q, brute, atol=1e-8, rtol=0)
    if flow.has_inverse:
        np.testing.assert_allclose(flow.log_prob(x), brute, atol=1e-8, rtol=0)
        np.testing.assert_allclose(flow.encode(x), z, atol=1e-10, rtol=0)
        np.testing.assert_allclose(flow.generate(flow.encode(x)), x, atol=1e-10, rtol=0)
        np.testing.assert_allclose(flow.distribution.log_prob(x), brute, atol=1e-8, rtol=0)
    else:
        with pytest.raises(NotImplementedError, match="has no inverse"):
            flow.log_prob(x)
    np.testing.assert_allclose(flow.bijector.forward(z), x, atol=1e-12)


@pytest.mark.parametrize("arch", ARCHS)
def test_builder_keras_file_round_trip(arch, tmp_path):
    flow = make_flow(arch, dtype="float32")
    path = tmp_path / f"{arch}.keras"
    flow.save(path)
    loaded = keras.saving.load_model(path)
    assert json.loads(json.dumps(loaded.get_config())) == json.loads(json.dumps(flow.get_config()))
    z = flow_noise(flow, dtype=np.float32)
    for a, b in zip(flow.generate_and_log_prob(z), loaded.generate_and_log_prob(z)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("arch", ARCHS)
def test_builder_one_jit_training_step_moves_every_weight(arch):
    flow = make_flow(arch, dtype="float32")
    if not flow.has_inverse:
        _assert_every_weight_moves(flow, lambda: _reverse_kl_step(flow))
        return
    x = training_data(flow)
    _assert_every_weight_moves(flow, lambda: flow.fit(x, batch_size=64, epochs=1, verbose=0))


VECTOR_ARCHS = [a for a in ARCHS if nfzoo.models.architecture(a).event_rank == 1]
IMAGE_ARCHS = [a for a in ARCHS if nfzoo.models.architecture(a).event_rank == 3]


@pytest.mark.parametrize("arch", VECTOR_ARCHS)
def test_builder_density_integrates_to_one_in_2d(arch):
    flow = nfzoo.build(arch, 2, seed=0)
    if not flow.has_inverse:
        pytest.skip(f"{arch} has no inverse: its density is only known at its own samples")
    x = nfzoo.data.make_moons(1024, seed=1)
    flow.compile(learning_rate=5e-3)
    flow.fit(x, batch_size=128, epochs=3, verbose=0)  # 24 steps: a trained, non-trivial density
    grid = np.linspace(-8.0, 8.0, 641)
    xx, yy = np.meshgrid(grid, grid)
    points = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)
    log_prob = tf.function(flow.log_prob)
    density = np.concatenate([np.exp(log_prob(c).numpy()) for c in np.array_split(points, 8)])
    cell = (grid[1] - grid[0]) ** 2
    assert abs(density.sum() * cell - 1.0) < 1e-3


@pytest.mark.parametrize("arch", IMAGE_ARCHS)
def test_image_builder_density_integrates_to_one(arch):
    # A 2x2 grey image with K = 4 levels: the flow's density lives on the Logit's range
    # (lo, hi)^4, a box that Monte Carlo integrates well: E_uniform[q] * volume = 1.
    k, alpha = 4, 0.05
    flow = nfzoo.build(arch, (2, 2, 1), levels=1, hidden_channels=8, num_levels=k, alpha=alpha)
    perturb(flow, seed=5, scale=0.1)  # a generic, non-identity density
    lo, hi = -alpha * k / (1 - 2 * alpha), k * (1 - alpha) / (1 - 2 * alpha)
    u = np.random.RandomState(0).uniform(lo, hi, (2**20, 2, 2, 1)).astype(np.float32)
    log_prob = tf.function(flow.log_prob)
    q = np.concatenate([np.exp(log_prob(c).numpy()) for c in np.array_split(u, 32)])
    volume = (hi - lo) ** 4
    estimate, se = q.mean() * volume, q.std() * volume / np.sqrt(len(q))
    assert se < 0.02
    assert abs(estimate - 1.0) < 4 * se, (estimate, se)
