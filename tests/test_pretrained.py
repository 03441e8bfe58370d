"""The pretrained zoo: every entry is declared by a preset and named after its architecture,
its record agrees with its preset, every card's figure is reproduced from the shipped weights
(computed here independently of the kinds' own evaluation), names and folders resolve by one
documented rule, loading is safe, save_pretrained round-trips atomically, and a loaded flow
fine-tunes with fit."""

import functools
import json
import re
import shutil
import warnings

import numpy as np
import pytest

import nfzoo
from nfzoo import kinds, presets, pretrained, targets, vae, vi
from nfzoo.kinds import KINDS
from nfzoo.pretrained import AmbiguousNameWarning, IntegrityError

ENTRIES = [e.name for e in nfzoo.list_pretrained()]


def entries_of(kind: str) -> list[str]:
    return [e.name for e in nfzoo.list_pretrained(kind=kind)]


VI_ARCHS = ("planar", "sylvester-orthogonal", "sylvester-householder", "sylvester-triangular")
#: the entries' names before names were derived from architectures, and the entries they
#: name now
RENAMED = {
    "glow1d-moons": "glow-1d-moons",
    "glow1d-pinwheel": "glow-1d-pinwheel",
    "realnvp-digits": "realnvp-image-digits",
    **{f"vae-digits-{p}": f"flow-vae-{p}-digits" for p in vae.POSTERIORS},
}
EXPECTED = {
    *(f"{arch}-u{i}" for arch in VI_ARCHS for i in (1, 2, 3, 4)),
    *RENAMED.values(),
    "maf-moons",
    "realnvp-moons",
    "nice-moons",
    "iaf-moons",
    "maf-circles",
    "realnvp-8gaussians",
    "realnvp-checkerboard",
    "realnvp-2spirals",
    "maf-digits",
    "glow-digits",
    *(f"npe-{task}" for task in ("gaussian-linear", "two-moons", "gaussian-mixture", "slcp")),
}


def test_the_zoo_has_its_entries_within_budget():
    assert set(ENTRIES) == EXPECTED
    total = sum(p.stat().st_size for p in pretrained.pretrained_dir().rglob("*") if p.is_file())
    assert total < 50e6


def test_every_preset_ships_and_every_entry_has_a_preset():
    assert set(ENTRIES) == set(presets.PRESETS.names())
    index = json.loads((pretrained.pretrained_dir() / "index.json").read_text())
    assert set(index) == set(ENTRIES)
    folders = {p.name for p in pretrained.pretrained_dir().iterdir() if p.is_dir()}
    assert folders == set(ENTRIES)


def test_names_start_with_a_registered_architecture_and_old_names_are_aliases():
    for entry in nfzoo.list_pretrained():
        kind = KINDS.get(entry.kind)
        assert entry.architecture in kind.architectures(), entry.name
        assert entry.name.startswith(entry.architecture + "-"), entry.name
        # nothing but the data (and a variant) follows the architecture
        assert entry.name.endswith("-" + entry.preset.data), entry.name
    for old, new in RENAMED.items():
        assert nfzoo.pretrained_entry(old).name == new
        assert old in nfzoo.pretrained_entry(new).aliases
    flow = nfzoo.load("glow1d-moons")
    x = nfzoo.data.make_moons(16, seed=3)
    np.testing.assert_array_equal(flow.log_prob(x), nfzoo.load("glow-1d-moons").log_prob(x))


def test_every_record_agrees_with_its_preset():
    """A preset edited without retraining its entry would make the card describe a recipe the
    weights did not come from."""
    for entry in nfzoo.list_pretrained():
        config = json.loads((entry.path / "config.json").read_text())
        assert set(entry.preset.declaration()) <= set(config), entry.name
        assert kinds.stale_declaration(entry.preset, config) == [], entry.name
        assert config["metrics"] == entry.metrics, entry.name
        assert config["command"] == f"python tools/train_zoo.py {entry.name}"
        model_key = KINDS.get(entry.kind).model_key
        assert config[model_key]["name"] == entry.name.replace("-", "_")
        assert entry.preset.event_shape == tuple(config["architecture"]["event_shape"])


