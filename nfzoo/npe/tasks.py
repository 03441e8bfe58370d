"""Simulation-based inference tasks: prior, simulator, likelihood, fixed observations.

Written from their definitions in Lueckmann et al. (2021), "Benchmarking Simulation-Based
Inference", arXiv:2101.04653, appendix T (sbibm's task definitions are the reference). Each
task is numpy only and seeded: ``sample_prior(n, rng)``, ``simulate(theta, rng)``,
``log_prior(theta)`` and ``log_likelihood(theta, x)`` (the exact likelihood of one observation
x, up to nothing: every task here has one in closed form), plus ten fixed observations.

Observations: observation i (1..10, numbered as in sbibm) is made by
``rng = np.random.default_rng(OBSERVATION_SEED + i)``, ``theta_i = sample_prior(1, rng)``,
``x_i = simulate(theta_i, rng)``; ``true_parameters(i)`` is theta_i (``task.py``). These are
nfzoo's own draws (sbibm draws its observations with torch's generator, so the values
differ).

Reference posteriors (``reference_posterior(x, n, rng)``), by task:

- gaussian-linear: exact (the posterior is Gaussian in closed form);
- two-moons: exact, by inverting the simulator (``TwoMoons``);
- gaussian-mixture: exact, the mixture posterior truncated to the prior box by rejection;
- slcp: sequential Monte Carlo with tempering on the exact likelihood (``nfzoo.npe.smc``),
  in independent runs whose agreement (R-hat) is part of the result.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from nfzoo.constants import LOG_2PI
from nfzoo.npe.task import (
    OBSERVATION_SEED,
    TASKS,
    Reference,
    Task,
    box_log_prior,
    get_task,
    list_tasks,
    reject_to_prior,
)

__all__ = [
    "OBSERVATION_SEED",
    "TASKS",
    "GaussianLinear",
    "GaussianMixture",
    "Reference",
    "Slcp",
    "Task",
    "TwoMoons",
    "get_task",
    "list_tasks",
]


# ---- gaussian-linear ----------------------------------------------------------------------


class GaussianLinear(Task):
    """Gaussian linear (Lueckmann et al. 2021, T.1), D = 10:

        theta ~ N(0, 0.1 I),    x | theta ~ N(theta, 0.1 I)

    Posterior, exact:  theta | x ~ N(S x / 0.1, S),  S = (I / 0.1 + I / 0.1)^-1 = 0.05 I,
    i.e. mean x / 2 and variance 0.05 in every coordinate."""

    name = "gaussian-linear"
    title = "Gaussian linear (10-d)"
    theta_dim = x_dim = 10
    prior_var = 0.1
    noise_var = 0.1
    reference_method = "exact: the Gaussian posterior in closed form"

    def posterior_mean_var(self, x: npt.ArrayLike) -> tuple[np.ndarray, float]:
        """(mean [D], variance of each coordinate) of the exact posterior p(theta | x)."""
        x = self._observation(x)
        var = 1.0 / (1.0 / self.prior_var + 1.0 / self.noise_var)
        return var * x / self.noise_var, var

    def _sample_prior(self, n, rng):
        return math.sqrt(self.prior_var) * rng.standard_normal((n, self.theta_dim))

    def _log_prior(self, theta):
        return _diag_normal_log_prob(theta, 0.0, self.prior_var)

    def _simulate(self, theta, rng):
        return theta + math.sqrt(self.noise_var) * rng.standard_normal(theta.shape)

    def _log_likelihood(self, theta, x):
        return _diag_normal_log_prob(x[None, :], theta, self.noise_var)

    def _reference_posterior(self, x, n, rng):
        mean, var = self.posterior_mean_var(x)
        samples = mean + math.sqrt(var) * rng.standard_normal((n, self.theta_dim))
        return Reference(samples, self.reference_method, {"mean": mean.tolist(), "var": var})


def _diag_normal_log_prob(x, mean, var) -> np.ndarray:
    d = x - mean
    return -0.5 * ((d * d).sum(axis=1) / var + d.shape[1] * (LOG_2PI + math.log(var)))


TASKS.add("gaussian-linear", GaussianLinear())


# ---- two-moons ----------------------------------------------------------------------------


class TwoMoons(Task):
    """Two moons (Lueckmann et al. 2021, T.8; Greenberg et al. 2019, arXiv:1905.07488):

        theta ~ U([-1, 1]^2),  a ~ U(-pi/2, pi/2),  r ~ N(0.1, 0.01^2),  p = (r cos a + 0.25,
        r sin a),   x = p + (-|theta_1 + theta_2| / sqrt 2, (theta_2 - theta_1) / sqrt 2)

    Likelihood: with z(theta) = R theta = ((theta_1 + theta_2) / sqrt 2, (theta_2 -
    theta_1) / sqrt 2), x determines ``p = (x_1 + |z_1|, x_2 - z_2)``. p has polar coordinates
    (r, a) around (0.25, 0) with density N(r; 0.1, 0.01^2) / pi, so in Cartesian coordinates

        p(x | theta) = N(r; 0.1, 0.01^2) / (pi r)   where p_1 > 0.25 (a in (-pi/2, pi/2)),

    and 0 elsewhere (r < 0 has probability below 1e-22 and is ignored).

    Reference posterior, exact: draw p from its distribution, set ``|z_1| = p_1 - x_1`` (p is
    discarded when this is negative: no theta maps there), z_2 = x_2 - p_2, a sign of z_1 at
    random, theta = R^T z, and keep theta inside the prior box. For each sign the map p ->
    theta is a rotation of a translation (``|Jacobian| = 1``) and one-to-one onto the theta with
    that sign of z_1, so theta has density 1/2 p(p(theta)) = 1/2 p(x | theta) on the box: the
    prior is uniform, so that is the posterior. (sbibm uses the same construction without
    discarding p_1 < x_1.)"""

    name = "two-moons"
    title = "Two moons"
    theta_dim = x_dim = 2
    r_loc, r_scale, offset = 0.1, 0.01, 0.25
    reference_method = "exact: the simulator inverted (uniform prior), kept inside the box"

    def _sample_prior(self, n, rng):
        return rng.uniform(-1.0, 1.0, (n, 2))

    def _log_prior(self, theta):
        return box_log_prior(theta, -1.0, 1.0)

    def _p(self, n, rng) -> np.ndarray:
        a = rng.uniform(-math.pi / 2, math.pi / 2, n)
        r = self.r_loc + self.r_scale * rng.standard_normal(n)
        return np.stack([r * np.cos(a) + self.offset, r * np.sin(a)], axis=1)

    @staticmethod
    def _z(theta):
        return (theta[:, 0] + theta[:, 1]) / math.sqrt(2), (theta[:, 1] - theta[:, 0]) / math.sqrt(
            2
        )

    def _simulate(self, theta, rng):
        z1, z2 = self._z(theta)
        return self._p(len(theta), rng) + np.stack([-np.abs(z1), z2], axis=1)

    def _log_likelihood(self, theta, x):
        z1, z2 = self._z(theta)
        u, v = x[0] + np.abs(z1) - self.offset, x[1] - z2
        r = np.hypot(u, v)
        with np.errstate(divide="ignore"):
            log_l = (
                -0.5 * ((r - self.r_loc) / self.r_scale) ** 2
                - 0.5 * LOG_2PI
                - math.log(self.r_scale)
                - math.log(math.pi)
                - np.log(r)
            )
        return np.where(u > 0, log_l, -np.inf)

    def _reference_posterior(self, x, n, rng):
        def draw(m, rng):
            p = self._p(m, rng)
            abs_z1 = p[:, 0] - x[0]
            z1 = np.where(rng.random(m) < 0.5, abs_z1, -abs_z1)
            z2 = x[1] - p[:, 1]
            theta = np.stack([z1 - z2, z1 + z2], axis=1) / math.sqrt(2)
            return np.where((abs_z1 >= 0)[:, None], theta, np.nan)  # nan: outside, rejected

        samples, diagnostics = reject_to_prior(self, draw, n, rng)
        return Reference(samples, self.reference_method, diagnostics)


TASKS.add("two-moons", TwoMoons())


# ---- gaussian-mixture ---------------------------------------------------------------------


class GaussianMixture(Task):
    """Gaussian mixture (Lueckmann et al. 2021, T.2; Sisson et al. 2007), D = 2:

        theta ~ U([-10, 10]^2),   x | theta ~ 1/2 N(theta, I) + 1/2 N(theta, 0.01 I)

    The likelihood is symmetric in x and theta, so the posterior is the same mixture centred
    on x, truncated to the prior box. Reference posterior, exact: draw from the mixture
    around x and keep the draws inside the box (rejection)."""

    name = "gaussian-mixture"
    title = "Gaussian mixture"
    theta_dim = x_dim = 2
    bound = 10.0
    weights = (0.5, 0.5)
    variances = (1.0, 0.01)
    reference_method = "exact: the mixture around x, truncated to the prior box by rejection"

    def _sample_prior(self, n, rng):
        return rng.uniform(-self.bound, self.bound, (n, 2))

    def _log_prior(self, theta):
        return box_log_prior(theta, -self.bound, self.bound)

    def _mixture_draw(self, centre, rng):
        k = rng.choice(len(self.weights), size=len(centre), p=self.weights)
        scale = np.sqrt(np.asarray(self.variances))[k][:, None]
        return centre + scale * rng.standard_normal(centre.shape)

    def _simulate(self, theta, rng):
        return self._mixture_draw(theta, rng)

    def _log_likelihood(self, theta, x):
        parts = [
            math.log(w) + _diag_normal_log_prob(x[None, :], theta, v)
            for w, v in zip(self.weights, self.variances)
        ]
        return np.logaddexp(*parts)

    def _reference_posterior(self, x, n, rng):
        def draw(m, rng):
            return self._mixture_draw(np.broadcast_to(x, (m, 2)), rng)

        samples, diagnostics = reject_to_prior(self, draw, n, rng)
        return Reference(samples, self.reference_method, diagnostics)


TASKS.add("gaussian-mixture", GaussianMixture())


# ---- slcp ---------------------------------------------------------------------------------


class Slcp(Task):
    """SLCP, simple likelihood and complex posterior (Lueckmann et al. 2021, T.3;
    Papamakarios et al. 2019, arXiv:1805.07226):

        theta ~ U([-3, 3]^5),   m = (theta_1, theta_2),   s_1 = theta_3^2,   s_2 = theta_4^2,
        rho = tanh(theta_5),    S = [[s_1^2, rho s_1 s_2], [rho s_1 s_2, s_2^2]] + 1e-6 I,
        x = (x_1, ..., x_4) with x_j ~ N(m, S) iid, flattened to 8 numbers (x_j = entries
        2j-1, 2j)

    (the 1e-6 keeps S positive definite where s_1 or s_2 is 0, as sbibm's simulator does).
    The likelihood is Gaussian, in closed form; it depends on theta_3 and theta_4 only through
    their squares, and the prior is symmetric, so the posterior has (at least) four modes,
    mirror images under theta_3 -> -theta_3 and theta_4 -> -theta_4.

    Reference posterior: sequential Monte Carlo with likelihood tempering (``nfzoo.npe.smc``)
    on the folded parameter ``(|theta_3|, |theta_4|)``, where the posterior has one quarter of
    the modes, then independent random signs for theta_3 and theta_4 (exact by the symmetry).
    The samples come from ``runs`` independent SMC runs; their agreement is reported as the
    R-hat of each coordinate between runs and as the range of their log evidence estimates."""

    name = "slcp"
    title = "SLCP"
    theta_dim, x_dim = 5, 8
    bound = 3.0
    jitter = 1e-6
    reference_method = (
        "SMC with likelihood tempering on the folded parameter (|theta_3|, |theta_4|), random "
        "signs, 4 independent runs (R-hat and log-evidence range between runs)"
    )
    #: independent SMC runs whose samples make up the reference (R-hat is taken between them)
    runs = 4
    #: small tempering steps and many moves: some observations (e.g. 3, where s_1 ~ 0.01 and
    #: rho ~ 0.99) have very narrow, curved posteriors, on which the defaults (ESS 1/2, 5
    #: moves) left runs disagreeing in their log evidence by ~1 nat
    smc_options: ClassVar[dict] = {"ess_fraction": 0.9, "moves": 50}

    def _sample_prior(self, n, rng):
        return rng.uniform(-self.bound, self.bound, (n, self.theta_dim))

    def _log_prior(self, theta):
        return box_log_prior(theta, -self.bound, self.bound)

    def _covariance(self, theta):
        s1, s2, rho = theta[:, 2] ** 2, theta[:, 3] ** 2, np.tanh(theta[:, 4])
        return s1**2 + self.jitter, rho * s1 * s2, s2**2 + self.jitter

    def _simulate(self, theta, rng):
        a, b, c = self._covariance(theta)
        # Cholesky factor [[l11, 0], [l21, l22]] of [[a, b], [b, c]]
        l11 = np.sqrt(a)
        l21 = b / l11
        l22 = np.sqrt(np.maximum(c - l21**2, 0.0))
        e = rng.standard_normal((len(theta), 4, 2))
        x1 = theta[:, None, 0] + l11[:, None] * e[..., 0]
        x2 = theta[:, None, 1] + l21[:, None] * e[..., 0] + l22[:, None] * e[..., 1]
        return np.stack([x1, x2], axis=-1).reshape(len(theta), 8)

    def _log_likelihood(self, theta, x):
        a, b, c = (v[:, None] for v in self._covariance(theta))
        det = a * c - b * b
        points = x.reshape(4, 2)
        d1 = points[None, :, 0] - theta[:, 0, None]
        d2 = points[None, :, 1] - theta[:, 1, None]
        quad = (c * d1 * d1 - 2 * b * d1 * d2 + a * d2 * d2) / det
        return (-LOG_2PI - 0.5 * np.log(det) - 0.5 * quad).sum(axis=1)

    def _reference_posterior(self, x, n, rng):
        from nfzoo.npe.smc import rhat, smc_sample

        def fold(theta):
            return np.concatenate([theta[:, :2], np.abs(theta[:, 2:4]), theta[:, 4:]], axis=1)

        def log_prior(theta):  # the folded prior: uniform on [-3,3]^2 x [0,3]^2 x [-3,3]
            ok = (theta[:, 2:4] >= 0).all(axis=1)
            return np.where(ok, self._log_prior(theta), -np.inf)

        sizes = [n // self.runs + (k < n % self.runs) for k in range(self.runs)]
        runs, reports = [], []
        for size in sizes:
            samples, report = smc_sample(
                lambda t: self._log_likelihood(t, x),
                lambda m, r: fold(self._sample_prior(m, r)),
                log_prior,
                max(size, 2),
                rng,
                **self.smc_options,
            )
            runs.append(samples[:size])
            reports.append(report)
        folded = np.concatenate(runs)
        signs = np.where(rng.random((n, 2)) < 0.5, -1.0, 1.0)
        samples = folded.copy()
        samples[:, 2:4] *= signs
        m = min(sizes)
        r_hat = rhat(np.stack([r[:m] for r in runs]))
        evidence = [r["log_evidence"] for r in reports]
        diagnostics = {
            "runs": reports,
            "rhat": r_hat.tolist(),
            "max_rhat": float(r_hat.max()),
            # runs that found the same mass agree on log p(x): a second convergence check
            "log_evidence_range": float(max(evidence) - min(evidence)),
        }
        return Reference(samples[rng.permutation(n)], self.reference_method, diagnostics)


TASKS.add("slcp", Slcp())
