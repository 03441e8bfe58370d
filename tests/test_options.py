"""One option vocabulary for every builder: the shared names, former names (a FutureWarning,
the same flow), refusals that name the architecture, its options and the likeliest intended
one, ``check_options`` without building, presets in the current vocabulary, and records
written under former names still agreeing with their presets."""

import dataclasses
import functools
import json
import warnings

import numpy as np
import pytest

import nfzoo
from nfzoo import architectures, kinds, presets, pretrained
from nfzoo.layers import ActNorm, FactorOut, LULinear

VECTOR = {"num_layers": 2}
CONDITIONER = {"hidden_units": [8], "activation": "tanh"}
SPLINE = {"bins": 4, "bound": 3.0}
IMAGE = {"num_scales": 2, "hidden_channels": 4, "activation": "tanh", "coupling": "additive"}
LOGIT = {"num_levels": 4, "alpha": 0.1}
#: the shared names each builder takes (all of them, with small values)
SHARED = {
    "nice": {**VECTOR, **CONDITIONER},
    "realnvp": {**VECTOR, **CONDITIONER},
    "maf": {**VECTOR, **CONDITIONER},
    "iaf": {**VECTOR, **CONDITIONER},
    "glow-1d": {**VECTOR, **CONDITIONER},
    "nsf": {**VECTOR, **CONDITIONER, **SPLINE},
    "nsf-ar": {**VECTOR, **CONDITIONER, **SPLINE},
    "planar": VECTOR,
    "radial": VECTOR,
    "sylvester-orthogonal": {**VECTOR, "num_vectors": 2},
    "sylvester-householder": {**VECTOR, "num_reflections": 2},
    "sylvester-triangular": VECTOR,
    "glow": {**IMAGE, **LOGIT, "layers_per_scale": 1, "permutation": "qr"},
    "realnvp-image": {**IMAGE, **LOGIT, "actnorm": False},
}
#: every option name of the vocabulary (the module docstring's table)
VOCABULARY = {
    *VECTOR,
    *CONDITIONER,
    *SPLINE,
    *IMAGE,
    *LOGIT,
    "layers_per_scale",
    "permutation",
    "actnorm",
    "num_vectors",
    "num_reflections",
}
FORMER = {
    "glow-1d": {"num_steps": "num_layers"},
    "glow": {"levels": "num_scales", "steps_per_level": "layers_per_scale"},
    "realnvp-image": {"levels": "num_scales"},
}


def shape_of(arch: str):
    return nfzoo.architecture(arch).example_shape if arch in ("glow", "realnvp-image") else 3


def test_every_architecture_is_covered_and_speaks_the_vocabulary():
    assert set(SHARED) == set(nfzoo.list_architectures())
    for arch in SHARED:
        entry = nfzoo.architecture(arch)
        assert set(entry.options) == set(SHARED[arch]), arch
        assert set(entry.options) <= VOCABULARY, arch
        assert entry.former_names == FORMER.get(arch, {}), arch
        for old, new in entry.former_names.items():
            assert old not in entry.options and new in entry.options
    # "levels" only ever means grey levels: no current option is called levels
    assert not any("levels" in nfzoo.architecture(a).options for a in SHARED)


@pytest.mark.parametrize("arch", sorted(SHARED))
def test_every_builder_accepts_its_shared_names(arch):
    flow = nfzoo.build(arch, shape_of(arch), seed=1, **SHARED[arch])
    assert isinstance(flow, nfzoo.Flow)


def walk(layers):
    for layer in layers:
        yield layer
        if isinstance(layer, FactorOut):
            yield from walk(layer.inner_layers)


def test_glow_1d_takes_num_layers():
    flow = nfzoo.build("glow-1d", 6, num_layers=5)
    assert sum(isinstance(layer, LULinear) for layer in flow.flow_layers) == 5
    assert sum(isinstance(layer, ActNorm) for layer in flow.flow_layers) == 5


@pytest.mark.parametrize("arch", ["nice", "realnvp", "nsf", "maf", "iaf", "nsf-ar", "glow-1d"])
def test_activation_reaches_the_vector_conditioners(arch):
    flow = nfzoo.build(arch, 3, activation="tanh", hidden_units=[8], context_dim=2)
    nets = [getattr(layer, "conditioner", None) or getattr(layer, "made", None)
            for layer in flow.flow_layers]  # fmt: skip
    nets = [net for net in nets if net is not None]
    assert len(nets) >= 2
    for net in nets:
        assert net.get_config()["activation"] == "tanh"
    # the coupling / MADE layer's own config carries it, so from_config rebuilds it
    copy = nfzoo.Flow.from_config(flow.get_config())
    copy.set_weights(flow.get_weights())
    x = np.random.RandomState(0).normal(size=(4, 3)).astype(np.float32)
    c = np.random.RandomState(1).normal(size=(4, 2)).astype(np.float32)
    np.testing.assert_allclose(copy.log_prob(x, context=c), flow.log_prob(x, context=c))
    assert "relu" not in json.dumps(copy.get_config())