def test_every_entry_is_of_a_known_kind_with_its_headline_metric():
    for entry in nfzoo.list_pretrained():
        kind = KINDS.get(entry.kind)
        label, value = entry.headline
        assert label == kind.headline.label and np.isfinite(value), (entry.name, label)
        assert f"{value:.4f}" in (entry.path / "card.md").read_text(), entry.name


def test_list_pretrained_filters_by_pattern_architecture_and_kind():
    assert {e.name for e in nfzoo.list_pretrained("*-u1")} == {f"{a}-u1" for a in VI_ARCHS}
    assert {e.name for e in nfzoo.list_pretrained("glow1d-*")} == {
        "glow-1d-moons",
        "glow-1d-pinwheel",
    }  # former names match too
    realnvp = {e.name for e in nfzoo.list_pretrained(architecture="realnvp")}
    assert realnvp == {
        "realnvp-moons",
        "realnvp-8gaussians",
        "realnvp-checkerboard",
        "realnvp-2spirals",
    }
    assert [e.name for e in nfzoo.list_pretrained(architecture="realnvp-image")] == [
        "realnvp-image-digits"
    ]
    vaes = nfzoo.list_pretrained(kind="flow-vae")
    assert len(vaes) == len(vae.POSTERIORS) and {e.architecture for e in vaes} == {"flow-vae"}
    assert nfzoo.list_pretrained("maf-*", kind="reverse-kl") == []
    assert nfzoo.list_pretrained(architecture="radial") == []  # registered, nothing shipped
    with pytest.raises(ValueError, match="Unknown kind of pretrained entry 'vae'"):
        nfzoo.list_pretrained(kind="vae")
    with pytest.raises(ValueError, match="Unknown architecture 'glow1d'; known: .*glow-1d"):
        nfzoo.list_pretrained(architecture="glow1d")
    with pytest.raises(ValueError, match="pattern must be a glob string"):
        nfzoo.list_pretrained(["maf-*"])


@pytest.mark.parametrize("name", entries_of("density"))
def test_card_metric_is_reproduced_from_the_shipped_weights(name):
    entry = nfzoo.pretrained_entry(name)
    config = json.loads((entry.path / "config.json").read_text())
    flow = nfzoo.load(name)
    dataset = config["dataset"]
    _, _, test = nfzoo.data.load_dataset(dataset)
    card = (entry.path / "card.md").read_text()
    if dataset["name"] == "digits-images":  # counts: bits/dim over fixed dequantizations
        ev = config["evaluation"]
        bpd = nfzoo.data.bits_per_dim(
            flow, test, 17, draws=ev["dequantization_draws"], seed=ev["seed"]
        )
        np.testing.assert_allclose(bpd, config["metrics"]["test_bits_per_dim"], atol=1e-4)
        assert bpd < config["metrics"]["uniform_bits_per_dim"] - 1.0
        assert f"**{config['metrics']['test_bits_per_dim']:.4f}**" in card
        nll = bpd * test[0].size * np.log(2.0)
    else:
        nll = float(-np.mean(np.concatenate([flow.log_prob(c) for c in np.array_split(test, 10)])))
    recorded = config["metrics"]["test_nll_nats"]
    assert entry.metrics["test_nll_nats"] == recorded
    np.testing.assert_allclose(nll, recorded, atol=1e-4, rtol=1e-6)
    assert f"**{recorded:.4f} nats**" in card
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
    target = targets.get(config["dataset"]["target"])
    log_z = _reference_log_z(target.name)
    assert log_z == pytest.approx(config["metrics"]["log_z_reference"], abs=1e-9)
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


