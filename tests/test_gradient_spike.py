"""Regression test: glow-1d on checkerboard (tools/train_zoo.py recipe, Adam 1e-3, batch 512,
seed 0) turned its weights NaN at step 1973.

Diagnosis: at step 1963 one training example, (-2.0046, 3.7988), was mapped by the flow to
z = (-4.9, -840) (the coupling next to the base had log-scale -4.23 there, an inverse gain of
68): NLL 3.5e5 nats, batch-mean loss 693 instead of 3.71, and a finite gradient of global norm
9.8e5 (normal steps: 4-18). Unclipped Adam absorbed it into its moments (m up to 3.9e4, v up
to 1.5e8), then kept pushing every touched weight along the spike's sign for the next steps,
deaf to the ordinary gradients; the model drifted into worse regions (losses 1.3e6 at step
1971, 3.5e19 at 1972 with gradients up to 7e20), the squared gradient overflowed float32 in
Adam's second moment (v = inf) and Keras's update v += (g^2 - v)(1 - beta_2) gave inf - inf =
NaN at step 1973.

The failing condition is rebuilt here directly: a batch of 512 checkerboard points in which one
example lands at |z| = 840. Flow.compile's default optimizer must not let that single batch
inject more than a gradient of norm DEFAULT_GLOBAL_CLIPNORM into Adam's state.
"""

import keras
import numpy as np
import tensorflow as tf

import nfzoo
from nfzoo.flow import DEFAULT_GLOBAL_CLIPNORM

CLIP = DEFAULT_GLOBAL_CLIPNORM
BATCH = 512


def _flow_and_batches():
    keras.utils.set_random_seed(0)
    x = nfzoo.data.make_toy("checkerboard", 4 * BATCH, seed=0)
    flow = nfzoo.build("glow-1d", 2, num_layers=2, hidden_units=[32, 32], seed=0)
    flow.initialize(x[:BATCH])
    # At initialisation the couplings are the identity, so the flow is affine and a point
    # placed along one data-side direction reaches |z| = 840 exactly (the incident's value).
    direction = np.array([[1.0, 0.0]], np.float32)
    z0 = flow.encode(np.zeros_like(direction)).numpy()
    z1 = flow.encode(direction).numpy()
    far = direction * 840.0 / np.abs(z1 - z0).max()
    spike = x[3 * BATCH :].copy()
    spike[0] = far[0]
    return flow, x[: 3 * BATCH], spike


def _adam_moments(flow):
    """Adam's first and second moments of every trainable weight, read from the public
    ``optimizer.variables``: Keras names the slots of the weight at ``path`` after it,
    ``<path with / as _>_momentum`` and ``..._velocity``."""
    slots = {v.name: v for v in flow.optimizer.variables}
    keys = [w.path.replace("/", "_") for w in flow.trainable_variables]
    assert len(set(keys)) == len(keys), "two weights would share Adam's slots"
    m = [slots[f"{k}_momentum"].numpy() for k in keys]
    v = [slots[f"{k}_velocity"].numpy() for k in keys]
    return m, v


def test_one_outlier_batch_cannot_hijack_default_adam():
    flow, clean, spike = _flow_and_batches()
    flow.compile(jit_compile=False)  # default optimizer (no XLA compile: a faster test)
    flow.fit(clean, batch_size=BATCH, shuffle=False, epochs=1, verbose=0)  # 3 ordinary steps

    # the condition of step 1963: a finite loss two orders above normal, and a gradient five
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(flow.log_prob(spike))
    grads = tape.gradient(loss, flow.trainable_variables)
    norm = float(tf.linalg.global_norm(grads))
    assert np.isfinite(float(loss)) and float(loss) > 500.0, float(loss)
    assert np.isfinite(norm) and norm > 1e4, norm

    m0, v0 = _adam_moments(flow)
    flow.fit(spike, batch_size=BATCH, shuffle=False, epochs=1, verbose=0)
    m1, v1 = _adam_moments(flow)
    assert all(np.all(np.isfinite(w.numpy())) for w in flow.weights)

    opt = flow.optimizer
    b1, b2 = float(opt.beta_1), float(opt.beta_2)
    # what this one step added to Adam's moments is (1 - beta) times its (clipped) gradient
    dm = np.sqrt(sum(np.sum((a - b1 * b) ** 2) for a, b in zip(m1, m0))) / (1 - b1)
    dv = sum(np.sum(a - b2 * b) for a, b in zip(v1, v0)) / (1 - b2)
    assert dm <= CLIP * 1.01, f"the spike entered Adam's first moment with norm {dm:.3g}"
    assert dv <= CLIP**2 * 1.01, f"the spike entered Adam's second moment with |g|^2 = {dv:.3g}"

    # training goes on normally afterwards
    history = flow.fit(clean, batch_size=BATCH, shuffle=False, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1]) and history.history["loss"][-1] < 10.0


def test_clipping_is_a_default_that_can_be_changed():
    flow = nfzoo.build("glow-1d", 2, num_layers=1, hidden_units=[8], seed=0)
    flow.compile()
    assert isinstance(flow.optimizer, keras.optimizers.Adam)
    assert flow.optimizer.global_clipnorm == CLIP
    flow.compile(learning_rate=2e-3)
    assert flow.optimizer.global_clipnorm == CLIP
    assert np.isclose(float(flow.optimizer.learning_rate), 2e-3)
    flow.compile(global_clipnorm=None)
    assert flow.optimizer.global_clipnorm is None
    mine = keras.optimizers.Adam(1e-2)
    flow.compile(optimizer=mine)
    assert flow.optimizer is mine and mine.global_clipnorm is None
