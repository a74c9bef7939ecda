"""Typed configuration: the shared loading machinery and the stream layer's own section.

Every layer owns one top-level section of the YAML (``stream``, ``training``,
``export``, ``realtime``, ``gui``) and validates it with a frozen pydantic model
in its own ``config.py``. The loading machinery (YAML + ``--set`` overrides +
error messages that name the key) lives here, in the bottom layer, so every
layer can use it without importing another.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: Top-level sections of a NeuroImagen config file, one per layer.
SECTIONS: tuple[str, ...] = ("stream", "training", "export", "realtime", "gui")

DEFAULT_CONFIG_NAME = "default.yaml"


class ConfigError(ValueError):
    """A configuration file, override or value is invalid; the message names the key."""


class FrozenConfig(BaseModel):
    """Base of every config model: immutable, unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


M = TypeVar("M", bound=BaseModel)


# --------------------------------------------------------------------------- loading


def shipped_config_dirs() -> list[Path]:
    """Folders of the ``neuroimagen.configs`` package data (YAML only, no Python).

    ``neuroimagen.configs`` is a namespace package (configs/ holds no Python), so
    its locations come from the import spec; ``importlib.resources`` cannot read
    namespace packages under setuptools' editable finder on Python 3.11.
    """
    spec = importlib.util.find_spec("neuroimagen.configs")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the neuroimagen.configs package data is not installed")
    return [Path(p) for p in spec.submodule_search_locations if Path(p).is_dir()]


def shipped_config_path(name: str) -> Path:
    """Path of a YAML file shipped in ``neuroimagen.configs`` (e.g. ``default.yaml``)."""
    for folder in shipped_config_dirs():
        if (folder / name).is_file():
            return folder / name
    raise ConfigError(f"no shipped config named {name!r}; shipped: {', '.join(list_shipped_configs())}")


def default_config_path() -> Path:
    """Path of the ``configs/default.yaml`` shipped as package data."""
    return shipped_config_path(DEFAULT_CONFIG_NAME)


