"""The task interface of ``nfzoo.npe``: ``Task`` (prior, simulator, likelihood, fixed
observations, reference posterior; inputs checked), ``Reference`` (samples with their method
and checks), the registry of tasks, and helpers shared by the tasks in ``tasks.py``.

Observations: observation i (1..10, numbered as in sbibm) is made by
``rng = np.random.default_rng(OBSERVATION_SEED + i)``, ``theta_i = sample_prior(1, rng)``,
``x_i = simulate(theta_i, rng)``; ``true_parameters(i)`` is theta_i.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from nfzoo.registry import Registry

__all__ = ["OBSERVATION_SEED", "TASKS", "Reference", "Task", "get_task", "list_tasks"]

#: observation i is drawn with ``np.random.default_rng(OBSERVATION_SEED + i)``
OBSERVATION_SEED = 1_000_000


@dataclass
class Reference:
    """Reference posterior samples [n, D] for one observation, how they were made, and the
    checks of that method (acceptance counts, R-hat, ...)."""

    samples: np.ndarray
    method: str
    diagnostics: dict = field(default_factory=dict)


class Task:
    """A simulation-based inference task: theta ~ p(theta), x ~ p(x | theta).

    Subclasses set ``name``, ``theta_dim``, ``x_dim``, ``reference_method`` and implement
    ``_sample_prior``, ``_log_prior``, ``_simulate``, ``_log_likelihood`` and
    ``_reference_posterior`` on checked float64 arrays."""

    name: str
    title: str
    theta_dim: int
    x_dim: int
    reference_method: str
    num_observations = 10

    # ---- public API (checked) ------------------------------------------------------

    def sample_prior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n draws theta ~ p(theta): [n, theta_dim]."""
        return self._sample_prior(check_count(n, "n"), check_rng(rng))

    def log_prior(self, theta: npt.ArrayLike) -> np.ndarray:
        """log p(theta) for theta [n, theta_dim]: [n] (-inf outside the support)."""
        return self._log_prior(self._theta(theta))

    def simulate(self, theta: npt.ArrayLike, rng: np.random.Generator) -> np.ndarray:
        """One x ~ p(x | theta) per row of theta [n, theta_dim]: [n, x_dim]."""
        return self._simulate(self._theta(theta), check_rng(rng))

    def log_likelihood(self, theta: npt.ArrayLike, x: npt.ArrayLike) -> np.ndarray:
        """log p(x | theta) of one observation x [x_dim] for every row of theta: [n]."""
        return self._log_likelihood(self._theta(theta), self._observation(x))

    def simulate_pairs(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """n simulated pairs (theta ~ prior, x ~ simulator), float64 [n, D] and [n, X]."""
        rng = np.random.default_rng(check_count(seed, "seed", minimum=0))
        theta = self.sample_prior(n, rng)
        return theta, self.simulate(theta, rng)

    def true_parameters(self, i: int) -> np.ndarray:
        """theta_i [theta_dim], the parameters observation ``i`` (1..10) was simulated from."""
        return self._observation_pair(i)[0]

    def observation(self, i: int) -> np.ndarray:
        """x_i [x_dim], the i-th fixed observation (1..10); see the module docstring."""
        return self._observation_pair(i)[1]

    def reference_posterior(self, x: npt.ArrayLike, n: int, rng: np.random.Generator) -> Reference:
        """n reference samples of p(theta | x) for one observation x [x_dim]."""
        return self._reference_posterior(self._observation(x), check_count(n, "n"), check_rng(rng))

    def in_support(self, theta: npt.ArrayLike) -> np.ndarray:
        """Whether each row of theta lies in the prior's support: bool [n]."""
        theta = self._theta(theta)
        with np.errstate(invalid="ignore"):
            return np.isfinite(self._log_prior(theta)) & np.isfinite(theta).all(axis=1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(theta_dim={self.theta_dim}, x_dim={self.x_dim})"

    # ---- helpers ----------------------------------------------------------------------

    def _observation_pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(i, bool) or not isinstance(i, int | np.integer) or not 1 <= i <= 10:
            raise ValueError(f"{self.name} has observations 1..10; received {i!r}.")
        rng = np.random.default_rng(OBSERVATION_SEED + int(i))
        theta = self.sample_prior(1, rng)
        return theta[0], self.simulate(theta, rng)[0]

    def _theta(self, theta: npt.ArrayLike) -> np.ndarray:
        theta = np.asarray(theta, dtype=np.float64)
        if theta.ndim != 2 or theta.shape[1] != self.theta_dim:
            raise ValueError(
                f"{self.name} takes parameters theta of shape [n, {self.theta_dim}]; "
                f"received shape {list(theta.shape)}."
            )
        return theta

    def _observation(self, x: npt.ArrayLike) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.x_dim,):
            raise ValueError(
                f"{self.name} takes one observation x of shape [{self.x_dim}]; "
                f"received shape {list(x.shape)}."
            )
        if not np.isfinite(x).all():
            raise ValueError(f"{self.name}: the observation must be finite; received {x}.")
        return x

    # ---- what a task implements (on checked float64 arrays) ---------------------------

    def _sample_prior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement _sample_prior")

    def _log_prior(self, theta: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement _log_prior")

    def _simulate(self, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement _simulate")

    def _log_likelihood(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement _log_likelihood")

    def _reference_posterior(self, x: np.ndarray, n: int, rng: np.random.Generator) -> Reference:
        raise NotImplementedError(f"{type(self).__name__} does not implement _reference_posterior")


def check_count(value, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}; received {value!r}.")
    return int(value)


def check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"expected a numpy Generator (np.random.default_rng(seed)); received {rng!r}."
        )
    return rng


def box_log_prior(theta: np.ndarray, low: float, high: float) -> np.ndarray:
    inside = ((theta >= low) & (theta <= high)).all(axis=1)
    return np.where(inside, -theta.shape[1] * math.log(high - low), -np.inf)


def reject_to_prior(task: Task, draw, n: int, rng) -> tuple[np.ndarray, dict]:
    """Draws ``draw(m, rng) -> [m, D]`` in batches and keeps those inside the prior's support
    until n are kept: exact for a density known up to the support's indicator."""
    kept: list[np.ndarray] = []
    proposed = 0
    while sum(len(k) for k in kept) < n:
        m = max(1024, 2 * (n - sum(len(k) for k in kept)))
        theta = draw(m, rng)
        proposed += m
        kept.append(theta[task.in_support(theta)])
        if proposed > 1000 * n and not any(len(k) for k in kept):
            raise RuntimeError(f"{task.name}: no posterior draw fell inside the prior's support.")
    samples = np.concatenate(kept)[:n]
    accepted = sum(len(k) for k in kept)
    return samples, {"proposed": proposed, "accepted": accepted, "acceptance": accepted / proposed}


TASKS: Registry[Task] = Registry("NPE task")


def get_task(task: str | Task) -> Task:
    """A task by name (``list_tasks()``), or the task itself."""
    return task if isinstance(task, Task) else TASKS.get(task)


def list_tasks() -> list[str]:
    return TASKS.names()
