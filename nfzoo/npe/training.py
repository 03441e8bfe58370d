"""Neural posterior estimation (NPE): a conditional flow q(theta | x) trained on simulated
pairs by maximum likelihood, and its C2ST against reference posteriors.

Training (Papamakarios & Murray 2016, arXiv:1605.06376; Greenberg et al. 2019,
arXiv:1905.07488; single-round NPE as in Lueckmann et al. 2021, arXiv:2101.04653) maximises

    E_{theta ~ p(theta), x ~ p(x | theta)} [log q(theta | x)],

whose maximiser over all conditional densities is the posterior p(theta | x) for every x
(the expected KL(p(theta | x) || q(theta | x)) over p(x) is what is left). So one fit gives
the posterior of any observation: ``flow.sample(n, context=x_obs)``.

``train_npe`` simulates the pairs, builds ``nfzoo.build(arch, D, context_dim=X,
standardize=True)`` (an ActNorm next to theta, set from the first batch, so spline layers see
standardised parameters; the flow standardises its context x from the first batch too) and
trains it with ``flow.fit(theta, x)`` under XLA (the defaults of ``flow.compile``), holding
out a validation fraction and stopping early when the validation NLL stalls (the best weights
are kept). Defaults follow sbi's NPE defaults where they apply: 5 layers, hidden 50 x 50,
batch 200, Adam 5e-4, 10% validation, patience 20 epochs (10 bins for nsf).

Posterior samples (``sample_posterior``) are kept inside the prior's support: draws of q
that fall outside are rejected and redrawn (as sbi's posteriors do for "leakage"); the
acceptance rate is reported.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import numpy.typing as npt

from nfzoo.architectures import build
from nfzoo.flow import Flow
from nfzoo.npe.c2st import c2st
from nfzoo.npe.defaults import NPE_DEFAULTS, TRAINING_SEED
from nfzoo.npe.tasks import Reference, Task, get_task

__all__ = [
    "TrainingRecord",
    "build_npe_flow",
    "evaluate_npe",
    "reference_posterior",
    "sample_in_support",
    "sample_posterior",
    "train_and_evaluate",
    "train_npe",
]

#: bump when reference samples change, so caches of old ones are not read
REFERENCE_VERSION = 2


@dataclass(frozen=True)
class TrainingRecord:
    """What ``train_npe`` did (``flow.npe_training``); ``asdict()`` for JSON."""

    task: str
    arch: str
    num_simulations: int
    seed: int
    options: dict
    batch_size: int
    learning_rate: float
    epochs: int
    steps: int
    best_val_loss: float
    seconds: float

    def asdict(self) -> dict:
        return dataclasses.asdict(self)


def train_npe(
    task: str | Task,
    num_simulations: int,
    arch: str = "nsf",
    seed: int = 0,
    *,
    batch_size: int = 200,
    learning_rate: float = 5e-4,
    validation_fraction: float = 0.1,
    patience: int = 20,
    max_epochs: int = 1000,
    verbose: int = 0,
    name: str | None = None,
    **options,
) -> Flow:
    """Trains q(theta | x) on ``num_simulations`` simulated pairs of ``task``; returns the flow
    with the best validation weights (its Keras ``history`` holds the losses).

    Args:
      task: a task or its name (``nfzoo.npe.list_tasks()``).
      num_simulations: simulated (theta, x) pairs, training and validation together.
      arch: a conditional architecture (``nfzoo.list_architectures(conditional=True)``).
      seed: seed of the simulations (``TRAINING_SEED + seed``), the flow and the shuffling.
      name: the flow's (Keras model's) name; the architecture's default when None.
      options: architecture options (default ``NPE_DEFAULTS[arch]`` where it exists).
    """
    task = get_task(task)
    if isinstance(num_simulations, bool) or not isinstance(num_simulations, int | np.integer):
        raise ValueError(f"num_simulations must be an integer; received {num_simulations!r}.")
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(
            f"validation_fraction must be in (0, 1); received {validation_fraction!r}."
        )
    n_val = round(validation_fraction * num_simulations)
    if n_val < 1 or num_simulations - n_val < 2:
        raise ValueError(
            f"num_simulations={num_simulations} is too few to hold out a validation fraction "
            f"of {validation_fraction}: need at least one validation and two training pairs."
        )
    theta, x = task.simulate_pairs(num_simulations, seed=TRAINING_SEED + seed)
    theta, x = theta.astype(np.float32), x.astype(np.float32)
    options = {**NPE_DEFAULTS.get(arch, {}), **options}
    keras.utils.set_random_seed(seed)
    flow = build_npe_flow(task, arch, seed, name=name, **options)
    flow.compile(learning_rate=learning_rate)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, restore_best_weights=True
    )
    start = time.perf_counter()
    flow.fit(
        theta[n_val:],
        x[n_val:],
        validation_data=(theta[:n_val], x[:n_val]),
        batch_size=batch_size,
        epochs=max_epochs,
        callbacks=[stop],
        verbose=verbose,
    )
    # a plain object, not a dict: Keras would track a dict attribute of the model
    flow.npe_training = TrainingRecord(
        task=task.name,
        arch=arch,
        num_simulations=int(num_simulations),
        seed=seed,
        options={k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
        batch_size=batch_size,
        learning_rate=learning_rate,
        epochs=len(flow.history.epoch),
        steps=len(flow.history.epoch) * -(-(num_simulations - n_val) // batch_size),
        best_val_loss=float(min(flow.history.history["val_loss"])),
        seconds=time.perf_counter() - start,
    )
    return flow


def build_npe_flow(
    task: str | Task, arch: str = "nsf", seed: int = 0, name: str | None = None, **options
) -> Flow:
    """The untrained q(theta | x) of ``train_npe``: ``nfzoo.build(arch, D, context_dim=X,
    standardize=True, **options)`` (options default to ``NPE_DEFAULTS[arch]``). Its
    standardisation of theta and x is set by the first batch it is fitted (or initialised) on."""
    task = get_task(task)
    options = {**NPE_DEFAULTS.get(arch, {}), **options}
    if name is not None:
        options["name"] = name
    return build(
        arch, task.theta_dim, context_dim=task.x_dim, standardize=True, seed=seed, **options
    )


def sample_posterior(
    flow: Flow, task: str | Task, x: npt.ArrayLike, n: int, seed: int = 0, max_draws: int = 100
) -> tuple[np.ndarray, float]:
    """n samples of q(theta | x) inside the prior's support (draws outside are rejected and
    redrawn), and the acceptance rate. Raises RuntimeError if fewer than n are found in
    ``max_draws`` x n draws."""
    task = get_task(task)
    x = task._observation(x).astype(np.float32)

    def draw(m: int, round_: int) -> np.ndarray:
        return flow.sample(m, seed=seed * 1000 + round_, context=x).numpy()

    return sample_in_support(draw, task, n, max_draws)


def sample_in_support(
    draw: Callable[[int, int], npt.ArrayLike], task: str | Task, n: int, max_draws: int = 100
) -> tuple[np.ndarray, float]:
    """n draws of ``draw(m, round) -> [m, D]`` (any posterior estimate) inside the prior's
    support, and the acceptance rate; ``round`` counts the calls, for seeding."""
    task = get_task(task)
    kept: list[np.ndarray] = []
    drawn, round_ = 0, 0
    while sum(len(k) for k in kept) < n:
        m = max(n, 1000)
        theta = np.asarray(draw(m, round_), dtype=np.float64)
        drawn += m
        round_ += 1
        kept.append(theta[task.in_support(theta)])
        if drawn >= max_draws * n and sum(len(k) for k in kept) < n:
            raise RuntimeError(
                f"{task.name}: only {sum(len(k) for k in kept)} of {drawn} posterior draws fell "
                "inside the prior's support."
            )
    accepted = sum(len(k) for k in kept)
    return np.concatenate(kept)[:n], accepted / drawn


def reference_posterior(
    task: str | Task,
    i: int,
    n: int = 10_000,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> Reference:
    """The reference posterior samples of observation ``i`` (1..10) of ``task``, made by the
    task's method with ``np.random.default_rng([seed, i])``; with ``cache_dir``, read from
    (or written to) ``<cache_dir>/<task>-<i>-<n>-<seed>-v<version>.npz``. Nothing is
    downloaded: a missing cache entry is computed."""
    task = get_task(task)
    x = task.observation(i)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{task.name}-{i}-{n}-{seed}-v{REFERENCE_VERSION}.npz"
        if path.exists():
            with np.load(path) as f:
                return Reference(f["samples"], str(f["method"]), json.loads(str(f["diagnostics"])))
    ref = task.reference_posterior(x, n, np.random.default_rng([seed, i]))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, samples=ref.samples, method=ref.method, diagnostics=_json(ref.diagnostics))
        tmp.replace(path)
    return ref


def evaluate_npe(
    flow: Flow,
    task: str | Task,
    observations: Iterable[int] = range(1, 11),
    num_samples: int = 10_000,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> dict:
    """C2ST between ``num_samples`` posterior samples of the flow and as many reference
    samples, for each observation; returns per-observation figures and their mean, min, max."""
    task = get_task(task)
    rows = []
    for i in observations:
        ref = reference_posterior(task, i, num_samples, seed=seed, cache_dir=cache_dir)
        samples, acceptance = sample_posterior(flow, task, task.observation(i), num_samples, seed)
        rows.append(
            {"observation": i, "c2st": c2st(ref.samples, samples), "acceptance": acceptance}
        )
    scores = [r["c2st"] for r in rows]
    return {
        "task": task.name,
        "num_samples": num_samples,
        "observations": rows,
        "c2st_mean": float(np.mean(scores)),
        "c2st_min": float(np.min(scores)),
        "c2st_max": float(np.max(scores)),
    }


def train_and_evaluate(
    task: str | Task,
    num_simulations: int = 100_000,
    arch: str = "nsf",
    seed: int = 0,
    num_samples: int = 10_000,
    observations: Iterable[int] = range(1, 11),
    cache_dir: str | os.PathLike | None = None,
    **train_options,
) -> tuple[Flow, dict]:
    """A pretrained NPE entry's recipe: ``train_npe`` then ``evaluate_npe`` on the
    observations (default the 10 fixed ones). Returns the flow and a report (training
    facts, C2ST per observation, mean and range)."""
    flow = train_npe(task, num_simulations, arch, seed, **train_options)
    report = evaluate_npe(flow, task, observations, num_samples, seed, cache_dir)
    return flow, {"training": flow.npe_training.asdict(), **report}


def _json(value) -> str:
    return json.dumps(value, default=float)
