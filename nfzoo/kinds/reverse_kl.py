"""The "reverse-kl" kind: a Flow fitted to an unnormalised 2-D target p~ = Z p by reverse KL;
headline: KL(q || p) = log Z - ELBO, against the target's reference log Z (exact where known,
else ``nfzoo.targets.quadrature_log_z``)."""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

from nfzoo.kinds.base import Kind, Metric, Trained, machine, register_kind
from nfzoo.presets import Preset

if TYPE_CHECKING:  # TensorFlow is imported where a model is built: listing entries needs none
    from nfzoo import vi
    from nfzoo.flow import Flow

__all__ = ["ReverseKL", "reference_log_z"]


@functools.cache
def reference_log_z(target_name: str) -> float:
    """The reference log Z of a registered target (a quadrature takes a second: cached)."""
    from nfzoo import targets as targets_lib

    return targets_lib.reference_log_z(targets_lib.get(target_name))


def _reference_method(target_name: str) -> str:
    from nfzoo import targets as targets_lib

    if targets_lib.get(target_name).log_z is not None:
        return "exact"
    return "nfzoo.targets.quadrature_log_z (2001 x 2001 grid over [-6, 6]^2)"


class ReverseKL(Kind):
    name = "reverse-kl"
    model_key = "flow"
    headline = Metric("kl_nats", "KL(q||p)")

    @property
    def model_class(self) -> type:
        from nfzoo.flow import Flow

        return Flow

    def architectures(self) -> list[str]:
        from nfzoo.architectures import list_architectures

        return list_architectures(event_rank=1)

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
        return (
            self.headline,
            Metric("elbo", "ELBO"),
            Metric("log_z_is", "importance-sampled log Z"),
            Metric("ess_fraction", "ESS fraction", atol=0.0, rtol=1e-3),
        )

    def _measure(self, flow: Flow, preset: Preset) -> vi.Diagnostics:
        from nfzoo import targets as targets_lib
        from nfzoo import vi

        ev = preset.evaluation
        target = targets_lib.get(preset.dataset["target"])
        return vi.diagnostics(flow, target, num_samples=ev["num_samples"], seed=ev["seed"])

    def evaluate(self, model: Flow, preset: Preset) -> dict[str, float]:
        d = self._measure(model, preset)
        log_z = reference_log_z(preset.dataset["target"])
        return {
            "kl_nats": log_z - d.elbo,
            "elbo": d.elbo,
            "log_z_is": d.log_z,
            "ess_fraction": d.ess,
        }

    def train(self, preset: Preset, verbose: int = 2) -> Trained:
        from nfzoo import targets as targets_lib
        from nfzoo import vi

        t = preset.training
        target_name = preset.dataset["target"]
        log_z = reference_log_z(target_name)
        flow = self.build(preset)
        before = self._measure(flow, preset)
        start = time.perf_counter()
        vi.fit_reverse_kl(
            flow,
            targets_lib.get(target_name),
            steps=t["steps"],
            num_samples=t["num_samples"],
            learning_rate=t["learning_rate"],
            anneal_steps=int(t["steps"] * t["anneal_fraction"]),
            seed=t["seed"],
            verbose=verbose,
        )
        seconds = time.perf_counter() - start
        after = self._measure(flow, preset)
        metrics = {
            "kl_nats": log_z - after.elbo,
            "elbo": after.elbo,
            "elbo_se": after.elbo_se,
            "log_z_is": after.log_z,
            "log_z_is_se": after.log_z_se,
            "log_z_error": after.log_z - log_z,
            "ess_fraction": after.ess,
            "log_z_reference": log_z,
            "initial_kl_nats": log_z - before.elbo,
        }
        run = {
            "steps": t["steps"],
            "wall_time_seconds": round(seconds, 1),
            "machine": machine(),
            "log_z_reference_method": _reference_method(target_name),
        }
        return Trained(flow, {k: float(v) for k, v in metrics.items()}, run)

    def card_facts(self, preset: Preset, record: dict[str, Any]) -> list[str]:
        m, run, t, ev = record["metrics"], record["run"], record["training"], record["evaluation"]
        target = record["dataset"]["target"]
        return [
            f"- target: `nfzoo.targets.get({target!r})`; reference log Z = "
            f"{m['log_z_reference']:.6f} ({run['log_z_reference_method']})",
            f"- KL(q || p) = log Z - ELBO: **{m['kl_nats']:.4f} nats** (+- {m['elbo_se']:.4f}; "
            f"{m['initial_kl_nats']:.4f} before training)",
            f"- ELBO {m['elbo']:.4f}; importance-sampled log Z {m['log_z_is']:.4f} +- "
            f"{m['log_z_is_se']:.4f} (error {m['log_z_error']:+.4f}); ESS fraction "
            f"{m['ess_fraction']:.3f}; from {ev['num_samples']} samples, noise seed "
            f"{ev['seed']} (`nfzoo.vi.diagnostics`)",
            f"- training: reverse KL (minimise E_q[log q - log p~]), {run['steps']} steps x "
            f"{t['num_samples']} samples, beta annealed from 0.01 to 1 over the first "
            f"{t['anneal_fraction']:g} of the steps, Adam {t['learning_rate']}, seed {t['seed']}, "
            f"{run['wall_time_seconds']} s on {run['machine']}",
        ]


register_kind(ReverseKL())
