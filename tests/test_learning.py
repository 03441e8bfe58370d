"""Real training runs: flows learn two moons (a short run in the default suite; the full
per-builder comparison is marked slow)."""

import numpy as np
import pytest

import nfzoo


def _moons_split():
    x = nfzoo.data.make_moons(3000, seed=0)
    return nfzoo.data.split(x)


@pytest.mark.parametrize("arch", ["maf", "realnvp"])
def test_flow_beats_the_best_gaussian_on_two_moons(arch):
    train, _, test = _moons_split()
    gaussian = nfzoo.data.gaussian_baseline_nll(train, test)
    flow = nfzoo.build(arch, 2, seed=0)
    flow.compile(learning_rate=2e-3)
    flow.fit(train, batch_size=256, epochs=30, verbose=0)  # 300 steps
    nll = float(flow.evaluate(test, batch_size=300, verbose=0))
    # The moons are far from Gaussian: a flow that learned anything is well below it.
    assert nll < gaussian - 0.3, (nll, gaussian)


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch", [a for a in nfzoo.list_architectures(event_rank=1) if nfzoo.build(a, 2).has_inverse]
)
def test_every_invertible_builder_learns_two_moons(arch):
    train, _, test = _moons_split()
    gaussian = nfzoo.data.gaussian_baseline_nll(train, test)
    flow = nfzoo.build(arch, 2, seed=0)
    flow.compile(learning_rate=2e-3)
    flow.fit(train, batch_size=256, epochs=100, verbose=0)
    nll = float(flow.evaluate(test, batch_size=300, verbose=0))
    assert np.isfinite(nll) and nll < gaussian, (nll, gaussian)
