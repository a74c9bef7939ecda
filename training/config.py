"""The ``training`` section: datasets, the synthetic twin and evaluation."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import Field

from neuroimagen.stream.config import FrozenConfig, load_section


class EEGImageNetConfig(FrozenConfig):
    """EEG-ImageNet (Spampinato et al.) as DreamDiffusion reads it."""

    eeg_path: Path | None = Field(None, description="eeg_5_95_std.pth (or a twin's equivalent)")
    splits_path: Path | None = Field(None, description="block_splits_by_image_all.pth")
    image_root: Path | None = Field(None, description="<root>/<wnid>/<stem>.JPEG")
    split_index: int = Field(0, ge=0)
    subject: int | None = Field(None, ge=0, le=6, description="0 or None: all subjects")
    min_n_times: int = Field(450, gt=0)
    max_n_times: int = Field(600, gt=0)
    crop_start: int = Field(20, ge=0)
    crop_stop: int = Field(460, gt=0)
    resample_n_times: int | None = Field(None, gt=0, description="512 for DreamDiffusion encoders")
    preprocess: Literal["file", "ours"] = Field(
        "file",
        description="file: signals as stored (authors' offline filter); "
        "ours: our causal chain per segment (for eeg_signals_raw_with_mean_std.pth)",
    )


class DataConfig(FrozenConfig):
    eeg_imagenet: EEGImageNetConfig = EEGImageNetConfig()
    captions_path: Path | None = Field(None, description="JSON image stem -> caption (e.g. BLIP)")
    caption_template: str = "an image of a {class_name}"


class TwinConfig(FrozenConfig):
    """The synthetic EEG-ImageNet twin (``neuroimagen data make-twin``).

    SNRs are RMS ratios: a component's RMS over channels and its 500 ms epoch
    divided by the background's RMS in the 5-95 Hz band (``noise_rms_uv``).
    Sizes left at None come from the preset (small: 10 classes x 20 images,
    2 subjects, 64 px; full: 40 x 50, 2 subjects, 96 px).
    """

    preset: Literal["small", "full"] = "small"
    seed: int = 0
    order: Literal["rapid", "block"] = Field(
        "rapid", description="rapid: classes interleaved; block: one class per block (EEG-ImageNet)"
    )
    n_classes: int | None = Field(None, ge=2, le=40)
    n_images_per_class: int | None = Field(None, ge=2)
    n_subjects: int | None = Field(None, ge=1, le=6)
    image_size_px: int | None = Field(None, ge=32, le=256)
    n_splits: int = Field(1, ge=1)
    vep_snr: float = Field(0.6, ge=0, description="common P1/N1/P2 response")
    layout_snr: float = Field(0.35, ge=0, description="hemifield (x, y) and colour patterns")
    class_snr: float = Field(0.3, ge=0, description="class-specific pattern x waveform")
    block_nonstationarity: float = Field(
        0.15, ge=0, description="sd of the per-block log gain of the background (per channel)"
    )
    noise_rms_uv: float = Field(6.0, gt=0, description="1/f background RMS in 5-95 Hz (uV)")
    aperiodic_exponent: float = Field(1.5, gt=0, description="background PSD ~ 1/f**a")
    alpha_rms_uv: float = Field(4.0, ge=0, description="posterior ~10 Hz alpha RMS at its peak (uV)")
    line_noise_uv: float = Field(1.0, ge=0)
    line_freq_hz: float = Field(50.0, gt=0)
    soa_s: float = Field(0.5, ge=0.5, description="stimulus onset asynchrony")
    block_pause_s: float = Field(2.0, ge=0)


class TrainingConfig(FrozenConfig):
    """Everything needed to build datasets and train; saved beside every run."""

    seed: int = 0
    data: DataConfig = DataConfig()
    twin: TwinConfig = TwinConfig()
    device: Literal["cpu", "cuda"] = "cpu"


def load_training_config(
    config: str | Path | None = None, overrides: Iterable[str] = ()
) -> TrainingConfig:
    return load_section(TrainingConfig, "training", config, overrides)
