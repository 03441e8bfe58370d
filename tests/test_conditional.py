"""Conditional flows q(x | c) through the public API: the shape rule (TFP batch semantics),
agreement with the TFP views, training with fit on (data, context) pairs from numpy and from
tf.data under XLA, saving, and the errors a user sees."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import nfzoo

D, C = 3, 2


def conditional_flow(arch="maf", dtype="float64", seed=0, **options):
    flow = nfzoo.build(arch, D, context_dim=C, dtype=dtype, seed=seed, **options)
    for i, w in enumerate(flow.trainable_weights):  # a generic point, not the identity
        rng = np.random.RandomState(i)
        w.assign(w.numpy() + 0.2 * rng.standard_normal(w.shape).astype(w.dtype))
    return flow


def rows(n, width, seed):
    return np.random.RandomState(seed).randn(n, width)


@pytest.mark.parametrize("arch", nfzoo.list_architectures(conditional=True))
def test_shape_rule_follows_tfp_batch_semantics(arch):
    flow = conditional_flow(arch, conditional_base=True)
    x, c = rows(5, D, 0), rows(5, C, 1)
    log_q = flow.log_prob(x, context=c)
    assert log_q.shape == (5,)
    # row i is log q(x_i | c_i): the same as one unbatched event at a time
    one_by_one = [flow.log_prob(x[i], context=c[i]) for i in range(5)]
    assert all(v.shape == () for v in one_by_one)
    np.testing.assert_allclose(log_q, one_by_one, atol=1e-10)
    # one context [C] serves every x
    np.testing.assert_allclose(
        flow.log_prob(x, context=c[2]), flow.log_prob(x, context=np.tile(c[2], (5, 1))), atol=1e-12
    )
    # batch axes broadcast: x [4, 1, D] with c [5, C] gives [4, 5]
    grid = flow.log_prob(x[:4, None, :], context=c)
    assert grid.shape == (4, 5)
    np.testing.assert_allclose(grid[:, 3], flow.log_prob(x[:4], context=c[3]), atol=1e-12)
    # sample(n, context=c [B, C]) gives n draws per context: [n, B, D]
    s = flow.sample(7, seed=3, context=c)
    assert s.shape == (7, 5, D)
    assert flow.sample(7, seed=3, context=c[0]).shape == (7, D)
    assert flow.sample(0, context=c).shape == (0, 5, D)
    np.testing.assert_array_equal(s, flow.sample(7, seed=3, context=c))
    # generate / encode / generate_and_log_prob take the context the same way
    z = rows(5, D, 4)
    x_gen, log_q_gen = flow.generate_and_log_prob(z, context=c)
    np.testing.assert_allclose(x_gen, flow.generate(z, context=c), atol=1e-12)
    if flow.has_inverse:
        np.testing.assert_allclose(flow.encode(x_gen, context=c), z, atol=1e-9)
        np.testing.assert_allclose(log_q_gen, flow.log_prob(x_gen, context=c), atol=1e-9)


def test_the_context_changes_the_density_and_the_samples():
    flow = conditional_flow("nsf", conditional_base=True)
    x, c = rows(6, D, 0), rows(6, C, 1)
    assert not np.allclose(flow.log_prob(x, context=c), flow.log_prob(x, context=c + 1.0))
    assert not np.allclose(
        flow.sample(4, seed=0, context=c[0]), flow.sample(4, seed=0, context=c[1])
    )


@pytest.mark.parametrize("arch", ["realnvp", "nsf-ar", "iaf"])
def test_tfp_views_take_the_context_through_bijector_kwargs(arch):
    flow = conditional_flow(arch)
    x, c = rows(5, D, 0), rows(5, C, 1)
    dist = flow.distribution
    kwargs = {"bijector_kwargs": {"context": c}}
    np.testing.assert_allclose(dist.log_prob(x, **kwargs), flow.log_prob(x, context=c), atol=1e-9)
    z = rows(5, D, 2)
    np.testing.assert_allclose(flow.bijector.forward(z, context=c), flow.generate(z, context=c))
    # TFP's sample shape broadcasts against the context's batch: [n, B] for c [B, C]
    samples = dist.sample([4, 5], seed=(1, 2), **kwargs)
    assert samples.shape == (4, 5, D)
    np.testing.assert_allclose(
        dist.log_prob(samples, **kwargs), flow.log_prob(samples, context=c), atol=1e-8
    )


def test_errors_name_what_was_expected_and_received():
    flow = conditional_flow()
    x = rows(4, D, 0)
    with pytest.raises(ValueError, match=r"conditional \(context_dim=2\) and needs context="):
        flow.log_prob(x)
    with pytest.raises(
        ValueError, match=r"context of shape \[batch\.\.\., 2\]; received shape \[4, 3\]"
    ):
        flow.log_prob(x, context=rows(4, 3, 1))
    with pytest.raises(ValueError, match=r"do not broadcast"):
        flow.log_prob(x, context=rows(3, C, 1))
    with pytest.raises(ValueError, match="floating-point input"):
        flow.sample(2, context=np.zeros((1, C), np.int32))
    with pytest.raises(ValueError, match="needs context="):
        flow.fit(x.astype(np.float32), epochs=1, verbose=0)
    plain = nfzoo.build("maf", D)
    with pytest.raises(ValueError, match="unconditional.*takes no context"):
        plain.log_prob(x, context=rows(4, C, 1))
    with pytest.raises(ValueError, match="unconditional.*takes no context"):
        plain.fit(x, rows(4, C, 1), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="unconditional.*takes no context"):
        plain.fit(x, y=x, epochs=1, verbose=0)  # a flow has no targets
    with pytest.raises(ValueError, match="planar does not take a context"):
        nfzoo.build("planar", D, context_dim=C)
    with pytest.raises(ValueError, match="context_dim must be a positive integer"):
        nfzoo.build("maf", D, context_dim=2.5)
    with pytest.raises(ValueError, match="conditional_base=True needs context_dim"):
        nfzoo.build("maf", D, conditional_base=True)


def linear_gaussian(n, seed):
    """x | c ~ N(A c + b, diag(0.3^2)) with a fixed A: a conditional density with a known
    conditional entropy, 0.5 D log(2 pi e 0.09) nats."""
    rng = np.random.RandomState(seed)
    a = np.array([[1.0, -2.0], [0.5, 1.0], [-1.5, 0.0]])
    c = rng.randn(n, C)
    x = c @ a.T + np.array([0.5, 0.0, -1.0]) + 0.3 * rng.randn(n, D)
    return x.astype(np.float32), c.astype(np.float32)


CONDITIONAL_ENTROPY = 0.5 * D * np.log(2 * np.pi * np.e * 0.09)


# a spline acts on [-B, B] only: with means that move by several units with c, the
# conditional base N(mu(c), sigma(c)^2) carries the move
@pytest.mark.parametrize(
    "arch, options",
    [pytest.param("maf", {}, marks=pytest.mark.slow), ("nsf", {"conditional_base": True})],
)
def test_fit_learns_a_conditional_density_from_numpy_and_tf_data(arch, options):
    x, c = linear_gaussian(4096, seed=0)
    x_test, c_test = linear_gaussian(2048, seed=1)
    flow = nfzoo.build(arch, D, context_dim=C, hidden_units=[32, 32], seed=0, **options)
    flow.compile(learning_rate=3e-3)
    assert flow.jit_compile is True
    history = flow.fit(
        x, c, batch_size=256, epochs=8, validation_data=(x_test, c_test), verbose=0
    )  # 128 steps
    nll = float(flow.evaluate(x_test, c_test, batch_size=512, verbose=0))
    assert np.isfinite(history.history["val_loss"]).all()
    unconditional_gaussian = nfzoo.data.gaussian_baseline_nll(x, x_test)
    # far better than any model that ignores c, and within 0.45 nats of the truth
    assert nll < unconditional_gaussian - 1.5, (nll, unconditional_gaussian)
    assert nll < CONDITIONAL_ENTROPY + 0.45, (nll, CONDITIONAL_ENTROPY)
    if arch != "maf":
        return  # one architecture is enough for the tf.data route
    # the same steps from a tf.data pipeline of (x, c) pairs give a model as good
    again = nfzoo.build(arch, D, context_dim=C, hidden_units=[32, 32], seed=0, **options)
    again.compile(learning_rate=3e-3)
    pairs = tf.data.Dataset.from_tensor_slices((x, c)).shuffle(4096, seed=0).batch(256)
    again.fit(pairs, epochs=8, verbose=0)
    assert abs(float(again.evaluate(x_test, c_test, batch_size=512, verbose=0)) - nll) < 0.1
    # predict returns log q(x | c)
    np.testing.assert_allclose(
        flow.predict(x_test[:10], c_test[:10], verbose=0),
        flow.log_prob(x_test[:10], context=c_test[:10]),
        rtol=1e-5,
        atol=1e-5,
    )


def test_sample_weights_ride_as_the_third_element():
    x, c = linear_gaussian(512, seed=0)
    flow = nfzoo.build("realnvp", D, context_dim=C, num_layers=2, hidden_units=[8], seed=0)
    flow.compile(steps_per_execution=1)
    weights = np.zeros(512, np.float32)
    weights[:256] = 1.0
    triples = tf.data.Dataset.from_tensor_slices((x, c, weights)).batch(512)
    loss = flow.evaluate(triples, verbose=0)
    expected = -np.mean(flow.log_prob(x[:256], context=c[:256]))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_actnorm_initialises_through_the_conditional_layers():
    x, c = linear_gaussian(1024, seed=0)
    flow = nfzoo.build("glow-1d", D, context_dim=C, num_layers=2, hidden_units=[8], seed=0)
    for layer in flow.flow_layers:  # couplings away from the identity, so init needs c
        if layer.context_dim:
            layer.conditioner.out.kernel.assign(0.1 * np.ones(layer.conditioner.out.kernel.shape))
    flow.fit(x, c, batch_size=1024, epochs=1, verbose=0)
    assert flow.is_initialized


def test_conditional_flows_save_and_load(tmp_path):
    x, c = linear_gaussian(8, seed=0)
    flow = conditional_flow("nsf-ar", dtype="float32", conditional_base=True)
    flow.save(tmp_path / "f.keras")
    loaded = keras.saving.load_model(tmp_path / "f.keras")
    np.testing.assert_array_equal(loaded.log_prob(x, context=c), flow.log_prob(x, context=c))
    folder = flow.save_pretrained(tmp_path / "pretrained")
    again = nfzoo.load(folder)
    assert again.context_dim == C
    np.testing.assert_array_equal(again.log_prob(x, context=c), flow.log_prob(x, context=c))


def test_contexts_are_standardised_from_the_first_batch_everywhere():
    # contexts in odd units (mean 100, scale 50): the layers see them standardised
    rng = np.random.RandomState(0)
    c = (100.0 + 50.0 * rng.randn(512, C)).astype(np.float32)
    x = (0.02 * c @ np.ones((C, D)) + rng.randn(512, D)).astype(np.float32)
    flow = nfzoo.build("realnvp", D, context_dim=C, num_layers=2, hidden_units=[8], seed=0)
    assert not flow.is_initialized
    flow.fit(x, c, batch_size=512, epochs=1, verbose=0)
    np.testing.assert_allclose(flow.context_shift, c.mean(0), rtol=1e-5)
    np.testing.assert_allclose(flow.context_scale, c.std(0), rtol=1e-4)
    # every route sees the same standardised context: sample = generate of the same noise,
    # the TFP view = log_prob, a saved and loaded flow = the flow
    z = flow.base_distribution.sample(6, seed=(5, 0))
    np.testing.assert_allclose(
        flow.sample(6, seed=5, context=c[0]), flow.generate(z, context=c[0]), atol=1e-5
    )
    kwargs = {"bijector_kwargs": {"context": c[:6]}}
    np.testing.assert_allclose(
        flow.distribution.log_prob(x[:6], **kwargs), flow.log_prob(x[:6], context=c[:6]), atol=1e-5
    )
    plain = nfzoo.Flow.from_config({**flow.get_config(), "standardize_context": False})
    plain.set_weights(flow.get_weights())
    plain.context_shift.assign(np.zeros(C))
    plain.context_scale.assign(np.ones(C))
    standardised = (c[:6] - c.mean(0)) / c.std(0)
    np.testing.assert_allclose(
        plain.log_prob(x[:6], context=standardised), flow.log_prob(x[:6], context=c[:6]), atol=1e-4
    )


def test_standardize_puts_an_actnorm_next_to_the_data():
    rng = np.random.RandomState(0)
    x = (np.array([20.0, -7.0, 3.0]) + np.array([5.0, 0.1, 1.0]) * rng.randn(512, D)).astype(
        np.float32
    )
    flow = nfzoo.build("nsf", D, standardize=True, num_layers=2, hidden_units=[8])
    assert flow.flow_layers[-1].name == "standardize"
    flow.initialize(x)
    z = flow.encode(x)  # at initialisation the splines are the identity
    np.testing.assert_allclose(np.mean(z, 0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.std(z, 0), 1.0, atol=1e-3)
