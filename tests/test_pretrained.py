"""The pretrained zoo: every card's figure is reproduced from the shipped weights, loading is
safe, save_pretrained round-trips atomically, and a loaded flow fine-tunes with fit."""

import functools
import json
import shutil

import numpy as np
import pytest

import nfzoo
from nfzoo import pretrained, targets, vae, vi
from nfzoo.pretrained import IntegrityError

ENTRIES = [e.name for e in nfzoo.list_pretrained()]


def entries_of(kind: str) -> list[str]:
    return [e.name for e in nfzoo.list_pretrained() if e.kind == kind]


VI_ARCHS = ("planar", "sylvester-orthogonal", "sylvester-householder", "sylvester-triangular")
EXPECTED = {
    *(f"{arch}-u{i}" for arch in VI_ARCHS for i in (1, 2, 3, 4)),
    *(f"vae-digits-{posterior}" for posterior in vae.POSTERIORS),
    "maf-moons",
    "realnvp-moons",
    "nice-moons",
    "iaf-moons",
    "glow1d-moons",
    "maf-circles",
    "realnvp-8gaussians",
    "glow1d-pinwheel",
    "realnvp-checkerboard",
    "realnvp-2spirals",
    "maf-digits",
    "glow-digits",
    "realnvp-digits",
}


def test_the_zoo_has_its_entries_within_budget():
    assert set(ENTRIES) >= EXPECTED
    total = sum(p.stat().st_size for p in pretrained.pretrained_dir().rglob("*") if p.is_file())
    assert total < 50e6


def test_every_entry_is_of_a_known_kind_with_its_headline_metric():
    for entry in nfzoo.list_pretrained():
        assert entry.kind in pretrained.HEADLINES
        label, value = entry.headline
        assert np.isfinite(value), (entry.name, label)


@pytest.mark.parametrize("name", entries_of("density"))
def test_card_metric_is_reproduced_from_the_shipped_weights(name):
    entry = nfzoo.pretrained_entry(name)
    config = json.loads((entry.path / "config.json").read_text())
    flow = nfzoo.load(name)
    dataset = config["dataset"]
    _, _, test = nfzoo.data.load_dataset(dataset)
    if dataset["name"] == "digits-images":  # counts: bits/dim over fixed dequantizations
        bpd = nfzoo.data.bits_per_dim(
            flow, test, 17, draws=dataset["eval_draws"], seed=dataset["eval_seed"]
        )
        np.testing.assert_allclose(bpd, config["metrics"]["test_bits_per_dim"], atol=1e-4)
        assert bpd < config["metrics"]["uniform_bits_per_dim"] - 1.0
        card = (entry.path / "card.md").read_text()
        assert f"**{config['metrics']['test_bits_per_dim']:.4f}**" in card
        nll = bpd * test[0].size * np.log(2.0)
    else:
        nll = float(-np.mean(np.concatenate([flow.log_prob(c) for c in np.array_split(test, 10)])))
    recorded = config["metrics"]["test_nll_nats"]
    assert entry.metrics["test_nll_nats"] == recorded
    np.testing.assert_allclose(nll, recorded, atol=1e-4, rtol=1e-6)
    assert f"{recorded:.4f} nats" in (entry.path / "card.md").read_text()
    assert nll < config["metrics"]["gaussian_test_nll_nats"]  # it learned something


@functools.cache
def _reference_log_z(target_name: str) -> float:
    return targets.reference_log_z(targets.get(target_name))


@pytest.mark.parametrize("name", entries_of("reverse-kl"))
def test_reverse_kl_card_is_reproduced_from_the_shipped_weights(name):
    entry = nfzoo.pretrained_entry(name)
    config = json.loads((entry.path / "config.json").read_text())
    flow = nfzoo.load(name)
    assert isinstance(flow, nfzoo.Flow)
    target = targets.get(config["target"]["name"])
    log_z = _reference_log_z(target.name)
    assert log_z == pytest.approx(config["target"]["log_z_reference"], abs=1e-9)
    m = config["metrics"]
    assert entry.metrics == m
    ev = config["evaluation"]
    d = vi.diagnostics(flow, target, num_samples=ev["num_samples"], seed=ev["seed"])
    np.testing.assert_allclose([d.elbo, d.log_z], [m["elbo"], m["log_z_is"]], atol=1e-4)
    np.testing.assert_allclose(d.ess, m["ess_fraction"], rtol=1e-3)
    assert m["kl_nats"] == pytest.approx(log_z - m["elbo"], abs=1e-12)
    # the ELBO is a lower bound of log Z: KL >= 0 up to its Monte-Carlo error
    assert log_z - d.elbo > -4 * d.elbo_se
    # training removed most of the KL of the initial flow
    assert m["kl_nats"] < 0.5 * m["initial_kl_nats"]
    assert f"**{m['kl_nats']:.4f} nats**" in (entry.path / "card.md").read_text()


@pytest.mark.parametrize("name", entries_of("flow-vae"))
def test_flow_vae_card_is_reproduced_from_the_shipped_weights(name):
    entry = nfzoo.pretrained_entry(name)
    config = json.loads((entry.path / "config.json").read_text())
    model = nfzoo.load(name)
    assert isinstance(model, vae.FlowVAE)
    assert model.posterior_name == config["architecture"]["options"]["posterior"]
    _, _, test = nfzoo.data.load_dataset(config["dataset"])
    ev, m = config["evaluation"], config["metrics"]
    assert entry.metrics == m
    iw_nll = model.importance_weighted_nll(test, ev["iw_samples"], seed=ev["iw_seed"]).mean()
    neg_elbo = -model.elbo(test, ev["elbo_samples"], seed=ev["elbo_seed"]).mean()
    np.testing.assert_allclose(iw_nll, m["test_iw_nll_nats"], atol=1e-3)
    np.testing.assert_allclose(neg_elbo, m["test_neg_elbo_nats"], atol=1e-3)
    assert iw_nll < neg_elbo  # L_k >= ELBO
    assert iw_nll < m["bernoulli_test_nll_nats"] - 5.0  # far better than independent pixels
    assert f"**{m['test_iw_nll_nats']:.4f} nats**" in (entry.path / "card.md").read_text()


