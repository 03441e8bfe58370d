"""Sequential Monte Carlo with likelihood tempering, for reference posteriors, and R-hat.

The sampler moves N particles from the prior to the posterior through the tempered targets

    pi_b(theta) ~ p(theta) p(x | theta)^b,   0 = b_0 < b_1 < ... < b_T = 1

(Del Moral, Doucet & Jasra 2006, "Sequential Monte Carlo samplers"; adaptive tempering as
in Jasra et al. 2011). Each step picks the next b so that the effective sample size of the
incremental weights w_i = p(x | theta_i)^(b_k - b_{k-1}) is ``ess_fraction`` N (bisection),
resamples the particles by those weights (systematic resampling) and moves each with
random-walk Metropolis steps that leave pi_{b_k} invariant: proposals theta + s L e, e ~ N(0,
I), L L^T the particles' covariance, s adapted towards an acceptance rate of about 0.3,
repeated until the particles have made ``moves`` accepted moves on average. Resampling
keeps the mass of separated modes (which the moves need not cross); the moves restore the
particles' diversity. The log evidence log p(x) = sum_k log mean_i w_i is a by-product.

Validity is checked in tests against exact posteriors (gaussian-linear, two-moons,
gaussian-mixture) with C2ST and moments, and for SLCP by R-hat between independent runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["rhat", "smc_sample"]


def smc_sample(
    log_likelihood: Callable[[np.ndarray], np.ndarray],
    sample_prior: Callable[[int, np.random.Generator], np.ndarray],
    log_prior: Callable[[np.ndarray], np.ndarray],
    n: int,
    rng: np.random.Generator,
    *,
    ess_fraction: float = 0.5,
    moves: float = 5.0,
    max_sweeps: int = 500,
) -> tuple[np.ndarray, dict]:
    """n approximate posterior samples [n, D] and a report (tempering steps, log evidence,
    acceptance rates, fraction of distinct particles).

    Args:
      log_likelihood: theta [m, D] -> log p(x | theta) [m] (-inf allowed).
      sample_prior: (m, rng) -> theta [m, D].
      log_prior: theta [m, D] -> log p(theta) [m] (-inf outside the support).
      ess_fraction: effective sample size kept at each tempering step, as a fraction of n.
      moves: average accepted Metropolis moves per particle after each resampling.
      max_sweeps: cap on Metropolis sweeps per step.
    """
    if not 0.0 < ess_fraction < 1.0:
        raise ValueError(f"ess_fraction must be in (0, 1); received {ess_fraction!r}.")
    theta = np.asarray(sample_prior(n, rng), dtype=np.float64)
    lp = log_prior(theta)
    ll = np.where(np.isfinite(lp), log_likelihood(theta), -np.inf)
    beta, log_evidence, scale = 0.0, 0.0, 2.38 / math.sqrt(theta.shape[1])
    steps, acceptance, sweeps = [], [], []
    while beta < 1.0:
        new_beta = _next_beta(ll, beta, ess_fraction * n)
        log_w = _incremental(ll, new_beta - beta)
        top = log_w.max()
        if not np.isfinite(top):
            raise RuntimeError("SMC: every particle has zero likelihood; use more particles.")
        w = np.exp(log_w - top)
        log_evidence += top + math.log(w.mean())
        idx = _systematic(w / w.sum(), rng)
        theta, lp, ll, beta = theta[idx], lp[idx], ll[idx], new_beta
        theta, lp, ll, scale, rate, count = _move(
            theta, lp, ll, beta, scale, log_prior, log_likelihood, rng, moves, max_sweeps
        )
        steps.append(beta)
        acceptance.append(rate)
        sweeps.append(count)
    distinct = len(np.unique(theta, axis=0)) / n
    report = {
        "particles": n,
        "tempering_steps": len(steps),
        "log_evidence": float(log_evidence),
        "mean_acceptance": float(np.mean(acceptance)),
        "min_acceptance": float(np.min(acceptance)),
        "sweeps": int(np.sum(sweeps)),
        "distinct_fraction": distinct,
    }
    return theta, report


def _incremental(ll: np.ndarray, delta: float) -> np.ndarray:
    # p(x | theta)^delta with p = 0 (ll = -inf) giving weight 0, never 0 * inf
    return np.where(np.isfinite(ll), delta * np.where(np.isfinite(ll), ll, 0.0), -np.inf)


def _ess(log_w: np.ndarray) -> float:
    top = log_w.max()
    if not np.isfinite(top):
        return 0.0
    w = np.exp(log_w - top)
    return float(w.sum() ** 2 / (w * w).sum())


def _next_beta(ll: np.ndarray, beta: float, target: float) -> float:
    """The largest b in (beta, 1] whose incremental weights keep ESS >= target (bisection;
    the ESS falls as b grows)."""
    if _ess(_incremental(ll, 1.0 - beta)) >= target:
        return 1.0
    lo, hi = beta, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _ess(_incremental(ll, mid - beta)) >= target:
            lo = mid
        else:
            hi = mid
    # at least a tiny step, so that a likelihood of huge dynamic range still progresses
    return max(lo, beta + 1e-12)


def _systematic(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(p)
    positions = (rng.random() + np.arange(n)) / n
    return np.minimum(np.searchsorted(np.cumsum(p), positions), n - 1)


def _move(theta, lp, ll, beta, scale, log_prior, log_likelihood, rng, moves, max_sweeps):
    """Random-walk Metropolis sweeps on pi_beta until ``moves`` accepted moves per particle
    on average; returns the particles, the adapted scale, the mean acceptance rate and the
    number of sweeps."""
    n, d = theta.shape
    cov = np.cov(theta, rowvar=False).reshape(d, d)
    chol = np.linalg.cholesky(cov + 1e-12 * np.eye(d) * max(np.trace(cov) / d, 1e-300))
    accepted_total = 0.0
    rates: list[float] = []
    while len(rates) < max_sweeps:
        proposal = theta + scale * rng.standard_normal((n, d)) @ chol.T
        lp_new = log_prior(proposal)
        ll_new = np.full(n, -np.inf)
        ok = np.isfinite(lp_new)
        if ok.any():
            ll_new[ok] = log_likelihood(proposal[ok])
        log_ratio = _tempered(lp_new, ll_new, beta) - _tempered(lp, ll, beta)
        accept = np.log(rng.random(n)) < log_ratio
        theta = np.where(accept[:, None], proposal, theta)
        lp, ll = np.where(accept, lp_new, lp), np.where(accept, ll_new, ll)
        rate = float(accept.mean())
        rates.append(rate)
        accepted_total += rate
        # Robbins-Monro-like adaptation towards ~0.3 acceptance (fine within a step: the
        # kernel stays pi_beta-invariant for each fixed scale, and the scale only follows the
        # whole population's acceptance)
        scale *= math.exp(rate - 0.3)
        if accepted_total >= moves:
            break
    return theta, lp, ll, scale, float(np.mean(rates)), len(rates)


def _tempered(lp, ll, beta):
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(lp) & np.isfinite(ll), lp + beta * ll, -np.inf)


def rhat(chains: np.ndarray) -> np.ndarray:
    """Gelman-Rubin potential scale reduction per coordinate of ``chains`` [m, n, D] (m runs
    of n draws): sqrt(((n - 1) / n W + B / n) / W), W the mean within-run variance, B / n the
    variance of the run means (Gelman & Rubin 1992). About 1 when the runs agree; sbibm-style
    checks ask for < 1.01 to 1.05."""
    chains = np.asarray(chains, dtype=np.float64)
    if chains.ndim != 3 or chains.shape[0] < 2 or chains.shape[1] < 2:
        raise ValueError(
            "rhat takes chains of shape [runs >= 2, draws >= 2, D]; received shape "
            f"{list(chains.shape)}."
        )
    n = chains.shape[1]
    within = chains.var(axis=1, ddof=1).mean(axis=0)
    between_over_n = chains.mean(axis=1).var(axis=0, ddof=1)
    return np.sqrt(((n - 1) / n * within + between_over_n) / within)
