"""The "npe" kind: an amortized posterior q(theta | x), a conditional Flow trained by neural
posterior estimation on simulations of a task of ``nfzoo.npe`` (``nfzoo.npe.train_npe``);
headline: C2ST (Lueckmann et al. 2021, arXiv:2101.04653) between posterior samples and
reference samples, averaged over the task's fixed observations (0.5: indistinguishable).

The C2ST of an entry is recomputed from its shipped weights exactly as it was measured: the
posterior draws are seeded, the reference draws are seeded, and the classifier and its folds
are seeded. What moves between machines is float32 arithmetic in the flow's sampling (a
thread count or an instruction set changes the last bits of a draw), and a classifier fitted
to slightly different points lands on a slightly different accuracy: hence the tolerances of
the checked metrics below.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from nfzoo.kinds.base import Kind, Metric, Trained, machine, register_kind
from nfzoo.presets import Preset

if TYPE_CHECKING:  # the library (TensorFlow) loads only when an entry is built or loaded
    from nfzoo.flow import Flow

__all__ = ["NPEKind"]


def _options(preset: Preset) -> dict[str, Any]:
    """The flow's options (the preset's, less the names ``npe`` adds: flow, context_dim)."""
    return {k: v for k, v in preset.options.items() if k not in ("flow", "context_dim")}


class NPEKind(Kind):
    name = "npe"
    model_key = "flow"
    headline = Metric("c2st_mean", "mean C2ST", atol=0.01)

    @property
    def model_class(self) -> type:
        from nfzoo.flow import Flow

        return Flow

    def architectures(self) -> list[str]:
        return ["npe"]

    def _task(self, preset: Preset):
        from nfzoo.npe import get_task

        task = get_task(preset.dataset["task"])
        declared = (tuple(preset.event_shape), preset.options["context_dim"])
        if declared != ((task.theta_dim,), task.x_dim):
            raise ValueError(
                f"{preset.name} declares theta of shape {declared[0]} and x of dimension "
                f"{declared[1]}; the task {task.name} has ({task.theta_dim},) and {task.x_dim}."
            )
        return task

    def current_options(self, architecture: str, options: dict[str, Any]) -> dict[str, Any]:
        from nfzoo.architectures import current_option_names

        flow = {k: options[k] for k in ("flow", "context_dim") if k in options}
        rest = {k: v for k, v in options.items() if k not in flow}
        return {**flow, **current_option_names(options["flow"], rest)}

    def build(self, preset: Preset) -> Flow:
        from nfzoo.npe import build_npe_flow

        return build_npe_flow(
            self._task(preset),
            preset.options["flow"],
            seed=preset.training["seed"],
            name=preset.name.replace("-", "_"),
            **_options(preset),
        )

    def checked(self, preset: Preset) -> tuple[Metric, ...]:
        return (
            self.headline,
            Metric("c2st_min", "smallest C2ST", atol=0.02),
            Metric("c2st_max", "largest C2ST", atol=0.02),
        )

    def _report(self, flow: Flow, preset: Preset) -> dict:
        from nfzoo.npe.training import evaluate_npe

        ev = preset.evaluation
        return evaluate_npe(
            flow,
            self._task(preset),
            observations=ev["observations"],
            num_samples=ev["num_samples"],
            seed=ev["seed"],
        )

    def evaluate(self, model: Flow, preset: Preset) -> dict[str, float]:
        report = self._report(model, preset)
        return {key: report[key] for key in ("c2st_mean", "c2st_min", "c2st_max")}

    def train(self, preset: Preset, verbose: int = 2) -> Trained:
        from nfzoo.npe import train_npe

        t = preset.training
        task = self._task(preset)
        flow = train_npe(
            task,
            preset.dataset["num_simulations"],
            preset.options["flow"],
            t["seed"],
            batch_size=t["batch_size"],
            learning_rate=t["learning_rate"],
            validation_fraction=t["validation_fraction"],
            patience=t["patience"],
            max_epochs=t["max_epochs"],
            verbose=verbose,
            name=preset.name.replace("-", "_"),
            **_options(preset),
        )
        start = time.perf_counter()
        report = self._report(flow, preset)
        seconds = time.perf_counter() - start
        record = flow.npe_training
        metrics = {
            "c2st_mean": report["c2st_mean"],
            "c2st_min": report["c2st_min"],
            "c2st_max": report["c2st_max"],
            "acceptance_min": min(o["acceptance"] for o in report["observations"]),
            "best_val_nll_nats": record.best_val_loss,
            **{f"c2st_observation_{o['observation']}": o["c2st"] for o in report["observations"]},
        }
        run = {
            "steps": record.steps,
            "epochs": record.epochs,
            "wall_time_seconds": round(record.seconds, 1),
            "evaluation_seconds": round(seconds, 1),
            "machine": machine(),
        }
        return Trained(flow, {k: float(v) for k, v in metrics.items()}, run)

    def card_facts(self, preset: Preset, record: dict[str, Any]) -> list[str]:
        from nfzoo.npe.defaults import TRAINING_SEED

        m, run, t, ev = record["metrics"], record["run"], record["training"], record["evaluation"]
        task, n = record["dataset"]["task"], record["dataset"]["num_simulations"]
        observations = ev["observations"]
        per_observation = ", ".join(f"{m[f'c2st_observation_{i}']:.3f}" for i in observations)
        stopped = "stopped early" if run["epochs"] < t["max_epochs"] else "ran to the limit"
        return [
            f'- task: `nfzoo.npe.get_task("{task}")`, theta of dimension '
            f"{record['architecture']['event_shape'][0]}, x of dimension "
            f"{record['architecture']['options']['context_dim']}; trained on {n:,} simulated "
            f"pairs (simulation seed {TRAINING_SEED + t['seed']}), "
            f"{t['validation_fraction']:.0%} held out for validation",
            f"- C2ST over the task's {len(observations)} fixed observations "
            f"(`task.observation(i)`, i = {observations[0]}..{observations[-1]}): "
            f"**{m['c2st_mean']:.4f}** mean, range {m['c2st_min']:.3f}-{m['c2st_max']:.3f} "
            "(0.5: indistinguishable from the reference posterior)",
            f"- per observation: {per_observation}; from {ev['num_samples']:,} posterior samples "
            f"(kept inside the prior's support; smallest acceptance {m['acceptance_min']:.3f}) "
            f"against {ev['num_samples']:,} reference samples, seed {ev['seed']} "
            f"(`nfzoo.npe.evaluate_npe`), {run['evaluation_seconds']} s",
            f"- training: `nfzoo.npe.train_npe`, {run['epochs']} epochs ({run['steps']:,} steps; "
            f"{stopped}: patience {t['patience']}, at most {t['max_epochs']}) of batch "
            f"{t['batch_size']}, Adam {t['learning_rate']}, seed {t['seed']}, best validation "
            f"NLL {m['best_val_nll_nats']:.4f} nats, {run['wall_time_seconds']} s on "
            f"{run['machine']}",
            f'- use: `nfzoo.load("{preset.name}").sample(1000, context=x_obs, seed=0)` draws '
            f"theta ~ q(theta | x_obs) for any x_obs of shape "
            f"[{record['architecture']['options']['context_dim']}]; "
            f'`nfzoo.npe.sample_posterior(flow, "{task}", x_obs, 1000)` keeps the draws inside '
            "the prior's support",
        ]


register_kind(NPEKind())
