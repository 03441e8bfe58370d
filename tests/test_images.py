"""Image flows: the digits pipeline, bits per dimension, the multi-scale split's learned prior,
the builders' options, temperature sampling, the sample grid, and a short real training run."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from conftest import brute_force_log_det, perturb

import nfzoo
import nfzoo.plots
import nfzoo.training
from nfzoo import layers as L
from nfzoo.data import DIGITS_LEVELS, bits_per_dim, dequantize, dequantized, digits_images

tfd = tfp.distributions


class UniformModel:
    """The uniform density on [0, high]^D: log q = -D log(high) inside the box."""

    def __init__(self, high, dims):
        self.high, self.dims = high, dims

    def log_prob(self, x):
        x = np.asarray(x)
        inside = np.all((x >= 0) & (x <= self.high), axis=tuple(range(1, x.ndim)))
        return np.where(inside, -self.dims * np.log(self.high), -np.inf)


def test_bits_per_dim_of_a_uniform_model_is_log2_k():
    k = DIGITS_LEVELS
    _, _, test = digits_images()
    # a density on dequantized counts in [0, K] (scale 1), and one on (counts + u) / K
    assert bits_per_dim(UniformModel(k, 64), test, k) == pytest.approx(np.log2(k), abs=1e-12)
    assert bits_per_dim(UniformModel(1.0, 64), test, k, scale=1 / k) == pytest.approx(
        np.log2(k), abs=1e-12
    )


def test_bits_per_dim_rejects_what_is_not_counts():
    with pytest.raises(ValueError, match=r"integer counts in 0\.\.16; received values in"):
        bits_per_dim(UniformModel(17, 4), np.full((2, 2, 2, 1), 0.5), 17)
    with pytest.raises(ValueError, match="integer counts in 0..16"):
        bits_per_dim(UniformModel(17, 4), np.full((2, 2, 2, 1), 17.0), 17)


def test_digits_images_are_the_digits_split_as_counts():
    train, val, test = digits_images()
    assert (train.shape, val.shape, test.shape) == ((1000, 8, 8, 1), (350, 8, 8, 1), (447, 8, 8, 1))
    assert train.min() == 0 and train.max() == DIGITS_LEVELS - 1
    np.testing.assert_array_equal(train, np.round(train))
    vectors, _, _ = nfzoo.data.digits_split()  # (counts + u) / 17, the same images in order
    np.testing.assert_array_equal(np.floor(vectors * 17).reshape(-1, 8, 8, 1), train)


def test_dequantized_pipeline_adds_fresh_uniform_noise():
    counts = digits_images()[0][:64]
    ds = dequantized(tf.data.Dataset.from_tensor_slices(counts).batch(64).repeat(2), seed=3)
    first, second = (b.numpy() for b in ds)
    for batch in (first, second):
        noise = batch - counts
        assert noise.min() >= 0 and noise.max() < 1
        assert 0.45 < noise.mean() < 0.55
    assert not np.allclose(first, second)  # a new draw every time
    again = next(iter(dequantized(tf.data.Dataset.from_tensor_slices(counts).batch(64), seed=3)))
    np.testing.assert_array_equal(again, first)  # seeded: reproducible


def test_factor_out_is_glows_learned_prior():
    # log q(x) = log N(x2; mu(x1), exp(2 s(x1))) + log q_inner(x1): the split as a bijector
    # with a standard-normal base is exactly the conditional Gaussian prior of Glow.
    inner = [L.ImageAffineCoupling(hidden_channels=4, dtype="float64"), L.Squeeze(dtype="float64")]
    layer = L.FactorOut(inner, dtype="float64")
    flow = nfzoo.Flow([layer], event_shape=(2, 2, 4), dtype="float64")
    perturb(flow, seed=1)
    inner_flow = nfzoo.Flow(inner, event_shape=(2, 2, 2), dtype="float64")
    x = tf.constant(np.random.RandomState(0).randn(5, 2, 2, 4))
    mu, s = layer._prior_params(x[..., :2])
    prior = tfd.Independent(tfd.Normal(mu, tf.exp(s)), 3)
    expected = prior.log_prob(x[..., 2:]) + inner_flow.log_prob(x[..., :2])
    np.testing.assert_allclose(flow.log_prob(x), expected, atol=1e-10)
    assert np.std(s.numpy()) > 0  # the prior really depends on x1 at this point


@pytest.mark.parametrize("permutation", ["reverse", "shuffle", "1x1", "lu", "qr"])
@pytest.mark.parametrize("coupling", ["additive", "affine"])
def test_glow_ablation_options_are_exact_flows(permutation, coupling):
    flow = nfzoo.build(
        "glow",
        (4, 4, 2),
        dtype="float64",
        num_scales=2,
        layers_per_scale=2,
        hidden_channels=4,
        coupling=coupling,
        permutation=permutation,
    )
    perturb(flow, seed=2, scale=0.1)
    z = tf.constant(np.random.RandomState(1).randn(3, *flow.base_event_shape))
    x, log_q = flow.generate_and_log_prob(z)
    brute = flow.base_distribution.log_prob(z) - brute_force_log_det(flow.generate, z)
    np.testing.assert_allclose(log_q, brute, atol=1e-8)
    np.testing.assert_allclose(flow.log_prob(x), brute, atol=1e-8)
    np.testing.assert_allclose(flow.encode(x), z, atol=1e-10)


def test_image_builders_explain_bad_options():
    with pytest.raises(ValueError, match=r"divisible by 8; received image shape \(8, 12, 1\)"):
        nfzoo.build("glow", (8, 12, 1), num_scales=3)
    with pytest.raises(ValueError, match="permutation must be one of"):
        nfzoo.build("glow", (8, 8, 1), permutation="flip")
    with pytest.raises(ValueError, match="coupling must be one of"):
        nfzoo.build("realnvp-image", (8, 8, 1), coupling="spline")
    with pytest.raises(ValueError, match=r"rank 3 and takes an image shape \(H, W, C\)"):
        nfzoo.build("glow", 64)
    with pytest.raises(ValueError, match="rank 1 and takes a dimension D"):
        nfzoo.build("maf", (8, 8, 1))
    with pytest.raises(ValueError, match="needs >= 2 channels"):
        nfzoo.Flow([L.ImageAffineCoupling(mask="channel")], event_shape=(4, 4, 1))


def test_sampling_temperature_scales_the_base_noise():
    flow = nfzoo.build("glow", (4, 4, 1), num_scales=2, layers_per_scale=1, hidden_channels=4)
    perturb(flow, seed=3, scale=0.1)
    z = flow.base_distribution.sample(5, seed=(7, 0))
    np.testing.assert_allclose(flow.sample(5, seed=7, temperature=0.5), flow.generate(0.5 * z))
    np.testing.assert_array_equal(flow.sample(5, seed=7, temperature=1.0), flow.generate(z))
    for bad in (0, -1.0, "hot"):
        with pytest.raises(ValueError, match="temperature > 0"):
            flow.sample(2, temperature=bad)


def test_sample_grid_png(tmp_path):
    import matplotlib.image

    flow = nfzoo.build("realnvp-image", (8, 8, 1), num_scales=2, hidden_channels=4, num_levels=17)
    path = nfzoo.plots.sample_grid(flow, tmp_path / "grid.png", rows=4, temperature=0.7)
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 100
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # no temporary file left


def test_glow_learns_digits_in_a_short_run():
    # 100 steps of a small Glow (2 levels x 2 steps, 16 channels) on the 1000 training
    # digits with fresh dequantization each batch: test bits/dim far below a uniform model's
    # log2(17) = 4.09, and Keras's bits/dim metric agrees with data.bits_per_dim.
    train, _, test = digits_images()
    result = nfzoo.training.train_flow(
        lambda: nfzoo.build(
            "glow", (8, 8, 1), layers_per_scale=2, hidden_channels=16, num_levels=DIGITS_LEVELS
        ),
        train,
        steps=100,
        batch_size=64,
        dequantize=True,
        verbose=0,
    )
    flow = result.flow
    bpd = bits_per_dim(flow, test, DIGITS_LEVELS, draws=1, seed=5)
    assert bpd < 3.3
    flow.compile(bits_per_dim=True)
    logs = flow.evaluate(dequantize(test, seed=5), batch_size=447, verbose=0, return_dict=True)
    assert logs["bits_per_dim"] == pytest.approx(bpd, abs=1e-4)
