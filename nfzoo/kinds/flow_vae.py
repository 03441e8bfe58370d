"""The "flow-vae" kind: a ``nfzoo.vae.FlowVAE`` on binarised digits; headline: the test
importance-weighted NLL -L_k (Burda et al. 2015), nats per digit."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from nfzoo import data as nfzoo_data
from nfzoo.kinds.base import Kind, Metric, Trained, machine, register_kind
from nfzoo.presets import Preset

if TYPE_CHECKING:  # TensorFlow is imported where a model is built: listing entries needs none
    import keras

    from nfzoo.vae import FlowVAE

__all__ = ["FlowVAEKind", "measure", "train_flow_vae"]


def train_flow_vae(
    preset: Preset, train: np.ndarray, verbose: int = 0
) -> tuple[FlowVAE, keras.callbacks.History, float]:
    """The preset's FlowVAE trained on ``train`` at its budget (whole epochs of shuffled
    batches; Keras's global seed and the model's seed from the preset). Returns (model,
    Keras History, fit seconds)."""
    import keras

    t = preset.training
    keras.utils.set_random_seed(t["seed"])
    model = FlowVAEKind().build(preset)
    model.compile(learning_rate=t["learning_rate"])
    epochs = t["steps"] // (len(train) // t["batch_size"])
    start = time.perf_counter()
    history = model.fit(
        train, batch_size=t["batch_size"], epochs=epochs, shuffle=True, verbose=verbose
    )
    return model, history, time.perf_counter() - start


def measure(model: FlowVAE, test: np.ndarray, preset: Preset) -> dict[str, float]:
    """Test -ELBO (nats per example; a ``elbo_samples``-sample estimate) and test IW-NLL
    (k = ``iw_samples``), each on the preset's fixed evaluation noise."""
    ev = preset.evaluation
    return {
        "test_iw_nll_nats": float(
            model.importance_weighted_nll(test, ev["iw_samples"], seed=ev["iw_seed"]).mean()
        ),
        "test_neg_elbo_nats": float(
            -model.elbo(test, num_samples=ev["elbo_samples"], seed=ev["elbo_seed"]).mean()
        ),
    }


class FlowVAEKind(Kind):
    name = "flow-vae"
    model_key = "flow_vae"
    headline = Metric("test_iw_nll_nats", "test IW-NLL", atol=1e-3)
    not_exportable = (
        "a FlowVAE is a VAE, not a Flow: nfzoo.export writes a flow's log_prob / generate / "
        "sample graphs, and a VAE has no exact log-density"
    )

    @property
    def model_class(self) -> type:
        from nfzoo.vae import FlowVAE

        return FlowVAE

    def architectures(self) -> list[str]:
        return ["flow-vae"]

    def build(self, preset: Preset) -> FlowVAE:
        from nfzoo.vae import FlowVAE

        return FlowVAE(
            input_dim=preset.event_shape[0],
            seed=preset.training["seed"],
            name=preset.name.replace("-", "_"),
            **preset.options,
        )

    def checked(self, preset: Preset) -> tuple[Metric, ...]:
        return (self.headline, Metric("test_neg_elbo_nats", "test -ELBO", atol=1e-3))

    def evaluate(self, model: FlowVAE, preset: Preset) -> dict[str, float]:
        _, _, test = nfzoo_data.load_dataset(preset.dataset)
        return measure(model, test, preset)

    def train(self, preset: Preset, verbose: int = 2) -> Trained:
        train, val, test = nfzoo_data.load_dataset(preset.dataset)
        model, _, seconds = train_flow_vae(preset, train, verbose=verbose)
        ev = preset.evaluation
        metrics = measure(model, test, preset)
        metrics["train_neg_elbo_nats"] = float(
            -model.elbo(train, num_samples=ev["elbo_samples"], seed=ev["elbo_seed"]).mean()
        )
        # the best model with independent pixels: Bernoulli(train mean), clipped off 0 and 1
        p = np.clip(train.mean(axis=0), 1e-3, 1 - 1e-3)
        bernoulli = -np.mean(test @ np.log(p) + (1 - test) @ np.log(1 - p))
        metrics["bernoulli_test_nll_nats"] = float(bernoulli)
        run = {
            "steps": int(model.optimizer.iterations.numpy()),
            "wall_time_seconds": round(seconds, 1),
            "machine": machine(),
            "split_sizes": {"train": len(train), "validation": len(val), "test": len(test)},
        }
        return Trained(model, metrics, run)

    def card_facts(self, preset: Preset, record: dict[str, Any]) -> list[str]:
        m, run, t, ev = record["metrics"], record["run"], record["training"], record["evaluation"]
        sizes = run["split_sizes"]
        return [
            "- model: `nfzoo.vae.FlowVAE`, a VAE with an amortised flow posterior (van den Berg "
            "et al. 2018, arXiv:1803.05649)",
            f"- data: `nfzoo.data.load_dataset({json.dumps(record['dataset'])})`, i.e. "
            "`nfzoo.data.binarized_digits()` (pixel >= 8 of 0..16); split "
            f"{sizes['train']} train / {sizes['validation']} validation / {sizes['test']} test",
            f"- test importance-weighted NLL (-L_k, k = {ev['iw_samples']}, noise seed "
            f"{ev['iw_seed']}): **{m['test_iw_nll_nats']:.4f} nats** per digit",
            f"- test -ELBO ({ev['elbo_samples']}-sample estimate, noise seed {ev['elbo_seed']}): "
            f"{m['test_neg_elbo_nats']:.4f} nats (train {m['train_neg_elbo_nats']:.4f}); "
            "independent pixels (Bernoulli of the training means): "
            f"{m['bernoulli_test_nll_nats']:.4f}",
            f"- training: -ELBO with one reparameterised sample per example, {run['steps']} "
            f"steps of batch {t['batch_size']}, Adam {t['learning_rate']}, seed {t['seed']}, "
            f"{run['wall_time_seconds']} s on {run['machine']}",
            "- samples: `nfzoo.load(...).sample(n, seed)` draws z ~ N(0, I) and digits from "
            "the decoder (`nfzoo sample`, `nfzoo plot`)",
        ]


register_kind(FlowVAEKind())
