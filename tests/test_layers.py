"""Layer-specific properties the contract cannot see: MADE's autoregressive structure, the
invertibility constraints, orthogonality, and the sequential directions."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import perturb

from nfzoo import layers as L
from nfzoo.nets import MADE


def _jacobian(fn, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    return tape.batch_jacobian(y, x).numpy()


@pytest.mark.parametrize("ordering", ["natural", "reversed", "random", [3, 1, 4, 2, 5]])
@pytest.mark.parametrize("hidden", [[], [16], [16, 16, 16]])
def test_made_is_exactly_autoregressive(ordering, hidden):
    made = MADE(params_per_dim=2, hidden_units=hidden, ordering=ordering, seed=4, dtype="float64")
    made.build((None, 5))
    perturb(made, seed=1)  # the output layer starts at zero: move it
    order = made.input_degrees
    x = tf.constant(np.random.RandomState(0).randn(3, 5))
    for p in range(2):
        jac = _jacobian(lambda u, p=p: made(u)[:, p, :], x)  # [batch, out i, in j]
        allowed = order[None, :] < order[:, None]  # out i may depend on in j iff d_j < d_i
        assert np.all(jac[:, ~allowed] == 0.0), "an output depends on a later input"
        # every allowed connection is used (the masks are not more restrictive than needed)
        if hidden:
            assert np.all(np.abs(jac[:, allowed]).sum(0) > 0)


def test_maf_and_iaf_jacobians_are_triangular_in_their_ordering():
    for cls in (L.MaskedAutoregressive, L.InverseAutoregressive):
        layer = cls(hidden_units=[16], ordering=[2, 3, 1], dtype="float64")
        layer.build((None, 3))
        perturb(layer, seed=2)
        z = tf.constant(np.random.RandomState(1).randn(4, 3))
        jac = _jacobian(layer.forward, z)
        order = np.array([2, 3, 1])
        later = order[None, :] > order[:, None]
        assert np.all(jac[:, later] == 0.0)


def test_planar_constraint_holds_for_any_u_and_w():
    layer = L.Planar(dtype="float64")
    layer.build((None, 4))
    rng = np.random.RandomState(0)
    for _ in range(50):
        layer.u.assign(rng.randn(4) * 5)
        layer.w.assign(rng.randn(4) * 5)
        assert float(tf.reduce_sum(layer.w * layer.constrained_u())) > -1.0


def test_planar_inverse_near_the_constraint_boundary():
    # w^T u' close to -1 makes the 1-D equation nearly flat; bisection still inverts it.
    layer = L.Planar(dtype="float64")
    layer.build((None, 2))
    layer.w.assign([3.0, 0.0])
    layer.u.assign([-40.0, 0.0])  # w^T u = -120 -> w^T u' = -1 + softplus(-120) ~ -1
    z = tf.constant(np.random.RandomState(0).randn(16, 2))
    np.testing.assert_allclose(layer.inverse(layer.forward(z)), z, atol=1e-7)


def test_sylvester_orthogonal_q_is_orthonormal_to_rounding():
    layer = L.SylvesterOrthogonal(num_vectors=3, dtype="float64", seed=0)
    layer.build((None, 6))
    layer.q_raw.assign(np.random.RandomState(0).randn(6, 3) * 10)
    q = layer.q_matrix().numpy()
    np.testing.assert_allclose(q.T @ q, np.eye(3), atol=1e-13)


def test_lu_and_qr_linear_weight_matrices_have_the_stated_determinant():
    for cls in (L.LULinear, L.QRLinear):
        layer = cls(seed=0, dtype="float64")
        layer.build((None, 4))
        perturb(layer, seed=3)
        w = layer.weight_matrix().numpy()
        _, logdet = np.linalg.slogdet(w)
        np.testing.assert_allclose(logdet, layer.log_diag.numpy().sum(), atol=1e-12)


def test_lu_linear_starts_as_a_rotation():
    layer = L.LULinear(seed=5, dtype="float64")
    layer.build((None, 5))
    w = layer.weight_matrix().numpy()
    np.testing.assert_allclose(w.T @ w, np.eye(5), atol=1e-12)


def test_coupling_masks():
    layer = L.AffineCoupling(mask=[1, 0, 0, 1], dtype="float64", hidden_units=[8])
    layer.build((None, 4))
    perturb(layer, seed=0)
    z = tf.constant(np.random.RandomState(0).randn(3, 4))
    x = layer.forward(z).numpy()
    np.testing.assert_array_equal(x[:, [0, 3]], z.numpy()[:, [0, 3]])
    assert not np.allclose(x[:, [1, 2]], z.numpy()[:, [1, 2]])
    with pytest.raises(ValueError, match="both parts non-empty"):
        L.AdditiveCoupling(mask=[1, 1]).build((None, 2))
    with pytest.raises(ValueError, match="0/1 sequence of length 3"):
        L.AdditiveCoupling(mask=[1, 0]).build((None, 3))


def test_layers_start_at_the_identity():
    # Conventions: conditioners end in a zero layer, so these layers start as the identity.
    z = tf.constant(np.random.RandomState(0).randn(5, 4))
    for layer in (
        L.AffineCoupling(dtype="float64"),
        L.AdditiveCoupling(dtype="float64"),
        L.MaskedAutoregressive(dtype="float64"),
        L.InverseAutoregressive(dtype="float64"),
        L.Radial(dtype="float64"),
        L.ActNorm(dtype="float64"),
    ):
        x, ldj = layer.forward_and_log_det(z)
        np.testing.assert_allclose(x, z, atol=1e-12)
        np.testing.assert_allclose(ldj, 0.0, atol=1e-12)


@pytest.mark.parametrize("arch", ["planar", "radial", "iaf"])
def test_density_gradients_match_finite_differences(arch):
    # These inverses are computed by root finding or sequential sweeps; the gradient of
    # log q(x) must still be the true one (planar: implicit differentiation at the root).
    import nfzoo

    flow = nfzoo.build(arch, 2, dtype="float64", num_layers=3, seed=1)
    perturb(flow, seed=0)
    x = tf.constant(nfzoo.data.make_moons(20, seed=2).astype(np.float64))
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(flow.log_prob(x))
    grads = tape.gradient(total, flow.trainable_variables)
    for var, grad in zip(flow.trainable_variables, grads):
        flat = var.numpy().ravel()
        for i in range(min(2, flat.size)):
            step = np.zeros_like(flat)
            step[i] = 1e-6
            var.assign((flat + step).reshape(var.shape))
            up = float(tf.reduce_sum(flow.log_prob(x)))
            var.assign((flat - step).reshape(var.shape))
            down = float(tf.reduce_sum(flow.log_prob(x)))
            var.assign(flat.reshape(var.shape))
            finite_difference = (up - down) / 2e-6
            np.testing.assert_allclose(
                grad.numpy().ravel()[i], finite_difference, rtol=1e-5, atol=1e-6
            )