def test_verify_recomputes_the_checked_metrics_and_reports_a_mismatch(zoo_copy):
    checks = pretrained.verify("maf-moons")
    assert [c.metric.key for c in checks] == ["test_nll_nats"] and all(c.ok for c in checks)
    index = json.loads((zoo_copy / "index.json").read_text())
    index["maf-moons"]["metrics"]["test_nll_nats"] += 0.01  # a card that lies
    (zoo_copy / "index.json").write_text(json.dumps(index))
    (check,) = pretrained.verify("maf-moons")
    # the recomputation sums in float64; the recorded means were float32 sums (8th digit)
    assert not check.ok and check.recorded - check.recomputed == pytest.approx(0.01, abs=1e-6)


def test_a_flow_vae_draws_digits_through_its_decoder():
    model = nfzoo.load("flow-vae-sylvester-householder-digits")
    x = model.sample(2000, seed=4).numpy()
    assert x.shape == (2000, 64) and set(np.unique(x)) == {0.0, 1.0}
    np.testing.assert_array_equal(model.sample(5, seed=4), x[:5])  # stateless, seeded
    assert not np.array_equal(model.sample(5, seed=5), x[:5])
    means = model.sample(2000, seed=4, probabilities=True).numpy()
    assert means.min() >= 0.0 and means.max() <= 1.0
    # samples from p(x) match the data's pixel frequencies; an untrained decoder gives 1/2
    train, _, _ = nfzoo.data.binarized_digits()
    assert np.mean(np.abs(x.mean(axis=0) - train.mean(axis=0))) < 0.05
    with pytest.raises(ValueError, match="n must be a positive number of samples; received 0"):
        model.sample(0)


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


