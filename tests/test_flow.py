"""Flow: the public API a user sees (shapes, dtypes, inputs, training, evaluation, errors)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import nfzoo
from nfzoo import layers as L

MOONS = nfzoo.data.make_moons(512, seed=3)


def test_sample_shapes_dtypes_and_seed():
    flow = nfzoo.build("realnvp", 2)
    s = flow.sample(7, seed=1)
    assert s.shape == (7, 2) and s.dtype == tf.float32
    np.testing.assert_array_equal(s, flow.sample(7, seed=1))
    assert not np.array_equal(flow.sample(7, seed=1), flow.sample(7, seed=2))
    assert flow.sample(0).shape == (0, 2)
    with pytest.raises(ValueError, match="non-negative integer"):
        flow.sample(-1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtypes_flow_through(dtype):
    flow = nfzoo.build("maf", 3, dtype=dtype, num_layers=2, hidden_units=[8])
    assert all(w.dtype == dtype for w in flow.trainable_weights)
    x = np.random.randn(4, 3)  # float64 input is cast to the flow's dtype, as Keras does
    assert flow.log_prob(x).dtype == dtype
    assert flow.sample(3).dtype == dtype
    assert flow(x).dtype == dtype


def test_mixed_dtypes_are_refused():
    with pytest.raises(ValueError, match="dtype float64 but layer 0"):
        nfzoo.Flow([L.Permute(dtype="float32")], event_shape=(2,), dtype="float64")


def test_log_prob_matches_tfp_views():
    flow = nfzoo.build("glow-1d", 2, dtype="float64")
    flow.initialize(MOONS)
    x = MOONS[:16].astype(np.float64)
    np.testing.assert_allclose(flow.distribution.log_prob(x), flow.log_prob(x), atol=1e-10)
    z = flow.encode(x)
    np.testing.assert_allclose(flow.bijector.inverse(x), z, atol=1e-10)
    np.testing.assert_allclose(flow.generate(z), x, atol=1e-10)
    _, log_q = flow.generate_and_log_prob(z)
    np.testing.assert_allclose(log_q, flow.log_prob(x), atol=1e-10)


def test_fit_accepts_numpy_tensors_and_datasets():
    for data in (
        MOONS,
        tf.constant(MOONS),
        tf.data.Dataset.from_tensor_slices(MOONS).batch(128),
        tf.data.Dataset.from_tensor_slices((MOONS,)).batch(128),
    ):
        flow = nfzoo.build("nice", 2, num_layers=2, hidden_units=[16])
        history = flow.fit(
            data,
            epochs=1,
            verbose=0,
            **({} if isinstance(data, tf.data.Dataset) else {"batch_size": 128}),
        )
        assert np.isfinite(history.history["loss"][0])


def test_fit_without_compile_uses_adam_and_xla():
    flow = nfzoo.build("maf", 2, num_layers=2, hidden_units=[16])
    flow.fit(MOONS, batch_size=128, epochs=1, verbose=0)
    assert flow.compiled and flow.jit_compile is True
    assert isinstance(flow.optimizer, keras.optimizers.Adam)


def _count_traces(model) -> list:
    """Wraps ``model.train_step`` to record each time it runs in Python (each trace)."""
    traces, step = [], model.train_step

    def counted(data):
        traces.append(1)
        return step(data)

    model.train_step = counted
    return traces


@pytest.mark.parametrize("kind", ["flow", "reverse-kl", "flow-vae"])
def test_first_fit_traces_the_training_step_once(kind):
    # Keras would create Adam's slots inside the first trace, and tf.function would then
    # trace the whole step again; the models build the optimizer before fit.
    if kind == "flow":
        model = nfzoo.build("maf", 2, num_layers=2, hidden_units=[16])
        traces = _count_traces(model)
        model.fit(MOONS, batch_size=128, epochs=2, verbose=0)
    elif kind == "reverse-kl":
        model = nfzoo.vi.ReverseKL(nfzoo.build("planar", 2, num_layers=2), "u1", num_samples=32)
        traces = _count_traces(model)
        model.fit(epochs=2, steps_per_epoch=3, verbose=0)
    else:
        model = nfzoo.vae.FlowVAE(posterior="planar", hidden_units=[16], num_flows=2, seed=0)
        traces = _count_traces(model)
        model.fit(nfzoo.data.binarized_digits()[0][:200], batch_size=100, epochs=2, verbose=0)
    assert len(traces) == 1
    assert model.optimizer.iterations.numpy() > 1


def test_ten_steps_per_execution_train_exactly_as_one():
    # the default runs 10 steps per call of the compiled function; the steps are the same
    x = nfzoo.data.make_moons(700, seed=4)  # 11 batches of 64: one call of 10, one of 1
    flows = {}
    for steps in (None, 1):
        flow = nfzoo.build("realnvp", 2, num_layers=2, hidden_units=[16], seed=0)
        flow.compile(learning_rate=1e-2, steps_per_execution=steps)
        flow.fit(x, batch_size=64, epochs=2, shuffle=False, verbose=0)
        flows[steps] = flow
    assert flows[None].steps_per_execution == 10 and flows[1].steps_per_execution == 1
    # the ten steps of a call are one XLA program (the last call, of one batch, is not)
    assert isinstance(flows[None].train_function, nfzoo.model_base.StepsInOneProgram)
    assert flows[None].optimizer.iterations.numpy() == flows[1].optimizer.iterations.numpy() == 22
    for a, b in zip(flows[None].get_weights(), flows[1].get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():  # Keras's loop fails there
        flow = nfzoo.build("maf", 2, num_layers=1, hidden_units=[8])
        flow.compile()
    assert flow.steps_per_execution == 1


def test_evaluate_reports_nll_in_nats_and_bits_per_dim():
    flow = nfzoo.build("realnvp", 2, num_layers=2, hidden_units=[16])
    flow.compile(bits_per_dim=True)
    flow.fit(MOONS, batch_size=128, epochs=1, verbose=0)
    result = flow.evaluate(MOONS, batch_size=100, verbose=0, return_dict=True)
    nll = -np.mean(flow.log_prob(MOONS))
    np.testing.assert_allclose(result["loss"], nll, rtol=1e-5)
    np.testing.assert_allclose(result["bits_per_dim"], nll / (2 * np.log(2)), rtol=1e-5)


def test_compile_refuses_a_loss():
    flow = nfzoo.build("nice", 2)
    with pytest.raises(ValueError, match="takes no loss"):
        flow.compile(loss="mse")


def test_fit_initialises_actnorm_from_the_first_batch():
    flow = nfzoo.Flow([L.ActNorm()], event_shape=(2,))
    assert not flow.is_initialized
    data = 3.0 + 2.0 * np.random.RandomState(0).randn(2048, 2).astype(np.float32)
    flow.compile(learning_rate=1e-9)  # the step barely moves: what we see is the init
    flow.fit(data, batch_size=256, epochs=1, verbose=0)
    assert flow.is_initialized
    z = flow.encode(data[:1024]).numpy()
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-3)


def test_wrong_shapes_and_dtypes_are_clear_errors():
    flow = nfzoo.build("maf", 2)
    with pytest.raises(ValueError, match=r"event shape \(2,\)\); received shape \(5, 3\)"):
        flow.log_prob(np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="received dtype int64"):
        flow.log_prob(np.zeros((5, 2), np.int64))
    with pytest.raises(ValueError, match="noise side"):
        flow.generate(np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError, match="Unknown architecture 'mafs'. Did you mean 'maf'"):
        nfzoo.build("mafs", 2)
    with pytest.raises(ValueError, match="event_shape must be a positive integer D"):
        nfzoo.build("maf", 0)
    with pytest.raises(ValueError, match="needs event_dim >= 2"):
        nfzoo.build("realnvp", 1)


def test_flows_without_inverse_still_sample_with_densities():
    flow = nfzoo.build("sylvester-orthogonal", 2)
    assert not flow.has_inverse
    z = np.random.randn(5, 2).astype(np.float32)
    x, log_q = flow.generate_and_log_prob(z)
    assert x.shape == (5, 2) and log_q.shape == (5,)
    with pytest.raises(NotImplementedError, match="SylvesterOrthogonal .* has no inverse"):
        flow.encode(x)


def test_compiled_flow_reloads_compiled(tmp_path):
    flow = nfzoo.build("nice", 2, num_layers=2, hidden_units=[8])
    flow.compile(learning_rate=1e-3, bits_per_dim=True)
    flow.fit(MOONS, batch_size=128, epochs=1, verbose=0)
    flow.save(tmp_path / "f.keras")
    loaded = keras.saving.load_model(tmp_path / "f.keras")
    assert loaded.compiled
    a = flow.evaluate(MOONS, verbose=0, return_dict=True)
    b = loaded.evaluate(MOONS, verbose=0, return_dict=True)
    assert a.keys() == b.keys() == {"loss", "bits_per_dim"}
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)


def test_list_architectures_covers_the_zoo():
    assert set(nfzoo.list_architectures()) >= {
        "nice",
        "realnvp",
        "maf",
        "iaf",
        "planar",
        "radial",
        "sylvester-orthogonal",
        "sylvester-householder",
        "sylvester-triangular",
        "glow-1d",
    }
    assert nfzoo.architecture("maf").paper == "arXiv:1705.07057"


@pytest.mark.parametrize("arch", ["iaf", "sylvester-orthogonal"])
def test_tfp_vi_fits_a_flow_surrogate(arch):
    # The TFP role end to end: tfp.vi finds the flow's variables through
    # TransformedDistribution and trains them (reverse KL) under XLA.
    import tensorflow_probability as tfp

    target = tfp.distributions.MultivariateNormalDiag(loc=[1.0, -1.0], scale_diag=[0.5, 2.0])
    flow = nfzoo.build(arch, 2, num_layers=4)
    losses = tfp.vi.fit_surrogate_posterior(
        target.log_prob,
        flow.distribution,
        optimizer=keras.optimizers.Adam(1e-2),
        num_steps=300,
        sample_size=64,
        seed=(1, 2),
        jit_compile=True,
    )
    # the target is normalised, so the loss estimates KL(q || p) >= 0
    assert float(np.mean(losses[:10])) > 1.0
    assert float(np.mean(losses[-20:])) < 0.15


def test_build_seed_fixes_the_initial_weights():
    import random

    state = random.getstate()
    a, b, c = (nfzoo.build("realnvp", 3, seed=s) for s in (4, 4, 5))
    assert random.getstate() == state  # the caller's random stream is left as it was
    same = [np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a.weights, b.weights)]
    assert all(same)
    kernels = [w for w in a.weights if "kernel" in w.path and np.any(w.numpy())]
    assert kernels  # there is something random to compare
    assert not all(
        np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a.weights, c.weights) if x in kernels
    )


# ---- nothing silently wrong ------------------------------------------------------------------


def test_fit_stops_at_the_first_non_finite_step_and_keeps_the_last_finite_weights():
    x = nfzoo.data.make_moons(1024, seed=0)
    bad = x.copy()
    bad[600] = np.nan  # in the third batch of 256
    flows = [nfzoo.build("maf", 2, num_layers=2, hidden_units=[16], seed=0) for _ in range(2)]
    for flow in flows:
        flow.compile(learning_rate=1e-2)  # 10 steps per compiled call: the guard is in-step
    with pytest.raises(nfzoo.flow.NonFiniteLossError, match="training step 3 .* after step 2"):
        flows[0].fit(bad, batch_size=256, epochs=2, shuffle=False, verbose=0)
    assert int(flows[0].optimizer.iterations.numpy()) == 2
    flows[1].fit(x[:512], batch_size=256, epochs=1, shuffle=False, verbose=0)  # the 2 good steps
    for a, b in zip(flows[0].get_weights(), flows[1].get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the flow is usable: a later fit on clean data trains on from there
    history = flows[0].fit(x, batch_size=256, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize(
    "arch",
    [
        "maf",
        pytest.param("realnvp", marks=pytest.mark.slow),
        pytest.param("glow-1d", marks=pytest.mark.slow),
    ],
)
def test_a_few_extreme_outliers_do_not_turn_the_weights_to_nan(arch):
    # their gradients (1e15-1e20) overflow float32 in the global norm of gradient clipping,
    # which then scaled every gradient by NaN; fit bounds them first
    x = np.concatenate([nfzoo.data.make_moons(1024, seed=0), np.full((5, 2), 1e6, np.float32)])
    flow = nfzoo.build(arch, 2, seed=0)
    flow.fit(x, batch_size=256, epochs=4, verbose=0)
    assert all(np.isfinite(w).all() for w in flow.get_weights())
    assert np.isfinite(flow.log_prob(x[:100])).all()


def test_learning_rates_seeds_sizes_and_precisions_are_checked():
    flow = nfzoo.build("maf", 2, num_layers=1, hidden_units=[8])
    for lr in (-1.0, 0.0, float("nan"), float("inf"), "1e-3", True):
        with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
            flow.compile(learning_rate=lr)
    for seed in (None, 1.5, -1, 2**70, True):
        with pytest.raises(ValueError, match="seed must be"):
            nfzoo.build("maf", 2, seed=seed)
        if seed is not None:
            with pytest.raises(ValueError, match="seed must be"):
                flow.sample(3, seed=seed)
    for units in (64, [0], [8.0], "64"):
        with pytest.raises(ValueError, match="hidden_units must be a sequence of positive"):
            nfzoo.build("realnvp", 2, hidden_units=units)
    for policy in ("mixed_float16", "mixed_bfloat16", "float16"):
        with pytest.raises(ValueError, match="mixed precision is not supported"):
            L.AffineCoupling(dtype=policy)
        with pytest.raises(ValueError, match="mixed precision is not supported"):
            nfzoo.Flow([L.Permute()], event_shape=(2,), dtype=policy)


@pytest.mark.parametrize(
    "arch",
    [
        "maf",
        pytest.param("iaf", marks=pytest.mark.slow),
        pytest.param("realnvp", marks=pytest.mark.slow),
        "planar",
    ],
)
def test_single_events_through_the_tfp_views_and_mcmc(arch):
    import tensorflow_probability as tfp

    flow = nfzoo.build(arch, 2, seed=0)
    dist = flow.distribution
    one = dist.sample(seed=(1, 2))  # one event, no batch axis
    assert one.shape == (2,)
    if not flow.has_inverse:
        return
    assert dist.log_prob(one).shape == ()
    np.testing.assert_allclose(dist.log_prob(one), flow.log_prob(one), atol=1e-5)
    # a single Markov chain: its state is one event
    kernel = tfp.mcmc.RandomWalkMetropolis(dist.log_prob)
    chain = tfp.mcmc.sample_chain(20, tf.zeros(2), kernel=kernel, trace_fn=None, seed=(3, 4))
    assert chain.shape == (20, 2) and np.isfinite(chain).all()


@pytest.mark.parametrize(
    "arch, options", [("sylvester-orthogonal", {}), ("maf", {}), ("nsf", {"context_dim": 2})]
)
def test_tf_saved_model_save_works_with_and_without_an_inverse(arch, options, tmp_path):
    flow = nfzoo.build(arch, 2, num_layers=2, seed=0, **options)
    tf.saved_model.save(flow, str(tmp_path / "m"))
    serving = tf.saved_model.load(str(tmp_path / "m")).signatures["serving_default"]
    u = np.random.RandomState(0).randn(3, 2).astype(np.float32)
    c = {"context": np.zeros((3, 2), np.float32)} if options else {}
    if flow.has_inverse:
        out = serving(x=tf.constant(u), **{k: tf.constant(v) for k, v in c.items()})
        np.testing.assert_allclose(out["log_prob"], flow.log_prob(u, **c), atol=1e-5)
    else:
        out = serving(z=tf.constant(u))
        np.testing.assert_allclose(out["log_prob"], flow.generate_and_log_prob(u)[1], atol=1e-5)


@pytest.mark.parametrize("arch", nfzoo.list_architectures())
def test_build_refuses_unknown_options_and_names_the_valid_ones(arch):
    """An option the builder does not take is a ValueError naming the architecture and every
    valid option (never a TypeError about a private function); a near miss is suggested."""
    entry = nfzoo.architecture(arch)
    with pytest.raises(ValueError) as info:
        nfzoo.build(arch, entry.example_shape, no_such_option=1)
    message = str(info.value)
    assert arch in message and "'no_such_option'" in message
    for option in entry.options:
        assert f"{option}=" in message
    typo = next(iter(entry.options))[:-1]  # the first option with its last letter dropped
    with pytest.raises(ValueError, match=f"did you mean '{next(iter(entry.options))}'"):
        nfzoo.build(arch, entry.example_shape, **{typo: 1})


def test_build_suggests_the_synonym_each_builder_uses():
    with pytest.raises(ValueError, match="maf has no option 'num_steps' .*'num_layers'"):
        nfzoo.build("maf", 6, num_steps=5)
    with pytest.raises(ValueError, match="glow has no option 'num_steps' .*'layers_per_scale'"):
        nfzoo.build("glow", (4, 4, 1), num_steps=5)