def list_shipped_configs() -> list[str]:
    """Names of the YAML files shipped in ``neuroimagen.configs``."""
    return sorted(
        {p.name for d in shipped_config_dirs() for p in d.iterdir() if p.suffix in (".yaml", ".yml")}
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        # allow the short name of a shipped config, e.g. --config default.yaml
        if path.parent.parts or path.name not in list_shipped_configs():
            raise ConfigError(f"config file not found: {path}")
        path = shipped_config_path(path.name)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated recursively by ``update`` (neither is modified)."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse one ``--set a.b.c=value`` override; the value is read as YAML (``5``, ``null``, ``[a, b]``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    dotted, raw = text.split("=", 1)
    keys = [k.strip() for k in dotted.strip().split(".")]
    if not keys or any(not k for k in keys):
        raise ConfigError(f"override {text!r}: empty key in {dotted!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value {raw!r} is not valid YAML: {exc}") from exc
    return keys, value


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides to a nested dict (unknown keys are caught later, by validation)."""
    out = copy.deepcopy(dict(data))
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            elif not isinstance(child, dict):
                where = ".".join(keys[: depth + 1])
                raise ConfigError(f"override {text!r}: {where} is a value ({child!r}), not a section")
            node = child
        node[keys[-1]] = value
    return out


def load_config_data(
    config: str | Path | None = None, overrides: Iterable[str] = ()
) -> dict[str, Any]:
    """Load the merged config: shipped defaults, then ``config`` (if any), then overrides.

    Parameters
    ----------
    config : path | None
        A YAML file whose sections override the shipped ``default.yaml``.
    overrides : iterable of str
        ``section.key=value`` strings (the CLI's ``--set``), applied last.

    Returns
    -------
    dict
        The raw merged mapping, top-level keys checked against :data:`SECTIONS`.
    """
    data = _read_yaml(default_config_path())
    if config is not None:
        data = deep_merge(data, _read_yaml(Path(config)))
    data = apply_overrides(data, overrides)
    unknown = [k for k in data if k not in SECTIONS]
    if unknown:
        key = unknown[0]
        raise ConfigError(_unknown_key_message(str(key), SECTIONS, where="top level"))
    return data


def _unknown_key_message(key: str, allowed: Iterable[str], where: str) -> str:
    allowed = list(allowed)
    msg = f"{key}: unknown key at {where}"
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], allowed, n=1)
    if close:
        msg += f" (did you mean {close[0]!r}?)"
    if allowed:
        msg += f"; allowed: {', '.join(allowed)}"
    return msg


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the sub-model reached by ``loc`` (for 'did you mean' hints)."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return []
        ann = fields[part].annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        current = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def format_validation_error(exc: ValidationError, model: type[BaseModel], prefix: str) -> str:
    """One line per problem, each naming the dotted key and the offending value."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join([prefix, *map(str, loc)]) if prefix else ".".join(map(str, loc))
        if err["type"] == "extra_forbidden":
            parent = ".".join([prefix, *map(str, loc[:-1])]) or "top level"
            lines.append(_unknown_key_message(dotted, _fields_at(model, loc[:-1]), where=parent))
        else:
            lines.append(f"{dotted}: {err['msg']} (got {err.get('input')!r})")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def validate_section(model: type[M], data: Mapping[str, Any] | None, section: str) -> M:
    """Validate ``data`` (one top-level section) into ``model``; errors name the key and value."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{section}: must be a mapping, got {data!r}")
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, model, section)) from None


def load_section(
    model: type[M],
    section: str,
    config: str | Path | None = None,
    overrides: Iterable[str] = (),
    data: Mapping[str, Any] | None = None,
) -> M:
    """Load and validate one layer's section (``data`` given: skip reading files)."""
    if section not in SECTIONS:
        raise ConfigError(f"unknown config section {section!r}; sections: {', '.join(SECTIONS)}")
    if data is None:
        data = load_config_data(config, overrides)
    return validate_section(model, data.get(section), section)


def dump_yaml(data: Mapping[str, Any]) -> str:
    """YAML text for a resolved config (saved beside every output)."""
    return yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False)


# --------------------------------------------------------------------------- stream section


class InletConfig(FrozenConfig):
    """Live LSL inlet: which stream, how much to buffer, how to pull."""

    name: str | None = Field(None, description="stream name to resolve (None: any)")
    stype: str | None = Field("EEG", description="stream type to resolve (None: any)")
    source_id: str | None = None
    resolve_timeout_s: float = Field(5.0, gt=0)
    bufsize_s: float = Field(30.0, gt=0, description="ring-buffer length in seconds")
    poll_interval_s: float = Field(0.001, gt=0, le=0.1)
    max_buflen_s: int = Field(10, ge=1, description="liblsl inlet buffer (seconds)")
    clock_correction: bool = True
    dejitter: bool = True
    monotonize: bool = True
    recover: bool = True
    on_nonfinite: Literal["zero", "hold", "raise"] = Field(
        "hold", description="NaN/inf samples: zero them, hold the last finite value, or raise"
    )
    gap_threshold_s: float = Field(
        0.02, gt=0, description="a timestamp step this much beyond 1/sfreq is reported as a gap"
    )
    counter_channel: int | None = Field(
        None, ge=0, description="channel carrying a sample counter (exact gap detection), or None"
    )
    reresolve_after_s: float | None = Field(
        1.0, gt=0,
        description="no data for this long: look for the stream restarted under its name and type "
        "(a new source_id) and reconnect; None: only liblsl's recover (same source_id)",
    )


class ContractConfig(FrozenConfig):
    """The channel and rate contract the model expects (normally from the bundle manifest)."""

    montage: str = "brainproducts-RNP-BA-128"
    sfreq_hz: float = Field(1000.0, gt=0)
    ch_names: tuple[str, ...] | None = Field(
        None, description="expected channels in order (None: the montage's 128 channels)"
    )
    on_rate_mismatch: Literal["resample", "refuse"] = "resample"
    on_missing_channels: Literal["refuse", "interpolate"] = "refuse"
    max_missing_fraction: float = Field(0.1, ge=0, le=1)
    units: Literal["auto", "V", "uV"] = Field(
        "auto",
        description="unit of incoming samples; auto: from the stream description, else from an "
        "unambiguous amplitude, else refuse",
    )
    unlabelled_ch_names: tuple[str, ...] | None = Field(
        None,
        description="names of an unlabelled stream's channels, in stream order (OpenBCI GUI "
        "style streams carry no labels; channels are never mapped by position without this); "
        "stream channels beyond the list are dropped",
    )


class BandpassConfig(FrozenConfig):
    l_freq_hz: float | None = Field(5.0, gt=0)
    h_freq_hz: float | None = Field(95.0, gt=0)
    order: int = Field(4, ge=1, le=10, description="Butterworth order (per band edge)")

    @model_validator(mode="after")
    def _check_band(self) -> BandpassConfig:
        if self.l_freq_hz is not None and self.h_freq_hz is not None:
            if self.l_freq_hz >= self.h_freq_hz:
                raise ValueError(
                    f"l_freq_hz ({self.l_freq_hz}) must be below h_freq_hz ({self.h_freq_hz})"
                )
        return self


class NormalizationConfig(FrozenConfig):
    """How each window is normalised; must match the training data exactly."""

    mode: Literal["dataset", "window", "none"] = Field(
        "window",
        description="dataset: fixed per-channel mean/std from training; "
        "window: per-window per-channel z-score; none",
    )
    eps: float = Field(1e-8, gt=0)


class PreprocessingConfig(FrozenConfig):
    bandpass: BandpassConfig | None = BandpassConfig()
    notch_hz: float | None = Field(None, gt=0, description="line frequency to notch (50/60), or None")
    notch_q: float = Field(30.0, gt=0)
    reference: Literal["none", "average"] | tuple[str, ...] = "none"
    normalization: NormalizationConfig = NormalizationConfig()
    resample_n_times: int | None = Field(
        None, gt=0, description="linear resample of each window to this many samples (e.g. 512)"
    )


class WindowingConfig(FrozenConfig):
    mode: Literal["sliding", "marker"] = "sliding"
    n_times: int = Field(440, gt=0, description="samples per window")
    hop_s: float = Field(0.05, gt=0, description="sliding hop in seconds")
    marker_offset_samples: int = Field(
        20, ge=0, description="marker-locked windows start this many samples after the marker"
    )
    marker_stream: str | None = Field(
        None, description="marker stream name (None: '<eeg name>-markers')"
    )
    marker_max_pending_s: float = Field(
        10.0, gt=0, description="drop a marker whose window is not complete after this long"
    )


class ReplayConfig(FrozenConfig):
    name: str = Field("NeuroImagen-replay", description="EEG outlet name ('<name>-markers' for markers)")
    speed: float = Field(1.0, gt=0)
    loop: bool = False
    chunk_s: float = Field(0.01, gt=0, le=1.0, description="samples pushed per chunk, in seconds")
    wait_for_consumers_s: float = Field(
        0.0, ge=0, description="hold the first sample until every outlet has a consumer (0: don't)"
    )
    on_nonfinite: Literal["refuse", "replay"] = Field(
        "refuse", description="NaN/inf samples in a file: refuse to replay, or send them as they are"
    )


class SimulateConfig(FrozenConfig):
    name: str = "NeuroImagen-sim"
    n_channels: int = Field(128, ge=1)
    sfreq_hz: float = Field(1000.0, gt=0)
    line_freq_hz: float = Field(50.0, gt=0)
    marker_interval_s: float = Field(0.5, gt=0)
    seed: int = 0
    chunk_s: float = Field(0.01, gt=0, le=1.0, description="samples pushed per chunk, in seconds")


class RecordConfig(FrozenConfig):
    flush_interval_s: float = Field(0.5, gt=0, le=1.0)
    formats: tuple[Literal["fif", "xdf"], ...] = ("fif",)
    poll_interval_s: float = Field(0.005, gt=0, le=0.1)
    resolve_timeout_s: float = Field(5.0, gt=0, description="wait this long for the named streams")
    finalize_on_stop: bool = Field(True, description="write the FIF (and XDF) when stopped cleanly")
    reresolve_after_s: float | None = Field(
        1.0, gt=0,
        description="no data for this long: look for the stream restarted under its name and "
        "reconnect; None: only liblsl's recover (same source_id)",
    )
    gap_threshold_s: float = Field(
        0.02, gt=0, description="a timestamp step this much beyond 1/sfreq is recorded as a gap"
    )


class StreamConfig(FrozenConfig):
    """The ``stream`` section: everything between the headset and a model-ready window."""

    inlet: InletConfig = InletConfig()
    contract: ContractConfig = ContractConfig()
    preprocessing: PreprocessingConfig = PreprocessingConfig()
    windowing: WindowingConfig = WindowingConfig()
    replay: ReplayConfig = ReplayConfig()
    simulate: SimulateConfig = SimulateConfig()
    record: RecordConfig = RecordConfig()


def load_stream_config(
    config: str | Path | None = None, overrides: Iterable[str] = ()
) -> StreamConfig:
    """Load the ``stream`` section (shipped defaults < ``config`` < overrides)."""
    return load_section(StreamConfig, "stream", config, overrides)