def test_a_folder_here_named_like_an_entry_wins_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = nfzoo.build("realnvp", 2, num_layers=2, hidden_units=[8], seed=3)
    mine.save_pretrained("maf-moons")  # what `nfzoo train ... --out maf-moons` writes
    x = nfzoo.data.make_moons(32, seed=1)
    with pytest.warns(AmbiguousNameWarning, match="names both the folder ./maf-moons"):
        loaded = nfzoo.load("maf-moons")
    np.testing.assert_array_equal(loaded.log_prob(x), mine.log_prob(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit choice is not ambiguous
        np.testing.assert_array_equal(nfzoo.load("./maf-moons").log_prob(x), mine.log_prob(x))
        entry = nfzoo.load("maf-moons", source="pretrained")
        folder = nfzoo.load(tmp_path / "maf-moons")  # a Path is always a folder
    assert type(entry.flow_layers[0]).__name__ == "MaskedAutoregressive"
    np.testing.assert_array_equal(folder.log_prob(x), mine.log_prob(x))
    # a folder without config.json is not a saved model: the name is the entry's
    (tmp_path / "maf-circles").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert nfzoo.load("maf-circles").name == "maf_circles"
    with pytest.raises(ValueError, match="source must be one of"):
        nfzoo.load("maf-moons", source="hub")
    with pytest.raises(ValueError, match="expected the name of a pretrained entry or the path"):
        nfzoo.load(3)


def test_a_missing_zoo_is_an_error_not_an_empty_list(tmp_path, monkeypatch):
    monkeypatch.setenv("NFZOO_PRETRAINED_DIR", str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="pretrained entries are missing"):
        nfzoo.list_pretrained()
    with pytest.raises(FileNotFoundError, match="pretrained entries are missing"):
        nfzoo.load("maf-moons")
    # a user's own folder still loads
    nfzoo.build("nice", 2, num_layers=2, hidden_units=[8]).save_pretrained(tmp_path / "f")
    monkeypatch.chdir(tmp_path)
    assert isinstance(nfzoo.load("f"), nfzoo.Flow)


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


def saved_folder(tmp_path):
    flow = nfzoo.build("nice", 2, num_layers=2, hidden_units=[8])
    folder = flow.save_pretrained(tmp_path / "f")
    return folder, json.loads((folder / "config.json").read_text())


def test_config_sizes_are_checked_against_the_weights_before_anything_is_built(
    tmp_path, monkeypatch
):
    """A 3 kB config.json asking for hidden_units [60000, 60000] made load allocate 13 GiB
    per layer before any digest or shape was checked."""
    folder, config = saved_folder(tmp_path)

    def built(*args, **kwargs):
        raise AssertionError("a model was built from a config that does not fit its weights")

    monkeypatch.setattr(nfzoo.Flow, "from_config", built)
    layers = config["flow"]["layers"]
    cases = [
        (
            lambda c: [la["config"].update(hidden_units=[60000, 60000]) for la in layers],
            "gives hidden_units 60000, but no array in model.weights.h5 has a dimension of 60000",
        ),
        (
            lambda c: c["flow"].update(event_shape=[10**7]),
            "gives event_shape 10000000, larger than any dimension stored",
        ),
        (
            lambda c: c["flow"].update(layers=layers * 500),
            f"lists {500 * len(layers)} layers; model.weights.h5 holds weights for {len(layers)}",
        ),
        (  # found by tests/test_fuzz.py: a float dimension passed the checks, 5 GB and more
            lambda c: layers[-1]["build_config"].update(input_shape=[1139422852.0]),
            "gives input_shape [1139422852.0]: a shape is a list of integers",
        ),
        (
            lambda c: layers[-1]["build_config"].update(input_shape=[None, "2"]),
            "a shape is a list of integers",
        ),
    ]
    for change, message in cases:
        broken = json.loads(json.dumps(config))
        layers = broken["flow"]["layers"]
        change(broken)
        (folder / "config.json").write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=re.escape(message)):
            nfzoo.load(folder)


def test_malformed_configs_are_one_clear_error(tmp_path):
    folder, config = saved_folder(tmp_path)

    def without(key):
        return {k: v for k, v in config.items() if k != key}

    no_module = json.loads(json.dumps(config))
    del no_module["flow"]["layers"][0]["module"]
    deep_text = json.dumps(config)[:-1] + ', "metrics": ' + "[" * 100_000 + "]" * 100_000 + "}"
    no_layers = {k: v for k, v in config["flow"].items() if k != "layers"}
    cases = [
        (without("weights_sha256"), "must record the sha256 of model.weights.h5"),
        ({**config, "flow": [config["flow"]]}, "'flow' must be an object; found list"),
        ({**config, "flow": no_layers}, "'flow' must hold 'layers', a list of layer configs"),
        ([config], "must hold a JSON object (format, model config, weights_sha256); it holds a"),
        ({**config, "metrics": json.loads("[" * 70 + "]" * 70)}, "nests deeper than 64 levels"),
        (deep_text, "nests deeper than 64 levels"),
        (no_module, "the object of class_name 'ActNorm' must name its 'module' (a string)"),
        ("{not json", "is not valid JSON"),
    ]
    for broken, message in cases:
        text = broken if isinstance(broken, str) else json.dumps(broken)
        (folder / "config.json").write_text(text)
        with pytest.raises(ValueError, match=re.escape(message)):
            nfzoo.load(folder)


def test_index_records_are_checked(zoo_copy):
    index = json.loads((zoo_copy / "index.json").read_text())
    cases = [
        ({**index, "../x": index["maf-moons"]}, "records the entry '../x': an entry's name is"),
        (
            {"maf-moons": {**index["maf-moons"], "licence": "MIT"}},
            "the record of 'maf-moons' must have exactly the fields config_sha256",
        ),
        ({"maf-moons": {**index["maf-moons"], "size_bytes": "big"}}, "an integer size_bytes"),
        ([index], "must hold an object of entries"),
    ]
    for broken, message in cases:
        (zoo_copy / "index.json").write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=re.escape(message)):
            nfzoo.list_pretrained()


def test_save_pretrained_refuses_non_finite_weights(tmp_path):
    flow = nfzoo.build("nice", 2, num_layers=2, hidden_units=[8])
    weight = flow.trainable_weights[0]
    weight.assign(np.full(weight.shape, np.nan, weight.dtype))
    with pytest.raises(ValueError, match=r"refusing to save nice: 1 weight\(s\) hold NaN or inf"):
        flow.save_pretrained(tmp_path / "f")
    assert list(tmp_path.iterdir()) == []
