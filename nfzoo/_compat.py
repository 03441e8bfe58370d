"""Every use of a private Keras API, each behind a named function, so that a Keras upgrade
breaks in one place. (nfzoo.ops holds the private TensorFlow functions of the XLA matmul.)"""

from __future__ import annotations

from keras.src.losses.loss import scale_loss_for_distribution, unscale_loss_for_distribution

__all__ = ["scale_loss_for_distribution", "unscale_loss_for_distribution"]
