"""nfzoo.targets: the energies match Rezende & Mohamed's Table 1, known log Z are exact,
samplers draw from the densities they claim, and bad inputs or outputs get clear errors."""

import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from nfzoo import targets as T

NAMES = T.names()
NORMALISED_2D = [n for n in NAMES if T.get(n).log_z is not None and T.get(n).event_dim == 2]


def _np_energies(z):
    """Table 1 of arXiv:1505.05770, written again in numpy, independently of the TF code."""
    z1, z2 = z[:, 0], z[:, 1]
    w1 = np.sin(2 * np.pi * z1 / 4)
    w2 = 3 * np.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
    w3 = 3 / (1 + np.exp(-(z1 - 1) / 0.3))
    u1 = 0.5 * ((np.linalg.norm(z, axis=1) - 2) / 0.4) ** 2 - np.log(
        np.exp(-0.5 * ((z1 - 2) / 0.6) ** 2) + np.exp(-0.5 * ((z1 + 2) / 0.6) ** 2)
    )
    u2 = 0.5 * ((z2 - w1) / 0.4) ** 2
    u3 = -np.log(
        np.exp(-0.5 * ((z2 - w1) / 0.35) ** 2) + np.exp(-0.5 * ((z2 - w1 + w2) / 0.35) ** 2)
    )
    u4 = -np.log(
        np.exp(-0.5 * ((z2 - w1) / 0.4) ** 2) + np.exp(-0.5 * ((z2 - w1 + w3) / 0.35) ** 2)
    )
    return {"u1": u1, "u2": u2, "u3": u3, "u4": u4}