@pytest.mark.parametrize("arch", ["glow", "realnvp-image"])
def test_activation_reaches_the_image_conditioners(arch):
    flow = nfzoo.build(arch, (4, 4, 1), hidden_channels=4, activation="tanh")
    couplings = [layer for layer in walk(flow.flow_layers) if hasattr(layer, "conditioner")]
    assert couplings
    for layer in couplings:
        assert layer.get_config()["activation"] == "tanh"
        assert layer.conditioner.get_config()["activation"] == "tanh"
        assert layer.conditioner.hidden[0].activation.__name__ == "tanh"
    assert "relu" not in json.dumps(flow.get_config())


def test_a_bad_activation_is_a_value_error():
    with pytest.raises(ValueError, match="activation must be the name of a Keras activation"):
        nfzoo.build("maf", 3, activation="sigmoidish")
    with pytest.raises(ValueError, match="activation must be the name"):
        nfzoo.build("glow", (4, 4, 1), activation=np.tanh)


@pytest.mark.parametrize(
    "arch, shape, former, current",
    [
        ("glow-1d", 3, {"num_steps": 2}, {"num_layers": 2}),
        (
            "glow",
            (4, 4, 1),
            {"levels": 2, "steps_per_level": 1},
            {"num_scales": 2, "layers_per_scale": 1},
        ),
        ("realnvp-image", (4, 4, 1), {"levels": 2}, {"num_scales": 2}),
    ],
)
def test_a_former_name_warns_and_builds_the_same_flow(arch, shape, former, current):
    small = {"hidden_units": [8]} if arch == "glow-1d" else {"hidden_channels": 4}
    with pytest.warns(FutureWarning) as got:
        old = nfzoo.build(arch, shape, seed=3, **former, **small)
    assert [str(w.message) for w in got] == [
        f"{arch}: the option {a!r} is now called {b!r}; the former name stops working in the "
        "next release."
        for a, b in zip(former, current, strict=True)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = nfzoo.build(arch, shape, seed=3, **current, **small)
    for a, b in zip(old.weights, new.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    x = np.random.RandomState(0).uniform(0, 1, (2, *np.atleast_1d(shape))).astype(np.float32)
    np.testing.assert_array_equal(old.log_prob(x), new.log_prob(x))


def test_the_warning_points_at_the_callers_line():
    for call in (
        lambda: nfzoo.build("glow-1d", 2, num_steps=1, hidden_units=[4]),
        lambda: nfzoo.check_options("glow-1d", {"num_steps": 1}),
    ):
        with pytest.warns(FutureWarning, match="'num_steps' is now called 'num_layers'") as got:
            call()
        assert [w.filename for w in got] == [__file__]


def test_a_former_and_a_current_name_together_are_refused():
    with pytest.raises(ValueError, match="'num_steps' is the former name of 'num_layers'"):
        nfzoo.build("glow-1d", 6, num_steps=5, num_layers=5)
    with pytest.raises(ValueError, match="'levels' is the former name of 'num_scales'; pass"):
        nfzoo.check_options("glow", {"num_scales": 2, "levels": 2})
    with pytest.raises(ValueError, match="former name of 'layers_per_scale'"):
        architectures.current_option_names("glow", {"layers_per_scale": 2, "steps_per_level": 2})


@pytest.mark.parametrize(
    "arch, option, suggested",
    [
        ("maf", "num_steps", "num_layers"),
        ("maf", "depth", "num_layers"),
        ("realnvp", "transforms", "num_layers"),  # zuko
        ("nsf", "hidden_features", "hidden_units"),  # zuko, nflows, sbi
        ("nsf", "num_bins", "bins"),  # nflows
        ("nsf-ar", "tail_bound", "bound"),  # nflows
        ("iaf", "act", "activation"),
        ("maf", "num_blocks", "hidden_units"),  # nflows, sbi: the conditioner's depth
        ("glow", "num_steps_per_block", "layers_per_scale"),  # TFP's Glow
        ("glow", "num_glow_blocks", "num_scales"),  # TFP's Glow
        ("glow", "num_blocks", "num_scales"),
        ("glow", "num_layers", "layers_per_scale"),
        ("glow", "hidden_units", "hidden_channels"),
        ("realnvp-image", "num_steps", None),  # a fixed number of couplings per scale
        ("planar", "num_flows", "num_layers"),
        ("glow-1d", "steps_per_level", "num_layers"),
        ("nice", "random_state", "seed"),
    ],
)
def test_an_unknown_option_names_the_architecture_its_options_and_a_suggestion(
    arch, option, suggested
):
    entry = nfzoo.architecture(arch)
    with pytest.raises(ValueError) as info:
        nfzoo.build(arch, shape_of(arch), **{option: 2})
    message = str(info.value)
    assert message.startswith(f"{arch} has no option {option!r}"), message
    for name, default in entry.options.items():
        assert f"{name}={default!r}" in message
    if suggested:
        assert f"did you mean {suggested!r}?" in message
    else:
        assert "did you mean" not in message
    with pytest.raises(ValueError, match=f"{arch} has no option {option!r}"):
        nfzoo.check_options(arch, {option: 2})
    assert "\n" not in message


def test_check_options_validates_without_building(monkeypatch):
    entry = nfzoo.architecture("glow")

    @functools.wraps(entry.builder)  # the same signature, so the same options
    def no_build(*args, **kwargs):
        raise AssertionError("built")

    replaced = dataclasses.replace(entry, builder=no_build)
    monkeypatch.setitem(architectures.ARCHITECTURES._entries, "glow", replaced)
    with pytest.warns(FutureWarning):
        checked = nfzoo.check_options("glow", {"levels": 3, "seed": 1, "standardize": True})
    assert checked == {"num_scales": 3, "seed": 1, "standardize": True}
    with pytest.raises(ValueError, match="planar does not take a context"):
        nfzoo.check_options("planar", {"context_dim": 2})
    assert nfzoo.check_options("maf", {"context_dim": 2}) == {"context_dim": 2}
    with pytest.raises(ValueError, match="Unknown architecture 'mad'"):
        nfzoo.check_options("mad", {})


def test_current_option_names_translates_silently_and_passes_the_rest():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = architectures.current_option_names(
            "glow", {"levels": 2, "steps_per_level": 8, "num_levels": 17, "other": 1}
        )
    assert got == {"num_scales": 2, "layers_per_scale": 8, "num_levels": 17, "other": 1}


def preset_options(preset) -> tuple[str, dict] | None:
    """(architecture, builder options) of a preset whose options are an architecture's."""
    if preset.kind in ("density", "reverse-kl"):
        return preset.architecture, dict(preset.options)
    if preset.kind == "npe":
        rest = {k: v for k, v in preset.options.items() if k not in ("flow", "context_dim")}
        return preset.options["flow"], {"context_dim": preset.options["context_dim"], **rest}
    return None


def test_every_preset_speaks_the_current_vocabulary():
    checked = 0
    for preset in presets.list_presets():
        found = preset_options(preset)
        if found is None:
            assert preset.kind == "flow-vae", preset.name  # FlowVAE's own arguments
            continue
        arch, options = found
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a former name would warn
            assert nfzoo.check_options(arch, options) == options, preset.name
        checked += 1
    assert checked >= 20


def test_records_under_former_names_agree_with_presets_under_current_ones():
    """The shipped records keep the names they were written with (their digests are
    recorded); compared under current names, they agree with their presets, and a real
    change of a preset still shows."""
    renamed = 0
    for entry in nfzoo.list_pretrained():
        config = json.loads((entry.path / "config.json").read_text())
        options = config["architecture"]["options"]
        found = preset_options(entry.preset)
        if found is not None:
            arch, _ = found
            renamed += any(k in nfzoo.architecture(arch).former_names for k in options)
        assert kinds.stale_declaration(entry.preset, config) == [], entry.name
    assert renamed >= 1  # glow-digits, realnvp-image-digits and glow-1d-* hold former names
    entry = nfzoo.pretrained_entry("glow-digits")
    config = json.loads((entry.path / "config.json").read_text())
    changed = dataclasses.replace(
        entry.preset, options={**entry.preset.options, "layers_per_scale": 4}
    )
    assert kinds.stale_declaration(changed, config) == ["architecture"]


def test_an_entry_recorded_under_former_names_still_loads_and_verifies():
    entry = nfzoo.pretrained_entry("glow-1d-pinwheel")
    recorded = json.loads((entry.path / "config.json").read_text())["architecture"]["options"]
    assert recorded["num_steps"] == 8 and "num_layers" not in recorded
    flow = entry.load()
    rebuilt = entry.preset.build()
    assert [type(layer) for layer in rebuilt.flow_layers] == [
        type(layer) for layer in flow.flow_layers
    ]
    assert len(flow.flow_layers) == 3 * 8
    check = pretrained.verify("glow-1d-pinwheel")
    assert all(c.ok for c in check)


def test_former_module_and_attribute_names_warn_and_forward():
    import importlib
    import sys

    sys.modules.pop("nfzoo.models", None)
    with pytest.warns(FutureWarning, match="nfzoo.architectures"):
        models = importlib.import_module("nfzoo.models")
    assert models.build is nfzoo.architectures.build
    assert models.list_architectures() == nfzoo.list_architectures()

    from nfzoo import targets, vi

    model = vi.ReverseKL(nfzoo.build("planar", 2, num_layers=1), "u1", num_samples=4)
    assert isinstance(model.target, targets.Target) and model.target.name == "u1"
    with pytest.warns(FutureWarning, match="ReverseKL.target"):
        assert model.log_target is model.target
