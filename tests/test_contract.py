"""The layer contract: every registered layer and every registered builder passes it.

Parametrised over ``nfzoo.layers.registered_layers()`` (through tests/layer_cases.py) and
``nfzoo.list_architectures()``: a new layer or builder is tested by being registered.
Math is checked in float64 at a perturbed (generic) point, against brute-force Jacobians
(events of any rank are flattened: an image layer's Jacobian is a (HWC) x (HWC) matrix).
Conditional layers and builders (``context_dim``) get a context of the input's batch shape in
every call: the contract holds for q(x | c) at each c.
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


def ctx(layer_or_flow, batch_shape=(6,), seed=11, dtype=np.float64) -> dict:
    """``{"context": c}`` of ``batch_shape`` for a conditional layer or flow, else ``{}``."""
    dim = layer_or_flow.context_dim
    if dim is None:
        return {}
    c = np.random.RandomState(seed).randn(*batch_shape, dim).astype(dtype)
    return {"context": tf.constant(c)}


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
    c = ctx(layer)
    if not layer.has_inverse:
        with pytest.raises(NotImplementedError, match=type(layer).__name__):
            layer.inverse(data_noise(layer), **c)
        return
    z = base_noise(layer)
    np.testing.assert_allclose(layer.inverse(layer.forward(z, **c), **c), z, atol=1e-10, rtol=0)
    x = data_noise(layer, seed=2)
    np.testing.assert_allclose(layer.forward(layer.inverse(x, **c), **c), x, atol=1e-10, rtol=0)
    layer32 = make_layer(name, dtype="float32")
    c32 = ctx(layer32, dtype=np.float32)
    z32 = base_noise(layer32, dtype=np.float32)
    np.testing.assert_allclose(
        layer32.inverse(layer32.forward(z32, **c32), **c32), z32, atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_log_det_matches_brute_force(name):
    layer = make_layer(name)
    c = ctx(layer)
    z = base_noise(layer)
    fldj = layer.forward_log_det_jacobian(z, event_ndims=layer.event_ndims, **c)
    brute = brute_force_log_det(lambda u: layer.forward(u, **c), z)
    np.testing.assert_allclose(fldj, brute, atol=1e-8, rtol=0)
    x, fused_ldj = layer.forward_and_log_det(z, **c)
    np.testing.assert_allclose(fused_ldj, fldj, atol=1e-12, rtol=0)
    np.testing.assert_allclose(x, layer.forward(z, **c), atol=1e-12, rtol=0)
    if layer.has_inverse:
        ildj = layer.inverse_log_det_jacobian(x, event_ndims=layer.event_ndims, **c)
        np.testing.assert_allclose(ildj, -fldj, atol=1e-8, rtol=0)
        brute = brute_force_log_det(lambda u: layer.inverse(u, **c), x)
        np.testing.assert_allclose(ildj, brute, atol=1e-8, rtol=0)


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_event_ndims_reduction_like_tfp(name):
    # With one more event dim TFP sums the log-det over one more axis, as for its own bijectors;
    # extra batch axes pass through every layer.
    layer = make_layer(name)
    k = layer.event_ndims
    z = tf.reshape(base_noise(layer), (2, 3, *layer.event_shape))
    c = ctx(layer, (2, 3))
    per_event = layer.forward_log_det_jacobian(z, event_ndims=k, **c)
    assert per_event.shape == (2, 3)
    np.testing.assert_allclose(
        layer.forward_log_det_jacobian(z, event_ndims=k + 1, **c),
        tf.reduce_sum(per_event, -1),
        atol=1e-12,
    )
    x = layer.forward(z, **c)
    assert x.shape == (2, 3, *layer.output_event_shape)
    flat_c = {k_: tf.reshape(v, (6, -1)) for k_, v in c.items()}
    np.testing.assert_allclose(
        tf.reshape(x, (6, *layer.output_event_shape)),
        layer.forward(tf.reshape(z, (6, *layer.event_shape)), **flat_c),
        atol=1e-12,
    )


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_single_unbatched_event(name):
    # TFP allows an event without batch axes; the result has no batch axes either.
    layer = make_layer(name)
    z = base_noise(layer, n=2)
    c = ctx(layer, (2,))
    one = {k: v[0] for k, v in c.items()}
    x, fldj = layer.forward_and_log_det(z[0], **one)
    assert x.shape == layer.output_event_shape and fldj.shape == ()
    np.testing.assert_allclose(x, layer.forward(z, **c)[0], atol=1e-12)
    if layer.has_inverse:
        z0, ildj = layer.inverse_and_log_det(x, **one)
        np.testing.assert_allclose(z0, z[0], atol=1e-9)
        np.testing.assert_allclose(ildj, -fldj, atol=1e-9)


@given(data=st.data(), seed=st.integers(0, 10_000))
@settings(max_examples=4, deadline=None)
@pytest.mark.parametrize("name", LAYER_NAMES)
def test_property_round_trip_and_log_det(name, data, seed):
    shape = data.draw(st.sampled_from(LAYER_CASES[name].shapes), label="event shape")
    layer = make_layer(name, shape=shape, seed=seed)
    c = ctx(layer, (4,), seed=seed)
    z = noise(n=4, shape=shape, seed=seed)
    x, fldj = layer.forward_and_log_det(z, **c)
    brute = brute_force_log_det(lambda u: layer.forward(u, **c), z)
    np.testing.assert_allclose(fldj, brute, atol=1e-8, rtol=0)
    if layer.has_inverse:
        z_back, ildj = layer.inverse_and_log_det(x, **c)
        np.testing.assert_allclose(z_back, z, atol=1e-9, rtol=0)
        np.testing.assert_allclose(ildj, -fldj, atol=1e-8, rtol=0)


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_extreme_inputs_stay_finite(name):
    layer = make_layer(name, dtype="float32")
    c = ctx(layer, dtype=np.float32)
    big = base_noise(layer, dtype=np.float32, seed=3).numpy()
    big = tf.constant(1e4 * np.sign(big))  # |x| = 1e4 in every coordinate
    x, fldj = layer.forward_and_log_det(big, **c)
    assert np.isfinite(x).all() and np.isfinite(fldj).all()
    if layer.has_inverse:
        big = tf.constant(1e4 * np.sign(data_noise(layer, dtype=np.float32, seed=3).numpy()))
        z, ildj = layer.inverse_and_log_det(big, **c)
        assert np.isfinite(z).all() and np.isfinite(ildj).all()


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_bad_input_is_a_clear_value_error(name):
    layer = make_layer(name, dtype="float32")
    c = ctx(layer, (2,), dtype=np.float32)
    shape = layer.event_shape
    wrong = (*shape[:-1], shape[-1] + 1)
    expected = re.escape(f"event shape {shape}); received shape {(2, *wrong)}")
    with pytest.raises(ValueError, match=expected):
        layer.forward(np.zeros((2, *wrong), np.float32), **c)
    with pytest.raises(ValueError, match="floating-point input.*received dtype int32"):
        layer.forward(np.zeros((2, *shape), np.int32), **c)
    z = np.zeros((2, *shape), np.float32)
    if layer.context_dim is None:
        with pytest.raises(ValueError, match="unconditional.*takes no context"):
            layer.forward(z, context=np.zeros((2, 3), np.float32))
    else:
        with pytest.raises(ValueError, match=r"needs context=.*\[batch\.\.\., 2\]"):
            layer.forward(z)
        with pytest.raises(ValueError, match=r"context of shape \[batch\.\.\., 2\]; received"):
            layer.forward(z, context=np.zeros((2, 3), np.float32))
        with pytest.raises(ValueError, match="do not broadcast"):
            layer.forward(z, context=np.zeros((3, 2), np.float32))


# ---- layers: the TFP role ----------------------------------------------------------------


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_works_in_chain_invert_and_transformed_distribution(name):
    layer = make_layer(name)
    c = ctx(layer)
    k = layer.event_ndims
    z = base_noise(layer)
    shift = tfb.Shift(tf.constant(0.5, tf.float64))
    chain = tfb.Chain([shift, layer])  # forward: layer first, then shift
    routed = {layer.name: c}  # TFP's Chain routes keyword arguments by bijector name
    np.testing.assert_allclose(chain.forward(z, **routed), layer.forward(z, **c) + 0.5, atol=1e-12)
    np.testing.assert_allclose(
        chain.forward_log_det_jacobian(z, event_ndims=k, **routed),
        layer.forward_log_det_jacobian(z, event_ndims=k, **c),
        atol=1e-12,
    )
    composed = layer(shift)  # TFP's __call__ composes with a bijector
    np.testing.assert_allclose(
        composed.forward(z, **{layer.name: c}), layer.forward(z + 0.5, **c), atol=1e-12
    )
    base = tfd.Independent(tfd.Normal(tf.zeros(layer.event_shape, tf.float64), 1.0), k)
    if layer.has_inverse:
        x = layer.forward(z, **c)
        np.testing.assert_allclose(
            tfb.Invert(layer).forward(x, **c), layer.inverse(x, **c), atol=1e-12
        )
        dist = tfd.TransformedDistribution(base, layer)
        expected = base.log_prob(z) - layer.forward_log_det_jacobian(z, event_ndims=k, **c)
        np.testing.assert_allclose(dist.log_prob(x, bijector_kwargs=c), expected, atol=1e-9)
        assert len(dist.trainable_variables) == len(layer.trainable_weights)
    c4 = ctx(layer, (4,))
    samples = tfd.TransformedDistribution(base, layer).sample(4, seed=(1, 2), bijector_kwargs=c4)
    assert samples.shape == (4, *layer.output_event_shape)


# ---- layers: the Keras role ---------------------------------------------------------------


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_config_round_trip(name):
    layer = make_layer(name)
    config = layer.get_config()
    clone = type(layer).from_config(config)
    clone.build((None, *layer.event_shape))
    clone.set_weights(layer.get_weights())
    z, c = base_noise(layer), ctx(layer)
    for a, b in zip(layer.forward_and_log_det(z, **c), clone.forward_and_log_det(z, **c)):
        np.testing.assert_array_equal(a, b)
    assert clone.get_config() == config


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_keras_file_round_trip(name, tmp_path):
    layer = make_layer(name)
    flow = nfzoo.Flow([layer], event_shape=layer.output_event_shape, dtype="float64")
    assert flow.context_dim == layer.context_dim
    path = tmp_path / "flow.keras"
    flow.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode stays on
    z, c = base_noise(layer), ctx(layer)
    for a, b in zip(flow.generate_and_log_prob(z, **c), loaded.generate_and_log_prob(z, **c)):
        np.testing.assert_array_equal(a, b)
    if flow.has_inverse:
        x = flow.generate(z, **c)
        np.testing.assert_array_equal(flow.log_prob(x, **c), loaded.log_prob(x, **c))


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_layer_in_keras_functional_model(name):
    layer = make_layer(name)
    inputs = keras.Input(layer.event_shape, dtype="float64")
    if layer.context_dim is None:
        model = keras.Model(inputs, layer(inputs))
        feed = z = base_noise(layer)
        c = {}
    else:
        context = keras.Input((layer.context_dim,), dtype="float64")
        model = keras.Model([inputs, context], layer(inputs, context=context))
        z, c = base_noise(layer), ctx(layer)
        feed = [z, c["context"]]
    assert model.output_shape == (None, *layer.output_event_shape)
    np.testing.assert_array_equal(model(feed), layer.forward(z, **c))


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


def _fit_one_step(flow, x):
    """One XLA-compiled likelihood step on ``x`` (with contexts for a conditional flow)."""
    c = ctx(flow, (len(x),), dtype=np.float32)
    return lambda: flow.fit(x, c.get("context"), batch_size=len(x), epochs=1, verbose=0)


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
    _assert_every_weight_moves(flow, _fit_one_step(flow, x))


# ---- layers: no stale or gradient-blind results from TFP's cache ---------------------------


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_same_tensor_sees_new_weights(name):
    layer = make_layer(name)
    k = layer.event_ndims
    c = ctx(layer)
    z, x = base_noise(layer), data_noise(layer, seed=2)
    forward_methods = [
        lambda u: layer.forward(u, **c),
        lambda u: layer.forward_log_det_jacobian(u, event_ndims=k, **c),
    ]
    inverse_methods = [
        lambda u: layer.inverse(u, **c),
        lambda u: layer.inverse_log_det_jacobian(u, event_ndims=k, **c),
    ]
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
    c = ctx(layer)
    z = base_noise(layer)
    layer.forward(z, **c)  # an earlier call on the same tensor must not serve a cached result
    directions = [(layer.forward, layer.forward_log_det_jacobian, z)]
    if layer.has_inverse:
        x = layer.forward(z, **c)
        layer.inverse(x, **c)
        directions.append((layer.inverse, layer.inverse_log_det_jacobian, x))
    for transform, log_det, u in directions:
        with tf.GradientTape() as tape:
            tape.watch(u)
            loss = tf.reduce_sum(transform(u, **c)) + tf.reduce_sum(
                log_det(u, event_ndims=layer.event_ndims, **c)
            )
        grads = tape.gradient(loss, [u, *layer.trainable_weights])
        missing = [w.path for w, g in zip(layer.trainable_weights, grads[1:]) if g is None]
        assert grads[0] is not None and np.isfinite(grads[0]).all()
        assert not missing, f"no gradient through {transform.__name__} for {missing}"


@pytest.mark.parametrize("name", [n for n in LAYER_NAMES if LAYER_CASES[n].shape == (3,)])
def test_tfp_moments_match_monte_carlo(name):
    # TFP computes mean() and covariance() of a TransformedDistribution in closed form only for
    # bijectors it may take for affine (is_constant_jacobian); for any other layer it must
    # refuse. Either way nothing TFP returns may contradict a Monte-Carlo estimate.
    layer = make_layer(name, seed=4)
    c = {k: v[0] for k, v in ctx(layer, (1,)).items()}  # one context: a plain distribution
    base = tfd.MultivariateNormalDiag(tf.zeros(layer.event_shape, tf.float64))
    dist = tfd.TransformedDistribution(base, layer)
    n = 50_000
    samples = dist.sample(n, seed=(3, 4), bijector_kwargs=c).numpy()
    mc_mean, mc_cov = samples.mean(0), np.cov(samples.T)
    se = samples.std(0) / np.sqrt(n)
    checked = 0
    for moment in ("mean", "covariance", "stddev"):
        try:
            value = getattr(dist, moment)(bijector_kwargs=c).numpy()
        except NotImplementedError:
            continue
        checked += 1
        if moment == "mean":
            assert np.all(np.abs(value - mc_mean) < 6 * se + 1e-12), (value, mc_mean, se)
        elif moment == "covariance":
            np.testing.assert_allclose(value, mc_cov, atol=0.05 * np.abs(mc_cov).max())
        else:
            np.testing.assert_allclose(value, np.sqrt(np.diag(mc_cov)), rtol=0.02)
    if not layer.constant_jacobian:
        assert checked == 0, "TFP took a non-affine layer for affine"


# ---- builders --------------------------------------------------------------------------------


#: every builder, and each conditional builder again with a context ("arch|context")
BUILDERS = ARCHS + [f"{a}|context" for a in nfzoo.list_architectures(conditional=True)]
#: conditional builders whose training and integration tests run by default: one
#: autoregressive and one coupling flow (the others run with -m slow: each compiles an XLA
#: step or trains, and the default suite has a time budget)
DEFAULT_CONDITIONAL = ("maf", "nsf")


def _conditional_cases(archs):
    """``archs`` with the conditional cases outside DEFAULT_CONDITIONAL marked slow."""
    slow = [f"{a}|context" for a in nfzoo.list_architectures(conditional=True)]
    slow = {a for a in slow if a.split("|")[0] not in DEFAULT_CONDITIONAL}
    return [pytest.param(a, marks=pytest.mark.slow) if a in slow else a for a in archs]


def make_flow(arch, dtype="float64", seed=0):
    """A small instance of ``arch`` (its registered example), at a perturbed point;
    "arch|context" is its conditional form, with a conditional base."""
    arch, _, variant = arch.partition("|")
    entry = nfzoo.architectures.architecture(arch)
    options = dict(entry.example_options)
    if variant == "context":
        options.update(context_dim=2, conditional_base=True)
    flow = nfzoo.build(arch, entry.example_shape, dtype=dtype, seed=seed, **options)
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


@pytest.mark.parametrize("arch", BUILDERS)
def test_builder_density_matches_brute_force(arch):
    flow = make_flow(arch)
    z = flow_noise(flow)
    c = ctx(flow)
    x, log_q = flow.generate_and_log_prob(z, **c)
    brute = flow.base_distribution.log_prob(z) - brute_force_log_det(
        lambda u: flow.generate(u, **c), z
    )
    np.testing.assert_allclose(log_q, brute, atol=1e-8, rtol=0)
    if flow.has_inverse:
        np.testing.assert_allclose(flow.log_prob(x, **c), brute, atol=1e-8, rtol=0)
        np.testing.assert_allclose(flow.encode(x, **c), z, atol=1e-10, rtol=0)
        np.testing.assert_allclose(flow.generate(flow.encode(x, **c), **c), x, atol=1e-10, rtol=0)
        tfp_log_q = flow.distribution.log_prob(x, bijector_kwargs=c)
        np.testing.assert_allclose(tfp_log_q, brute, atol=1e-8, rtol=0)
    else:
        with pytest.raises(NotImplementedError, match="has no inverse"):
            flow.log_prob(x, **c)
    np.testing.assert_allclose(flow.bijector.forward(z, **c), x, atol=1e-12)


@pytest.mark.parametrize("arch", BUILDERS)
def test_builder_keras_file_round_trip(arch, tmp_path):
    flow = make_flow(arch, dtype="float32")
    path = tmp_path / f"{arch.replace('|', '-')}.keras"
    flow.save(path)
    loaded = keras.saving.load_model(path)
    assert json.loads(json.dumps(loaded.get_config())) == json.loads(json.dumps(flow.get_config()))
    assert loaded.context_dim == flow.context_dim
    z, c = flow_noise(flow, dtype=np.float32), ctx(flow, dtype=np.float32)
    for a, b in zip(flow.generate_and_log_prob(z, **c), loaded.generate_and_log_prob(z, **c)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("arch", _conditional_cases(BUILDERS))
def test_builder_one_jit_training_step_moves_every_weight(arch):
    flow = make_flow(arch, dtype="float32")
    if not flow.has_inverse:
        _assert_every_weight_moves(flow, lambda: _reverse_kl_step(flow))
        return
    _assert_every_weight_moves(flow, _fit_one_step(flow, training_data(flow)))


VECTOR_ARCHS = [a for a in ARCHS if nfzoo.architectures.architecture(a).event_rank == 1]
IMAGE_ARCHS = [a for a in ARCHS if nfzoo.architectures.architecture(a).event_rank == 3]


def _integral_over_2d_grid(log_prob) -> float:
    grid = np.linspace(-8.0, 8.0, 641)
    xx, yy = np.meshgrid(grid, grid)
    points = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)
    log_prob = tf.function(log_prob)
    density = np.concatenate([np.exp(log_prob(c).numpy()) for c in np.array_split(points, 8)])
    return density.sum() * (grid[1] - grid[0]) ** 2


@pytest.mark.parametrize("arch", VECTOR_ARCHS)
def test_builder_density_integrates_to_one_in_2d(arch):
    flow = nfzoo.build(arch, 2, seed=0, **dict(nfzoo.architecture(arch).example_options))
    if not flow.has_inverse:
        pytest.skip(f"{arch} has no inverse: its density is only known at its own samples")
    x = nfzoo.data.make_moons(1024, seed=1)
    flow.compile(learning_rate=5e-3)
    flow.fit(x, batch_size=128, epochs=3, verbose=0)  # 24 steps: a trained, non-trivial density
    assert abs(_integral_over_2d_grid(flow.log_prob) - 1.0) < 1e-3


@pytest.mark.parametrize(
    "arch",
    [
        a if a in DEFAULT_CONDITIONAL else pytest.param(a, marks=pytest.mark.slow)
        for a in nfzoo.list_architectures(conditional=True)
    ],
)
def test_conditional_density_integrates_to_one_for_each_context(arch):
    # q(x | c) is a density in x for every c: trained on moons rotated by the context's angle
    flow = nfzoo.build(arch, 2, seed=0, context_dim=1, conditional_base=True)
    rng = np.random.RandomState(0)
    angle = rng.uniform(-1.5, 1.5, (1024, 1)).astype(np.float32)
    x = nfzoo.data.make_moons(1024, seed=1)
    cos, sin = np.cos(angle[:, 0]), np.sin(angle[:, 0])
    x = np.stack([cos * x[:, 0] - sin * x[:, 1], sin * x[:, 0] + cos * x[:, 1]], 1)
    flow.compile(learning_rate=5e-3)
    flow.fit(x.astype(np.float32), angle, batch_size=128, epochs=2, verbose=0)  # 16 steps
    for c in (-1.0, 0.7):
        context = tf.constant([c], tf.float32)  # one context for every grid point
        total = _integral_over_2d_grid(lambda u, context=context: flow.log_prob(u, context=context))
        assert abs(total - 1.0) < 1e-3, (c, total)


@pytest.mark.parametrize("arch", IMAGE_ARCHS)
def test_image_builder_density_integrates_to_one(arch):
    # A 2x2 grey image with K = 4 levels: the flow's density lives on the Logit's range
    # (lo, hi)^4, a box that Monte Carlo integrates well: E_uniform[q] * volume = 1.
    k, alpha = 4, 0.05
    flow = nfzoo.build(arch, (2, 2, 1), num_scales=1, hidden_channels=8, num_levels=k, alpha=alpha)
    perturb(flow, seed=5, scale=0.1)  # a generic, non-identity density
    lo, hi = -alpha * k / (1 - 2 * alpha), k * (1 - alpha) / (1 - 2 * alpha)
    u = np.random.RandomState(0).uniform(lo, hi, (2**20, 2, 2, 1)).astype(np.float32)
    log_prob = tf.function(flow.log_prob)
    q = np.concatenate([np.exp(log_prob(c).numpy()) for c in np.array_split(u, 32)])
    volume = (hi - lo) ** 4
    estimate, se = q.mean() * volume, q.std() * volume / np.sqrt(len(q))
    assert se < 0.02
    assert abs(estimate - 1.0) < 4 * se, (estimate, se)
