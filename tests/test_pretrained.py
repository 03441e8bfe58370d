"""The pretrained zoo: every card's figure is reproduced from the shipped weights, loading is
safe, save_pretrained round-trips atomically, and a loaded flow fine-tunes with fit."""

import json
import shutil

import numpy as np
import pytest

import nfzoo
from nfzoo import pretrained
from nfzoo.pretrained import IntegrityError

ENTRIES = [e.name for e in nfzoo.list_pretrained()]
EXPECTED = {
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


@pytest.mark.parametrize("name", ENTRIES)
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