def test_flow_vae_round_trips_through_save_pretrained(tmp_path):
    train, _, test = nfzoo.data.binarized_digits()
    model = vae.FlowVAE(posterior="sylvester-householder", hidden_units=[32], seed=0)
    model.compile(learning_rate=1e-3)
    model.fit(train, batch_size=100, epochs=1, verbose=0)
    folder = model.save_pretrained(tmp_path / "vae")
    loaded = nfzoo.load(folder)
    assert isinstance(loaded, vae.FlowVAE) and loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(
        loaded.elbo(test[:20], num_samples=8, seed=3), model.elbo(test[:20], num_samples=8, seed=3)
    )
    with pytest.raises(TypeError, match="writes a nfzoo Flow or FlowVAE; received"):
        pretrained.save_pretrained(model.flow, tmp_path / "posterior")


@pytest.fixture
def zoo_copy(tmp_path, monkeypatch):
    """A writable copy of the maf-moons entry and the index, as the registry folder."""
    root = tmp_path / "pretrained"
    root.mkdir()
    shutil.copytree(pretrained.pretrained_dir() / "maf-moons", root / "maf-moons")
    shutil.copy(pretrained.pretrained_dir() / "index.json", root / "index.json")
    monkeypatch.setenv("NFZOO_PRETRAINED_DIR", str(root))
    return root


def test_truncated_weights_are_refused(zoo_copy):
    weights = zoo_copy / "maf-moons" / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(IntegrityError, match="truncated or altered"):
        nfzoo.load("maf-moons")


def test_altered_config_is_refused(zoo_copy):
    config = zoo_copy / "maf-moons" / "config.json"
    config.write_text(config.read_text().replace('"maf_moons"', '"maf_moonz"'))
    with pytest.raises(IntegrityError, match="config.json does not match its recorded sha256"):
        nfzoo.load("maf-moons")


def test_unknown_names_suggest_the_closest():
    with pytest.raises(ValueError, match="Did you mean 'maf-moons'"):
        nfzoo.load("maf-moon")


def test_path_like_names_are_not_resolved_as_entries(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("maf-moons/../maf-digits", "../pretrained/maf-moons", "/maf-moons"):
        with pytest.raises(ValueError, match="neither a pretrained entry nor a folder"):
            nfzoo.load(name)


def test_save_pretrained_round_trip_and_atomicity(tmp_path, monkeypatch):
    flow = nfzoo.build("realnvp", 2, num_layers=2, hidden_units=[8])
    flow.fit(nfzoo.data.make_moons(256), batch_size=128, epochs=1, verbose=0)
    folder = flow.save_pretrained(tmp_path / "mine", metadata={"metrics": {"note": 1.0}})
    assert sorted(p.name for p in folder.iterdir()) == [
        "card.md",
        "config.json",
        "model.weights.h5",
    ]
    loaded = nfzoo.load(folder)
    x = nfzoo.data.make_moons(64, seed=5)
    np.testing.assert_array_equal(loaded.log_prob(x), flow.log_prob(x))
    with pytest.raises(ValueError, match="exists; pass overwrite=True"):
        flow.save_pretrained(folder)

    def broken(path):
        raise OSError("disk full")

    monkeypatch.setattr(flow, "save_weights", broken)
    with pytest.raises(OSError, match="disk full"):
        flow.save_pretrained(folder, overwrite=True)
    # the earlier contents survive and no temporary folder is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    np.testing.assert_array_equal(nfzoo.load(folder).log_prob(x), flow.log_prob(x))


def test_configs_naming_foreign_classes_are_refused(tmp_path):
    flow = nfzoo.build("nice", 2, num_layers=2, hidden_units=[8])
    folder = flow.save_pretrained(tmp_path / "f")
    config = json.loads((folder / "config.json").read_text())
    config["flow"]["layers"][1]["module"] = "os"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="outside nfzoo/Keras: os"):
        nfzoo.load(folder)


def test_configs_without_exactly_one_model_are_refused(tmp_path):
    flow = nfzoo.build("nice", 2, num_layers=2, hidden_units=[8])
    folder = flow.save_pretrained(tmp_path / "f")
    config = json.loads((folder / "config.json").read_text())
    for broken in ({k: v for k, v in config.items() if k != "flow"}, {**config, "flow_vae": {}}):
        (folder / "config.json").write_text(json.dumps(broken))
        with pytest.raises(ValueError, match="exactly one model config under one of"):
            nfzoo.load(folder)


def test_a_loaded_flow_fine_tunes_on_shifted_data():
    flow = nfzoo.load("maf-moons")
    shift = np.array([1.5, -1.0], np.float32)
    train = nfzoo.data.make_toy("moons", 4096, seed=10) + shift
    test = nfzoo.data.make_toy("moons", 2048, seed=11) + shift
    before = float(flow.evaluate(test, batch_size=512, verbose=0))
    flow.compile(learning_rate=1e-3)
    flow.fit(train, batch_size=256, epochs=5, verbose=0)  # 80 steps
    after = float(flow.evaluate(test, batch_size=512, verbose=0))
    assert after < before - 0.5, (before, after)
