"""Typed configs: defaults load, overrides apply, bad keys and values are named."""

import pytest

from neuroimagen.export.config import ExportConfig
from neuroimagen.gui.config import GuiConfig
from neuroimagen.realtime.config import RealtimeConfig
from neuroimagen.stream.config import (
    SECTIONS,
    ConfigError,
    StreamConfig,
    default_config_path,
    load_config_data,
    load_stream_config,
    validate_section,
)
from neuroimagen.training.config import TrainingConfig

MODELS = {
    "stream": StreamConfig,
    "training": TrainingConfig,
    "export": ExportConfig,
    "realtime": RealtimeConfig,
    "gui": GuiConfig,
}


def test_shipped_default_validates_every_section_and_matches_model_defaults():
    data = load_config_data()
    assert set(data) == set(SECTIONS) == set(MODELS)
    for name, model in MODELS.items():
        cfg = validate_section(model, data[name], name)
        # the YAML spells out the defaults: it must agree with the models
        assert cfg == model(), f"configs/default.yaml section {name!r} drifted from {model.__name__}"


def test_shipped_default_is_package_data():
    path = default_config_path()
    assert path.name == "default.yaml" and path.is_file()


def test_configs_are_frozen():
    cfg = load_stream_config()
    with pytest.raises(Exception, match="frozen"):
        cfg.windowing.n_times = 10


def test_override_applies_and_parses_yaml_values():
    cfg = load_stream_config(overrides=["stream.windowing.hop_s=0.1", "stream.preprocessing.notch_hz=50"])
    assert cfg.windowing.hop_s == 0.1
    assert cfg.preprocessing.notch_hz == 50.0
    cfg = load_stream_config(overrides=["stream.preprocessing.bandpass=null"])
    assert cfg.preprocessing.bandpass is None


def test_config_file_overrides_defaults(tmp_path):
    f = tmp_path / "my.yaml"
    f.write_text("stream:\n  windowing:\n    n_times: 500\n")
    cfg = load_stream_config(f)
    assert cfg.windowing.n_times == 500
    assert cfg.windowing.hop_s == 0.05  # untouched defaults survive the merge


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("stream.windowing.hop_sec=0.1", r"stream\.windowing\.hop_sec: unknown key.*did you mean 'hop_s'"),
        ("stream.windowing.n_times=abc", r"stream\.windowing\.n_times: .*integer.*'abc'"),
        ("stream.windowing.n_times=-3", r"stream\.windowing\.n_times: .*greater than 0.*-3"),
        ("strem.windowing.n_times=3", r"strem: unknown key at top level.*did you mean 'stream'"),
        ("stream.windowing.mode=slide", r"stream\.windowing\.mode: .*'sliding'.*'slide'"),
        ("stream.preprocessing.bandpass.l_freq_hz=200", r"l_freq_hz \(200\.0\) must be below h_freq_hz"),
        ("stream.windowing", r"must look like section\.key=value"),
    ],
)
def test_bad_override_is_named(override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_stream_config(overrides=[override])


def test_yaml_typo_in_file_is_named(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("stream:\n  inlet:\n    bufsize: 10\n")
    with pytest.raises(ConfigError, match=r"stream\.inlet\.bufsize: unknown key.*bufsize_s"):
        load_stream_config(f)


def test_broken_yaml_and_missing_file(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("stream: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config_data(f)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config_data(tmp_path / "nope.yaml")
