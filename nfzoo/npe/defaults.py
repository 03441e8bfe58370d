"""The NPE constants that presets and kinds read without loading the library (no
TensorFlow): simulation budgets, default flow options, the training seed offset."""

from __future__ import annotations

__all__ = ["BUDGETS", "NPE_DEFAULTS", "TRAINING_SEED"]

#: the simulation budgets of the benchmark
BUDGETS = (1_000, 10_000, 100_000)
#: architecture options of ``train_npe`` (sbi's NPE defaults: 5 transforms of 50 hidden units)
NPE_DEFAULTS = {
    "nsf": {"num_layers": 5, "hidden_units": (50, 50), "bins": 10},
    "maf": {"num_layers": 5, "hidden_units": (50, 50)},
}
#: training seeds are offset so that they never coincide with an observation's seed
TRAINING_SEED = 10_000
