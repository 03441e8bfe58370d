"""C2ST: the classifier two-sample test accuracy (Lopez-Paz & Oquab 2017, arXiv:1610.06545),
as Lueckmann et al. (2021, arXiv:2101.04653, section 3) use it to score posterior samples.

A classifier learns to tell samples P (the reference) from samples Q (the approximation);
its accuracy on held-out points is the score: 0.5 when it cannot tell them apart (P = Q), 1.0
when it always can. As in that paper (and sbibm): scikit-learn's MLPClassifier, two hidden
layers of 10 D ReLU units each, Adam, up to 10,000 iterations; both samples z-scored with the
reference's mean and standard deviation; accuracy averaged over 5-fold cross-validation
(stratified here: every fold holds the two samples in their proportions).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["c2st"]


def c2st(
    reference: npt.ArrayLike,
    samples: npt.ArrayLike,
    *,
    seed: int = 1,
    folds: int = 5,
    z_score: bool = True,
    max_iter: int = 10_000,
    n_jobs: int | None = None,
) -> float:
    """Cross-validated accuracy of an MLP classifier telling ``reference`` [n, D] from
    ``samples`` [m, D]: about 0.5 for samples of the same distribution, up to 1.0.

    Args:
      seed: seed of the folds and of the classifier's initialisation.
      folds: cross-validation folds.
      z_score: standardise both samples with the reference's mean and standard deviation.
      max_iter: the classifier's epoch limit (it stops earlier once its loss stalls).
      n_jobs: folds fitted in parallel (scikit-learn's ``cross_val_score``).
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neural_network import MLPClassifier

    p, q = _two_samples(reference, samples, folds)
    if z_score:
        mean, std = p.mean(axis=0), p.std(axis=0)
        std = np.where(std > 0, std, 1.0)  # a constant coordinate stays as it is
        p, q = (p - mean) / std, (q - mean) / std
    dim = p.shape[1]
    classifier = MLPClassifier(
        hidden_layer_sizes=(10 * dim, 10 * dim),
        activation="relu",
        solver="adam",
        max_iter=max_iter,
        random_state=seed,
    )
    data = np.concatenate([p, q])
    labels = np.concatenate([np.zeros(len(p)), np.ones(len(q))])
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(classifier, data, labels, cv=cv, scoring="accuracy", n_jobs=n_jobs)
    return float(np.mean(scores))


def _two_samples(
    reference: npt.ArrayLike, samples: npt.ArrayLike, folds: int
) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"c2st needs folds >= 2; received {folds!r}.")
    arrays = []
    for what, a in (("reference", reference), ("samples", samples)):
        a = np.asarray(a, dtype=np.float64)
        if a.ndim != 2:
            raise ValueError(f"c2st takes {what} of shape [n, D]; received shape {list(a.shape)}.")
        if len(a) < folds:
            raise ValueError(f"c2st needs at least folds={folds} {what} rows; received {len(a)}.")
        if not np.isfinite(a).all():
            raise ValueError(f"c2st: {what} has {int((~np.isfinite(a)).sum())} non-finite values.")
        arrays.append(a)
    p, q = arrays
    if p.shape[1] != q.shape[1]:
        raise ValueError(
            f"c2st compares samples of one dimension D: reference has D={p.shape[1]}, samples "
            f"D={q.shape[1]}."
        )
    return p, q
