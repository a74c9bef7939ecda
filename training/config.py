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


class DataConfig(FrozenConfig):
    eeg_imagenet: EEGImageNetConfig = EEGImageNetConfig()
    captions_path: Path | None = Field(None, description="JSON image stem -> caption (e.g. BLIP)")
    caption_template: str = "an image of a {class_name}"


class TrainingConfig(FrozenConfig):
    """Everything needed to build datasets and train; saved beside every run."""

    seed: int = 0
    data: DataConfig = DataConfig()
    device: Literal["cpu", "cuda"] = "cpu"


def load_training_config(
    config: str | Path | None = None, overrides: Iterable[str] = ()
) -> TrainingConfig:
    return load_section(TrainingConfig, "training", config, overrides)