def test_energies_match_table_1_inside_the_box():
    z = np.random.RandomState(0).uniform(-4, 4, size=(500, 2))
    expected = _np_energies(z)
    for name, u in expected.items():
        np.testing.assert_allclose(T.get(name)(z), -u, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(T.get(name).energy(tf.constant(z)), u, rtol=1e-10, atol=1e-10)


def test_energies_at_hand_computed_points():
    # U2 vanishes on its sine crest; U1 on the ring at (+-2, 0) is -log(1 + exp(-(4/0.6)^2/2)).
    z1 = np.linspace(-3.5, 3.5, 7)
    on_crest = np.stack([z1, np.sin(np.pi * z1 / 2)], axis=1)
    np.testing.assert_allclose(T.get("u2")(on_crest), 0.0, atol=1e-12)
    expected = math.log1p(math.exp(-0.5 * (4 / 0.6) ** 2))
    np.testing.assert_allclose(
        T.get("u1")(np.array([[2.0, 0.0], [-2.0, 0.0]])), expected, atol=1e-15
    )


def test_wall_confines_u2_to_u4_and_can_be_removed():
    z = np.array([[0.5, 0.0], [5.0, np.sin(np.pi * 5.0 / 2)]])
    walled, free = T.get("u2"), T.U2(wall=None)
    np.testing.assert_allclose(walled(z)[0], free(z)[0])  # nothing inside the box
    assert float(free(z)[1]) == pytest.approx(0.0, abs=1e-12)  # no decay along z1 unwalled
    assert float(walled(z)[1]) == pytest.approx(-0.5 * (1.0 / 0.2) ** 2)
    assert T.get("u1").wall is None


def _quadrature_grid(target, num=1201):
    """A grid holding all but ~1e-9 of the mass: the plot range plus 4 units (the banana's
    tails curve up to x2 = b x1^2, so its grid reaches x2 = 45)."""
    (x0, x1), (y0, y1) = target.plot_range
    top = 45.0 if isinstance(target, T.Banana) else y1 + 4
    xs, ys = np.linspace(x0 - 4, x1 + 4, num), np.linspace(y0 - 4, top, num)
    xx, yy = np.meshgrid(xs, ys)
    return xs, ys, np.stack([xx.ravel(), yy.ravel()], axis=1)


@pytest.mark.parametrize("name", [n for n in NORMALISED_2D if n != "funnel"])
def test_known_log_z_is_exact_by_quadrature(name):
    # (the funnel's neck is too thin for a grid: test_funnel_is_normalised checks it)
    target = T.get(name)
    xs, ys, points = _quadrature_grid(target)
    log_p = target(points).numpy()
    integral = np.exp(log_p).sum() * (xs[1] - xs[0]) * (ys[1] - ys[0])
    assert math.log(integral) == pytest.approx(target.log_z, abs=1e-6)


def test_funnel_is_normalised():
    # log p is the sum of the two normal log-densities it claims, in any dimension.
    for dim in (2, 5):
        x = T.Funnel(dim).sample(1000, seed=1).astype(np.float64)
        v = x[:, 0]
        expected = stats.norm(0, 3).logpdf(v) + stats.norm(0, np.exp(v / 2)[:, None]).logpdf(
            x[:, 1:]
        ).sum(1)
        np.testing.assert_allclose(T.Funnel(dim)(x), expected, rtol=1e-10)


@pytest.mark.parametrize("name", NORMALISED_2D)
def test_samplers_draw_from_the_density(name):
    # E_p[log p] from exact samples equals the quadrature value int p log p (the negative
    # entropy), to within 4 Monte-Carlo standard errors; a sampler off by a shift or a scale
    # moves it by far more.
    target = T.get(name)
    x = target.sample(20_000, seed=2)
    assert x.shape == (20_000, 2) and x.dtype == np.float32
    log_p = T.get(name)(x.astype(np.float64)).numpy() - target.log_z
    mc, se = log_p.mean(), log_p.std() / math.sqrt(len(log_p))
    if name == "funnel":  # v's marginal is exactly N(0, 3^2)
        assert stats.kstest(x[:, 0], stats.norm(0, 3).cdf).pvalue > 1e-3
        return
    xs, ys, points = _quadrature_grid(target)
    grid_log_p = target(points).numpy() - target.log_z
    p = np.exp(grid_log_p)
    exact = (p * grid_log_p).sum() * (xs[1] - xs[0]) * (ys[1] - ys[0])
    assert abs(mc - exact) < 4 * se
    np.testing.assert_array_equal(x, target.sample(20_000, seed=2))


def test_a_random_state_continues_one_stream():
    target = T.GaussianMixture([[0.0, 0.0], [3.0, -1.0]], scales=[0.5, 1.0], weights=[1, 3])
    rng = np.random.RandomState(7)
    first, second = target.sample(50, rng), target.sample(30, rng)
    np.testing.assert_array_equal(first, target.sample(50, seed=7))
    assert not np.array_equal(second, target.sample(30, seed=7))  # advanced, not restarted
    again = np.random.RandomState(7)
    np.testing.assert_array_equal(second, [target.sample(50, again), target.sample(30, again)][1])


@pytest.mark.parametrize("name", NAMES)
def test_dtypes_and_xla(name):
    target = T.get(name)
    x = np.random.RandomState(3).randn(16, target.event_dim)
    eager64 = target(x)
    assert eager64.dtype == tf.float64 and eager64.shape == (16,)
    assert target(x.astype(np.float32)).dtype == tf.float32
    compiled = tf.function(target.log_prob, jit_compile=True)(tf.constant(x))
    np.testing.assert_allclose(compiled, eager64, rtol=1e-9)
    np.testing.assert_allclose(target(x.astype(np.float32)), eager64, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_are_finite(name):
    target = T.get(name)
    x = tf.constant(np.random.RandomState(4).randn(8, target.event_dim).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(target(x))
    assert np.isfinite(tape.gradient(y, x)).all()


def test_registry_lookup_and_errors():
    assert {"u1", "u2", "u3", "u4", "funnel", "banana", "mixture-two"} <= set(NAMES)
    with pytest.raises(ValueError, match="Unknown target 'u5'.*Did you mean"):
        T.get("u5")
    assert T.get("mixture-ring", num_components=4).locs.shape == (4, 2)
    assert T.get("funnel", event_dim=10).event_dim == 10


def test_bad_inputs_are_clear_value_errors():
    u1 = T.get("u1")
    with pytest.raises(ValueError, match=r"expects x of shape \[n, 2\]; received shape \(4, 3\)"):
        u1(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="floating-point input.*received dtype int32"):
        u1(np.zeros((4, 2), np.int32))
    with pytest.raises(NotImplementedError, match="no exact sampler"):
        u1.sample(3)
    with pytest.raises(ValueError, match="scales must broadcast"):
        T.GaussianMixture([[0.0, 0.0], [1.0, 1.0]], scales=[1.0, 1.0, 1.0])


def test_user_callables_are_targets_and_are_checked():
    def log_p(x):
        return -0.5 * tf.reduce_sum(x * x, axis=-1)

    target = T.as_target(log_p, event_dim=3)
    assert isinstance(target, T.Target) and target.name == "log_p"
    np.testing.assert_allclose(target(np.ones((2, 3))), [-1.5, -1.5])
    assert T.as_target("banana").name == "banana"
    wrong_shape = T.as_target(lambda x: -0.5 * tf.reduce_sum(x * x, -1, keepdims=True), 2)
    with pytest.raises(ValueError, match=r"shape \[n\] = \[5\].*received shape \(5, 1\)"):
        wrong_shape(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="numpy array"):
        T.as_target(lambda x: np.zeros(len(x)), 2)(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="event_dim 2; the flow expects event_dim 3"):
        T.as_target("u1", event_dim=3)
    with pytest.raises(ValueError, match="needs event_dim"):
        T.as_target(log_p)
    with pytest.raises(ValueError, match="callable log_p"):
        T.as_target(42)
