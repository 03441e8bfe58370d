"""nfzoo.vae: amortised flow posteriors (log-dets against brute force, per example), the
flow-VAE's bounds (ELBO <= importance-weighted estimate, monotone in k) after real short
training runs, MADE's context input, the binarised digits, and saving."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import brute_force_log_det, perturb

from nfzoo import data, vae
from nfzoo.nets import MADE
from nfzoo.vi import importance_stats

FLOWS = [name for name in vae.POSTERIORS if name != "none"]
#: posteriors whose short training run is in the default suite; the rest are marked slow
FAST = {"none", "planar", "sylvester-householder"}


def _param(name):
    return name if name in FAST else pytest.param(name, marks=pytest.mark.slow)


# ---- the amortised flows: math, per example ------------------------------------------------


@pytest.mark.parametrize("name", FLOWS)
def test_amortized_log_det_matches_brute_force(name):
    # float64, at a generic point (perturbed heads), with per-example parameters from a
    # random context: each example's log-det against the Jacobian of its own map.
    D, H, B = 3, 5, 4
    flow = vae.make_posterior(name, D, num_flows=3, init_scale=1.0, seed=0, dtype="float64")
    flow.build((None, H))
    perturb(flow, seed=1)
    rng = np.random.RandomState(2)
    h = tf.constant(rng.randn(B, H))
    z = tf.constant(rng.randn(B, D))
    params = flow.flow_parameters(h)
    x, log_det = flow.forward_and_log_det(z, params)
    expected = brute_force_log_det(lambda u: flow.forward_and_log_det(u, params)[0], z)
    np.testing.assert_allclose(log_det, expected, rtol=0, atol=1e-8)
    assert float(tf.reduce_max(tf.abs(x - z))) > 1e-2  # not the identity
    # the parameters really differ between examples: example 0's map on example 1's z differs
    swapped = tf.stack([z[1], z[1], z[2], z[3]])
    assert not np.allclose(flow.forward_and_log_det(swapped, params)[0][0], x[1])
    # samples [k, B, D] broadcast against per-example parameters [B, ...]
    zs = tf.constant(rng.randn(2, B, D))
    xs, lds = flow.forward_and_log_det(zs, params)
    for i in range(2):
        xi, li = flow.forward_and_log_det(zs[i], params)
        np.testing.assert_allclose(xs[i], xi, atol=1e-12)
        np.testing.assert_allclose(lds[i], li, atol=1e-12)


def test_made_context_keeps_the_autoregressive_structure():
    D, C = 4, 3
    made = MADE(hidden_units=[16], ordering="reversed", seed=0, context_dim=C, dtype="float64")
    made.build((None, D))
    perturb(made, seed=0)
    x = tf.constant(np.random.RandomState(0).randn(5, D))
    c = tf.constant(np.random.RandomState(1).randn(5, C))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, c])
        out = tf.reshape(made(x, c), [5, 2 * D])  # [5, 2, D] flattened
    jx = tape.batch_jacobian(out, x).numpy().reshape(5, 2, D, D)
    jc = tape.batch_jacobian(out, c).numpy()
    degrees = made.input_degrees
    allowed = degrees[None, :] < degrees[:, None]  # output i may read input j iff d_j < d_i
    assert np.all(jx[..., ~allowed] == 0)
    assert np.all(np.abs(jx[..., allowed]).max(axis=0) > 0)
    assert np.abs(jc).max() > 0
    with pytest.raises(ValueError, match="without a context"):
        made(x)
    assert MADE.from_config(made.get_config()).context_dim == C


def test_binarized_digits():
    train, val, test = data.binarized_digits()
    assert (train.shape, val.shape, test.shape) == ((1000, 64), (350, 64), (447, 64))
    assert set(np.unique(train)) == {0.0, 1.0}
    cont = data.digits_split()[0]  # (pixel + u) / 17: the same images, in the same order
    np.testing.assert_array_equal(train, np.floor(17 * cont) >= 8)
    np.testing.assert_array_equal(train, data.binarized_digits()[0])


# ---- a short real training run per posterior ----------------------------------------------


@pytest.fixture(scope="module", params=[_param(n) for n in vae.POSTERIORS])
def trained(request):
    """A flow-VAE (latent 4, hidden [64], 2 flow steps) after 150 Adam steps of 100
    binarised digits (graph mode: XLA's compile would cost the default suite ~15 s per
    posterior; the XLA path is tested in test_every_posterior_fits_under_xla)."""
    keras.utils.set_random_seed(0)
    model = vae.FlowVAE(
        latent_dim=4, hidden_units=[64], posterior=request.param, num_flows=2, seed=0
    )
    train, _, test = data.binarized_digits()
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.compile(learning_rate=3e-3, jit_compile=False)
    history = model.fit(train, batch_size=100, epochs=15, shuffle=True, verbose=0)
    return request.param, model, before, history, test[:100]


def test_training_moves_every_weight_and_lowers_the_loss(trained):
    name, model, before, history, _ = trained
    unchanged = [
        w.path for w, b in zip(model.trainable_weights, before) if np.array_equal(w.numpy(), b)
    ]
    assert not unchanged, f"{name}: weights not moved: {unchanged}"
    loss = history.history["loss"]
    assert loss[-1] < loss[0] - 5.0, loss  # 64 binary pixels: ~44 nats at the start


def test_elbo_is_below_the_importance_weighted_estimate(trained):
    # Independent draws for the two estimates, so that the inequality is a real check and not
    # Jensen on one sample set. Tolerance: 3 Monte-Carlo standard errors of the difference of
    # the means over 100 examples (ELBO: sample sd / sqrt(S); L_k: the delta-method se of a
    # log-mean-exp, vi.importance_stats).
    name, model, _, _, x = trained
    S, k = 200, 1000
    log_w_elbo = model.sample_log_weights(x, S, seed=1)
    log_w_iw = model.sample_log_weights(x, k, seed=2)
    elbo = log_w_elbo.mean(axis=0)
    se_elbo = log_w_elbo.std(axis=0, ddof=1) / math.sqrt(S)
    stats = [importance_stats(log_w_iw[:, i]) for i in range(x.shape[0])]
    iw = np.array([s["log_z"] for s in stats])
    se_iw = np.array([s["log_z_se"] for s in stats])
    gap = float(np.mean(iw - elbo))
    se = float(np.sqrt(np.sum(se_elbo**2 + se_iw**2)) / x.shape[0])
    assert gap > -3 * se, (name, gap, se)  # -ELBO >= IW-NLL
    # and the bound is not tight: q(z|x) is not the exact posterior after 150 steps
    assert gap > 3 * se, (name, gap, se)
    nll = model.importance_weighted_nll(x, num_samples=k, seed=2)
    np.testing.assert_allclose(nll, -iw, rtol=1e-9)


def test_importance_weighted_estimate_increases_with_k(trained):
    # E L_1 = ELBO <= E L_10 <= E L_100 (Burda et al. 2015, theorem 1): L_k averaged over 100
    # examples and 20 independent seeds, compared within 3 standard errors over the seeds.
    name, model, _, _, x = trained
    means = {}
    for k in (1, 10, 100):
        runs = np.array(
            [-model.importance_weighted_nll(x, k, seed=10 + s).mean() for s in range(20)]
        )
        means[k] = (runs.mean(), runs.std(ddof=1) / math.sqrt(len(runs)))
    elbo = model.elbo(x, num_samples=200, seed=99).mean()
    (l1, s1), (l10, s10), (l100, s100) = means[1], means[10], means[100]
    assert abs(l1 - elbo) < 3 * math.hypot(s1, 0.05), (name, l1, elbo)  # k = 1 is the ELBO
    assert l10 > l1 - 3 * math.hypot(s1, s10), (name, means)
    assert l100 > l10 - 3 * math.hypot(s10, s100), (name, means)
    assert l100 > l1, (name, means)


# ---- Keras: XLA and saving -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", list(vae.POSTERIORS))
def test_every_posterior_fits_under_xla(name):
    model = vae.FlowVAE(latent_dim=4, hidden_units=[32], posterior=name, num_flows=2, seed=0)
    model.compile(learning_rate=1e-3)
    assert model.jit_compile is True
    train = data.binarized_digits()[0]
    history = model.fit(train, batch_size=100, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_save_and_load_round_trip(tmp_path):
    model = vae.FlowVAE(
        latent_dim=3,
        hidden_units=[16],
        posterior="sylvester-orthogonal",
        num_flows=2,
        posterior_kwargs={"num_vectors": 2},
        seed=0,
    )
    perturb(model, seed=3)
    path = tmp_path / "vae.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config() == model.get_config()
    x = data.binarized_digits()[2][:8]
    np.testing.assert_array_equal(
        model.sample_log_weights(x, 5, seed=4), loaded.sample_log_weights(x, 5, seed=4)
    )


def test_clear_errors():
    with pytest.raises(ValueError, match="Unknown posterior 'radial'"):
        vae.FlowVAE(posterior="radial")
    with pytest.raises(ValueError, match="num_vectors must be in 1..3"):
        vae.FlowVAE(
            latent_dim=3, posterior="sylvester-orthogonal", posterior_kwargs={"num_vectors": 5}
        )
    with pytest.raises(ValueError, match="takes no loss"):
        vae.FlowVAE().compile(loss="mse")
