"""The "density" kind: a Flow fitted to data by maximum likelihood; headline: test NLL.

Three families of data set, told apart by the preset's dataset name:

- 2-D toy densities: NLL in nats per point on the fixed test split (mean over the split,
  evaluated in 10 chunks);
- "digits" (64-d vectors (pixel + u) / 17): the same NLL, and the bits/dim bound
  (NLL + D log 17) / (D log 2) of the 17-level pixels;
- "digits-images" ([8, 8, 1] counts): bits/dim averaged over the preset's fixed uniform
  dequantizations (``nfzoo.data.bits_per_dim``; validation with the seed + 1000), and the NLL
  in nats per image of the dequantized data that it implies.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from nfzoo import data as nfzoo_data
from nfzoo.kinds.base import Kind, Metric, Trained, machine, register_kind
from nfzoo.presets import Preset

if TYPE_CHECKING:  # TensorFlow is imported where a model is built: listing entries needs none
    from nfzoo.flow import Flow

__all__ = ["Density"]

#: the seed offset of the validation split's dequantizations (image entries)
VALIDATION_SEED_OFFSET = 1000


def _is_images(preset: Preset) -> bool:
    return preset.dataset["name"] == "digits-images"


def _image_bits_per_dim(flow: Flow, counts: np.ndarray, preset: Preset, offset: int = 0):
    ev = preset.evaluation
    return nfzoo_data.bits_per_dim(
        flow,
        counts,
        nfzoo_data.DIGITS_LEVELS,
        draws=ev["dequantization_draws"],
        seed=ev["seed"] + offset,
    )


class Density(Kind):
    name = "density"
    model_key = "flow"
    headline = Metric("test_nll_nats", "test NLL")

    @property
    def model_class(self) -> type:
        from nfzoo.flow import Flow

        return Flow

    def architectures(self) -> list[str]:
        from nfzoo.architectures import list_architectures

        return list_architectures()

    def current_options(self, architecture: str, options: dict[str, Any]) -> dict[str, Any]:
        from nfzoo.architectures import current_option_names

        return current_option_names(architecture, options)

    def build(self, preset: Preset) -> Flow:
        from nfzoo.architectures import build

        return build(
            preset.architecture,
            preset.event_shape,
            seed=preset.training["seed"],
            name=preset.name.replace("-", "_"),
            **preset.options,
        )

    def checked(self, preset: Preset) -> tuple[Metric, ...]:
        if preset.dataset["name"] in ("digits", "digits-images"):
            return (self.headline, Metric("test_bits_per_dim", "test bits/dim"))
        return (self.headline,)

    def evaluate(self, model: Flow, preset: Preset) -> dict[str, float]:
        _, _, test = nfzoo_data.load_dataset(preset.dataset)
        return self._test_metrics(model, preset, test)

    def _test_metrics(self, flow: Flow, preset: Preset, test: np.ndarray) -> dict[str, float]:
        size = int(np.prod(test.shape[1:]))
        if _is_images(preset):
            bpd = _image_bits_per_dim(flow, test, preset)
            return {"test_nll_nats": bpd * size * np.log(2.0), "test_bits_per_dim": bpd}
        nll = nfzoo_data.mean_nll(flow, test)
        metrics = {"test_nll_nats": nll}
        if preset.dataset["name"] == "digits":  # 17-level pixels, uniform dequantization
            levels = nfzoo_data.DIGITS_LEVELS
            metrics["test_bits_per_dim"] = (nll + size * np.log(levels)) / (size * np.log(2.0))
        return metrics

    def train(self, preset: Preset, verbose: int = 2) -> Trained:
        from nfzoo.training import train_flow

        train, val, test = nfzoo_data.load_dataset(preset.dataset)
        if tuple(train.shape[1:]) != tuple(preset.event_shape):
            raise ValueError(
                f"{preset.name} declares events of shape {preset.event_shape}; its data set "
                f"has {tuple(train.shape[1:])}."
            )
        t = preset.training
        images = _is_images(preset)
        result = train_flow(
            lambda: self.build(preset),
            train,
            steps=t["steps"],
            batch_size=t["batch_size"],
            learning_rate=t["learning_rate"],
            seed=t["seed"],
            validation=val if t["patience"] else None,
            patience=t["patience"],
            dequantize=images,
            verbose=verbose,
        )
        flow = result.flow
        metrics = self._test_metrics(flow, preset, test)
        size = int(np.prod(train.shape[1:]))
        if images:
            val_bpd = _image_bits_per_dim(flow, val, preset, offset=VALIDATION_SEED_OFFSET)
            metrics["val_bits_per_dim"] = val_bpd
            metrics["val_nll_nats"] = val_bpd * size * np.log(2.0)
            flat = [nfzoo_data.dequantize(v, seed=1).reshape(len(v), -1) for v in (train, test)]
            metrics["gaussian_test_nll_nats"] = nfzoo_data.gaussian_baseline_nll(*flat)
            metrics["uniform_bits_per_dim"] = float(np.log2(nfzoo_data.DIGITS_LEVELS))
        else:
            metrics["val_nll_nats"] = nfzoo_data.mean_nll(flow, val)
            metrics["gaussian_test_nll_nats"] = nfzoo_data.gaussian_baseline_nll(train, test)
        run = {
            "steps": result.steps,
            "wall_time_seconds": round(result.seconds, 1),
            "machine": machine(),
            "split_sizes": {"train": len(train), "validation": len(val), "test": len(test)},
        }
        return Trained(flow, {k: float(v) for k, v in metrics.items()}, run)

    def card_facts(self, preset: Preset, record: dict[str, Any]) -> list[str]:
        m, run, t = record["metrics"], record["run"], record["training"]
        sizes = run["split_sizes"]
        lines = [
            f"- data: `nfzoo.data.load_dataset({json.dumps(record['dataset'])})`; split "
            f"{sizes['train']} train / {sizes['validation']} validation / {sizes['test']} test",
            f"- held-out (test) NLL: **{m['test_nll_nats']:.4f} nats** "
            f"(validation {m['val_nll_nats']:.4f}; best single Gaussian "
            f"{m['gaussian_test_nll_nats']:.4f})",
        ]
        if "uniform_bits_per_dim" in m:
            lines.append(
                "- test bits/dim (17-level pixels, mean over "
                f"{record['evaluation']['dequantization_draws']} fixed uniform dequantizations "
                f"from seed {record['evaluation']['seed']}): **{m['test_bits_per_dim']:.4f}** "
                f"(validation {m['val_bits_per_dim']:.4f}; a uniform model: "
                f"{m['uniform_bits_per_dim']:.4f})"
            )
        elif "test_bits_per_dim" in m:
            lines.append(
                f"- test bits/dim (17-level pixels, dequantised): **{m['test_bits_per_dim']:.4f}**"
            )
        stopping = (
            f" (of {t['steps']}; early stopping, patience {t['patience']})" if t["patience"] else ""
        )
        lines.append(
            f"- training: {run['steps']} steps{stopping} of batch {t['batch_size']}, Adam "
            f"{t['learning_rate']}, seed {t['seed']}, {run['wall_time_seconds']} s on "
            f"{run['machine']}"
        )
        return lines


register_kind(Density())
