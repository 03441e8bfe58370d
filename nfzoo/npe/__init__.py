"""Amortized posterior estimation (neural posterior estimation, NPE) with conditional flows.

    from nfzoo import npe
    task = npe.get_task("two-moons")              # prior, simulator, likelihood, observations
    flow = npe.train_npe(task, 10_000, arch="nsf")  # q(theta | x) by flow.fit(theta, x)
    theta, _ = npe.sample_posterior(flow, task, task.observation(1), 1000)
    report = npe.evaluate_npe(flow, task)           # C2ST on the 10 fixed observations

Tasks (``tasks``), reference posteriors (exact, or SMC: ``smc``), the C2ST metric (``c2st``)
and training (``training``) follow Lueckmann et al. (2021), "Benchmarking Simulation-Based
Inference", arXiv:2101.04653.
"""

import importlib

# eager, and light (scikit-learn is imported inside it): a function named like its module
# must be bound here, or importing the submodule would rebind ``npe.c2st`` to the module
from nfzoo.npe.c2st import c2st as c2st  # re-exported

#: public names -> the submodule defining them, imported on first use: the tasks are numpy
#: alone, so listing or describing the npe entries needs neither TensorFlow nor scikit-learn
_NAMES = {
    "rhat": "smc",
    "smc_sample": "smc",
    **dict.fromkeys(("BUDGETS", "NPE_DEFAULTS"), "defaults"),
    **dict.fromkeys(("TASKS", "Reference", "Task", "get_task", "list_tasks"), "tasks"),
    **dict.fromkeys(
        (
            "TrainingRecord",
            "build_npe_flow",
            "evaluate_npe",
            "reference_posterior",
            "sample_in_support",
            "sample_posterior",
            "train_and_evaluate",
            "train_npe",
        ),
        "training",
    ),
}

__all__ = sorted(["c2st", *_NAMES])  # derived: one list of the public names


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'nfzoo.npe' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"nfzoo.npe.{_NAMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
