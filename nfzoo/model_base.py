"""The base of nfzoo's trainable models (``Flow``, ``vi.ReverseKL``, ``vae.FlowVAE``): each
minimises its own objective through Keras ``fit``, so ``compile`` takes no loss, and all
three share one set of defaults and one ``fit`` preamble:

- Adam (``learning_rate`` sets its rate; ``global_clipnorm`` clips it by global norm),
- ``jit_compile=True``,
- 10 training steps per call of the compiled function (``DEFAULT_STEPS_PER_EXECUTION``; 1 in
  a ``tf.distribute`` scope),
- the optimizer's slots built before ``fit`` traces its step (``build_optimizer_variables``),
- ``fit`` compiles with the defaults if the model was not compiled.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from nfzoo.files import (
    CARD_FILE,
    CONFIG_FILE,
    PRETRAINED_FORMAT,
    WEIGHTS_FILE,
    atomic_directory,
    config_text,
    sha256_file,
)

__all__ = [
    "DEFAULT_STEPS_PER_EXECUTION",
    "PretrainedModel",
    "StepsInOneProgram",
    "TrainableModel",
    "build_optimizer_variables",
    "resolve_optimizer",
    "resolve_steps_per_execution",
]

#: ``compile``'s default for flows, ReverseKL and FlowVAE: training steps run per call of
#: the compiled function. Keras runs one by default, and for models this small the Python
#: and executor work around each call is a large share of a step (measure it with
#: ``tools/bench.py train-throughput``, which runs ``fit`` with these defaults).
#: As in Keras, batch-level callbacks then run once per 10 steps; pass 1 to have every step.
DEFAULT_STEPS_PER_EXECUTION = 10


def resolve_steps_per_execution(steps: int | None) -> int:
    """``steps``, or where None the default: ``DEFAULT_STEPS_PER_EXECUTION``, but 1 inside a
    ``tf.distribute`` strategy's scope, where Keras's multi-step loop fails under
    MirroredStrategy (TF 2.21: "You must feed a value for placeholder tensor
    'while/body/.../Placeholder'")."""
    if steps is not None:
        return steps
    return 1 if tf.distribute.has_strategy() else DEFAULT_STEPS_PER_EXECUTION


def resolve_optimizer(
    optimizer: str | keras.optimizers.Optimizer,
    learning_rate: float | None,
    global_clipnorm: float | None = None,
) -> str | keras.optimizers.Optimizer:
    """``optimizer`` as ``Model.compile`` takes it, except that "adam" with a
    ``learning_rate`` and/or a ``global_clipnorm`` becomes an Adam at that rate (Keras's
    default otherwise) that rescales each step's gradients to at most that global norm."""
    if learning_rate is not None:
        if isinstance(learning_rate, bool) or not (
            isinstance(learning_rate, numbers.Real) and 0 < learning_rate < math.inf
        ):
            raise ValueError(
                f"learning_rate must be a finite number > 0; received {learning_rate!r}."
            )
        if not (isinstance(optimizer, str) and optimizer.lower() == "adam"):
            raise ValueError(
                "learning_rate sets the rate of the default Adam; an optimizer instance keeps "
                f"its own rate. Received learning_rate={learning_rate!r} with {optimizer!r}."
            )
    if isinstance(optimizer, str) and optimizer.lower() == "adam":
        options = {}
        if learning_rate is not None:
            options["learning_rate"] = float(learning_rate)
        if global_clipnorm is not None:
            if not global_clipnorm > 0:
                raise ValueError(
                    f"global_clipnorm must be positive or None; received {global_clipnorm!r}."
                )
            options["global_clipnorm"] = float(global_clipnorm)
        if options:
            return keras.optimizers.Adam(**options)
    return optimizer


def build_optimizer_variables(model: keras.Model) -> None:
    """Creates ``model.optimizer``'s slot variables now, eagerly, under the model's
    distribution strategy. Without a strategy, Keras's TensorFlow trainer defers this to the
    first trace of the training step; creating variables there makes ``tf.function`` trace
    the whole step a second time, which costs as much again as the first trace
    (``tools/bench.py train-throughput`` reports the compile time). A no-op once built or
    before the model has weights."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or optimizer.built or not model.trainable_variables:
        return
    with model.distribute_strategy.scope():
        optimizer.build(model.trainable_variables)


class TrainableModel(keras.Model):
    """A ``keras.Model`` that minimises its own objective (``objective`` names it in errors),
    with nfzoo's compile defaults (see the module docstring)."""

    #: what the model minimises, for the error raised when ``compile`` is given a loss
    objective = "its own objective"
    #: Keras's train function (set by ``make_train_function``)
    train_function: Any

    def compile(
        self,
        optimizer: Any = "adam",
        learning_rate: float | None = None,
        *,
        jit_compile: bool | str = True,
        loss: Any = None,
        global_clipnorm: float | None = None,
        steps_per_execution: int | None = None,
        **kwargs,
    ) -> None:
        """``keras.Model.compile`` with nfzoo's defaults; ``loss`` must be left None.

        Args:
          learning_rate: sets Adam's learning rate when ``optimizer`` is "adam".
          global_clipnorm: when ``optimizer`` is "adam", rescale each step's gradients to at
            most this global norm (None: no clipping). An optimizer instance keeps its own
            settings.
          steps_per_execution: training steps per call of the compiled function (None:
            ``resolve_steps_per_execution``).
        """
        if loss is not None:
            raise ValueError(
                f"{type(self).__name__} minimises {self.objective} and takes no loss; "
                f"received loss={loss!r}."
            )
        super().compile(
            optimizer=resolve_optimizer(optimizer, learning_rate, global_clipnorm),
            jit_compile=jit_compile,
            steps_per_execution=resolve_steps_per_execution(steps_per_execution),
            **kwargs,
        )

    def fit(self, *args, **kwargs) -> keras.callbacks.History:
        """``keras.Model.fit``; compiles with the defaults if needed and builds the optimizer
        first, so the training step is traced once."""
        if not self.compiled:
            self.compile()
        build_optimizer_variables(self)
        return super().fit(*args, **kwargs)

    def make_train_function(self, force: bool = False) -> Callable:
        """Keras's train function, except that under XLA with several steps per execution and
        no distribution strategy, the steps of one execution are one compiled program
        (``StepsInOneProgram``). A ``train_step`` of these models returns the results of
        their metrics (``get_metrics_result()``), which that program returns once at its end."""
        if self.train_function is not None and not force:
            return self.train_function
        super().make_train_function(force=True)
        if (
            not self.run_eagerly
            and self.jit_compile is True
            and self.steps_per_execution > 1
            and not tf.distribute.has_strategy()
        ):
            self.train_function = StepsInOneProgram(self)
        return self.train_function


class StepsInOneProgram:
    """The train function of a TrainableModel: ``steps_per_execution`` training steps in one
    XLA program, a while loop over the execution's batches stacked on a leading axis.

    Keras compiles each step alone and runs the steps of an execution from a graph loop,
    which costs a launch of the compiled step and a hand-over of its inputs and outputs per
    step; for these small models that is a fifth of a step (``tools/bench.py
    train-throughput`` times ``fit``). An execution whose batches differ in shape (the last,
    smaller batch of an epoch) or that has fewer batches runs them one compiled step each, as
    Keras does."""

    def __init__(self, model: TrainableModel):
        self.model = model
        self.steps = int(model.steps_per_execution)
        self.one_step = tf.function(model.train_step, jit_compile=True, reduce_retracing=True)
        self.all_steps = tf.function(self._all_steps, jit_compile=True, reduce_retracing=True)

    def _all_steps(self, batches):
        def body(i):
            self.model.train_step(tf.nest.map_structure(lambda t: t[i], batches))
            return i + 1

        tf.while_loop(lambda i: i < self.steps, body, [tf.constant(0)])
        return self.model.get_metrics_result()

    def __call__(self, iterator) -> dict[str, tf.Tensor]:
        batches = []
        for _ in range(self.steps):
            optional = iterator.get_next_as_optional()
            if not optional.has_value():
                break
            batches.append(_without_optionals(optional.get_value()))
        if not batches:
            raise StopIteration
        shapes = {tuple(tuple(t.shape) for t in tf.nest.flatten(b)) for b in batches}
        if len(batches) == self.steps and len(shapes) == 1:
            return self.all_steps(tf.nest.map_structure(lambda *t: tf.stack(t), *batches))
        for batch in batches:
            logs = self.one_step(batch)
        return logs


def _without_optionals(data):
    """Keras's data with its empty ``tf.experimental.Optional`` parts (a missing target or
    weight) as None, as Keras's own train function passes them."""
    return keras.tree.map_structure(
        lambda t: None if isinstance(t, tf.experimental.Optional) else t, data
    )


class PretrainedModel(TrainableModel):
    """A TrainableModel that ``save_pretrained`` writes as a folder and ``nfzoo.load`` reads
    back (Flow, FlowVAE). A subclass names the key of config.json that holds its Keras config
    (``pretrained_key``, one of ``nfzoo.config_checks.MODEL_KEYS``) and describes itself for
    the default card (``card_summary``)."""

    #: the key of config.json under which the model's Keras config is stored
    pretrained_key: ClassVar[str]

    def card_summary(self) -> str:
        """What the model is, in a sentence or two, for the default card.md."""
        return f"A {type(self).__name__}."

    def save_pretrained(
        self,
        directory: str | os.PathLike,
        *,
        metadata: dict[str, Any] | None = None,
        card: str | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Writes config.json + model.weights.h5 + card.md into ``directory``, atomically:
        everything is written to a temporary folder beside it and renamed at the end, so a
        failure leaves the previous contents (or nothing) in place. ``nfzoo.load(directory)``
        reads it back.

        Args:
          metadata: extra facts stored in config.json (dataset, training budget, metrics,
            command). Must be JSON-serialisable.
          card: the Markdown card; a short default is written when None.
          overwrite: replace an existing folder, if it is one nfzoo wrote (a save_pretrained
            or export folder holding only its own files; ``nfzoo.files``); others are refused.
        """
        self._refuse_non_finite()
        directory = Path(directory)
        with atomic_directory(directory, overwrite=overwrite) as tmp:
            self.save_weights(tmp / WEIGHTS_FILE)
            config = {
                "format": PRETRAINED_FORMAT,
                self.pretrained_key: self.get_config(),
                "weights_sha256": sha256_file(tmp / WEIGHTS_FILE),
                **(metadata or {}),
            }
            (tmp / CONFIG_FILE).write_text(config_text(config))
            if card is None:
                card = (
                    f"# {self.name}\n\n{self.card_summary()}\n\n"
                    f"Weights sha256: `{config['weights_sha256']}`.\n"
                )
            (tmp / CARD_FILE).write_text(card)
        return directory

    def _refuse_non_finite(self) -> None:
        """A model with a NaN or inf weight computes nothing useful and would be saved as if
        it did (a diverged training run, for instance)."""
        bad = [w.path for w in self.weights if not np.all(np.isfinite(np.asarray(w.numpy())))]
        if bad:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise ValueError(
                f"refusing to save {self.name}: {len(bad)} weight(s) hold NaN or inf ({shown}); "
                "training diverged or the weights were altered."
            )
