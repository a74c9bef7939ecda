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
    subject_variation: Literal["narrow", "wide"] = Field(
        "narrow", description="how much the subjects differ (training.data.twin.eeg: narrow = gain, "
        "latency and channel gains only; wide = also individual topographies and per-component "
        "latencies and gains, what a new simulated subject gets)"
    )


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


# --------------------------------------------------------------------------- training stages
# (``neuroimagen train <stage>``; presets in configs/train/<stage>-<preset>.yaml)
#
# Each model section mirrors its model class's constructor (tests/training/test_train_config.py
# checks that the fields and the signature agree), so a preset's model section is exactly
# the config.json the model folder will hold.


class TrainerConfig(FrozenConfig):
    """The optimisation loop every stage shares (accelerate: one CPU, one GPU, or ``accelerate launch``)."""

    max_steps: int = Field(1000, gt=0, description="optimizer steps")
    batch_size: int = Field(64, gt=0, description="global batch per micro-step, over all processes")
    grad_accum_steps: int = Field(1, ge=1, description="micro-steps per optimizer step")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0, description="linear warm-up, then cosine decay to lr_min_ratio")
    lr_min_ratio: float = Field(0.1, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    seed: int = 0
    log_every: int = Field(10, gt=0, description="steps between metrics.csv rows")
    checkpoint_every: int = Field(100, gt=0, description="steps between checkpoints (and at the end)")
    keep_checkpoints: int = Field(2, ge=1)
    sample_every: int = Field(0, ge=0, description="steps between sample images (image stages; 0: end only)")
    eval_every: int = Field(0, ge=0, description="steps between validation metrics (0: end only)")


class StageDataConfig(FrozenConfig):
    """Which windows a stage trains on (the twin, split by image)."""

    split_index: int = Field(0, ge=0)
    resample_n_times: int | None = Field(
        None, gt=0, description="512 for DreamDiffusion-sized encoders (the stream layer's resample)"
    )
    train_on: Literal["train", "train+val"] = "train"
    include_test_unlabelled: bool = Field(
        False, description="MAE only: also pretrain on the test windows (no labels are used)"
    )


class PatchEncoderConfig(FrozenConfig):
    """The EEG patch transformer the MAE and the semantic extractor share (PatchEmbed1D + TransformerStack)."""

    n_channels: int = 128
    n_times: int = 440
    patch_size: int = Field(4, gt=0)
    dim: int = Field(1024, gt=0)
    depth: int = Field(24, ge=1)
    n_heads: int = Field(16, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)


class MAEModelConfig(PatchEncoderConfig):
    """:class:`~neuroimagen.training.models.mae.MaskedEEGAutoencoder`; paper: 1024/24/16, decoder 512/8/16."""

    decoder_dim: int = Field(512, gt=0)
    decoder_depth: int = Field(8, ge=1)
    decoder_n_heads: int = Field(16, ge=1)
    mask_ratio: float = Field(0.75, gt=0, lt=1)


class PixelModelConfig(FrozenConfig):
    """:class:`~neuroimagen.training.models.pixel.PixelEncoder`."""

    n_channels: int = 128
    n_times: int = 440
    n_temporal_filters: int = Field(2, gt=0, description="depthwise temporal filters per spatial filter")
    temporal_kernel: int = Field(25, gt=0)
    n_spatial_filters: int = Field(32, gt=0)
    pool: int = Field(20, gt=0)
    hidden_dim: int = Field(256, ge=0)
    feature_dim: int = Field(128, gt=0)
    dropout: float = Field(0.25, ge=0, lt=1)


class NICEModelConfig(FrozenConfig):
    """:class:`~neuroimagen.training.models.nice.NICEEncoder` (proj_dim must equal the targets' width)."""

    n_channels: int = 128
    n_times: int = 440
    n_filters: int = Field(40, gt=0)
    temporal_kernel: int = Field(25, gt=0)
    pool_kernel: int = Field(51, gt=0)
    pool_stride: int = Field(5, gt=0)
    proj_dim: int = Field(768, gt=0)
    dropout: float = Field(0.5, ge=0, lt=1)
    init_temperature: float = Field(0.07, gt=0)


class FMRIPixelModelConfig(FrozenConfig):
    """:class:`~neuroimagen.training.models.pixel.FMRIPixelEncoder` (n_voxels comes from the data)."""

    hidden_dim: int = Field(512, gt=0)
    n_layers: int = Field(2, ge=1)
    feature_dim: int = Field(128, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)


class ContrastiveLossConfig(FrozenConfig):
    triplet_margin: float = Field(0.2, gt=0, description="pixel: triplet margin (cosine distance)")
    triplet_label: list[Literal["class", "hemifield", "quadrant", "image"]] = Field(
        default_factory=lambda: ["class", "quadrant"],
        description="pixel: trials are positives when all these labels agree",
    )
    spread_weight: float = Field(
        0.1, ge=0, description="pixel: weight of the term that keeps label groups from collapsing"
    )
    spread_t: float = Field(2.0, gt=0, description="pixel: uniformity temperature")


class ContrastiveStageConfig(FrozenConfig):
    """``neuroimagen train contrastive``: the pixel encoder (triplet) or NICE (InfoNCE)."""

    stage: Literal["contrastive"] = "contrastive"
    encoder: Literal["pixel", "nice"] = "pixel"
    trainer: TrainerConfig = TrainerConfig()
    data: StageDataConfig = StageDataConfig()
    pixel: PixelModelConfig = PixelModelConfig()
    nice: NICEModelConfig = NICEModelConfig()
    fmri: FMRIPixelModelConfig = FMRIPixelModelConfig()
    loss: ContrastiveLossConfig = ContrastiveLossConfig()


class SaliencyGeneratorConfig(FrozenConfig):
    """:class:`~neuroimagen.training.models.saliency.SaliencyGenerator` (feature_dim from the encoder)."""

    noise_dim: int = Field(0, ge=0)
    base_channels: int = Field(256, gt=0)
    image_size: int = Field(64, ge=8)
    linear_head: bool = Field(False, description="a linear features -> image path (set in closed form "
                              "with `features:`), the convolutional path a residual starting at zero")


class SaliencyFeaturesConfig(FrozenConfig):
    """The closed-form pixel path (``features:`` set): no --encoder needed.

    A :class:`~neuroimagen.training.models.pixel.FeaturePixelEncoder` is fitted by ridge regression of
    the linear decoder's features on the principal-component coefficients of the training images, and
    the generator's linear head decodes them (``generator.linear_head`` must be true); the GAN then
    trains the convolutional residual, and the better of the two on the val images (SSIM + PCC +
    hemifield accuracy) is kept.
    """

    bin_samples: int = Field(20, gt=0)
    log_variance: bool = True
    n_components: int = Field(32, gt=0, description="principal components of the training images")
    ridge_alphas: list[float] = Field([3.0e4, 1.0e5, 3.0e5], min_length=1,
                                      description="ridge penalties tried; the val images pick one "
                                      "(SSIM + PCC + hemifield accuracy)")


class SaliencyDiscriminatorConfig(FrozenConfig):
    base_channels: int = Field(32, gt=0)


class SaliencyLossConfig(FrozenConfig):
    adversarial_weight: float = Field(0.05, ge=0)
    ssim_weight: float = Field(1.0, ge=0)
    l1_weight: float = Field(1.0, ge=0)
    diffaugment: bool = Field(True, description="translation + colour + cutout on both D inputs")
    d_lr_ratio: float = Field(1.0, gt=0, description="discriminator lr / generator lr")
    encoder_lr_ratio: float = Field(
        0.0, ge=0, description="0: the pixel encoder is frozen; >0: fine-tuned at lr * ratio"
    )


class SaliencyStageConfig(FrozenConfig):
    """``neuroimagen train saliency``: the conditional GAN on a trained pixel encoder's features."""

    stage: Literal["saliency"] = "saliency"
    trainer: TrainerConfig = TrainerConfig()
    data: StageDataConfig = StageDataConfig()
    generator: SaliencyGeneratorConfig = SaliencyGeneratorConfig()
    discriminator: SaliencyDiscriminatorConfig = SaliencyDiscriminatorConfig()
    loss: SaliencyLossConfig = SaliencyLossConfig()
    features: SaliencyFeaturesConfig | None = Field(
        None, description="set: fit the pixel encoder in closed form here (FeaturePixelEncoder) instead of "
        "loading a trained one with --encoder"
    )


class SemanticModelConfig(PatchEncoderConfig):
    """:class:`~neuroimagen.training.models.semantic.SemanticExtractor` (n_tokens, width from the targets)."""

    dropout: float = Field(0.0, ge=0, lt=1)


class SemanticFeaturesConfig(FrozenConfig):
    """:class:`~neuroimagen.training.models.semantic.FeatureSemanticExtractor` (used when ``features`` is set).

    The linear decoder's features through a ridge class code fitted in closed form, then
    fine-tuned by gradient; the better of the two on the val images is kept.
    """

    bin_samples: int = Field(20, gt=0, description="samples per time bin of the evoked time course")
    channels: Literal["posterior", "all"] = Field(
        "all", description="binned channels: posterior (the data baseline's) or all"
    )
    log_variance: bool = Field(True, description="append every channel's log-variance (band power)")
    ridge_alphas: list[float] = Field(
        [1.0e2, 3.0e2, 1.0e3, 3.0e3, 1.0e4, 3.0e4], min_length=1,
        description="ridge penalties tried in closed form; the val images pick one",
    )
    hidden_dim: int = Field(0, ge=0, description="residual MLP width (0: linear)")
    dropout: float = Field(0.0, ge=0, lt=1)
    token_rank: int = Field(16, gt=0, description="rank of the token head (<= n_classes)")


class FMRISemanticModelConfig(FrozenConfig):
    hidden_dim: int = Field(1024, gt=0)
    n_layers: int = Field(2, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    token_dim: int = Field(64, gt=0)


class SemanticLossConfig(FrozenConfig):
    l2_weight: float = Field(1.0, ge=0, description="squared L2 to the class tokens and pooled (NeuroImagen)")
    contrastive_weight: float = Field(
        1.0, ge=0, description="CLIP-style InfoNCE of pooled vs the class embeddings (DreamDiffusion)"
    )
    temperature: float = Field(0.05, gt=0)
    pooled_l2_weight: float = Field(
        1.0, ge=0, description="share of the squared L2 on pooled (0: pooled is trained by the contrastive "
        "term only, as the features front end's dual-basis pooled head needs)"
    )
    shuffle_labels: bool = Field(False, description="control: train on permuted labels (must stay at chance)")


class SemanticStageConfig(FrozenConfig):
    """``neuroimagen train semantic``: EEG -> the generator's conditioning space."""

    stage: Literal["semantic"] = "semantic"
    trainer: TrainerConfig = TrainerConfig()
    data: StageDataConfig = StageDataConfig()
    model: SemanticModelConfig = SemanticModelConfig()
    features: SemanticFeaturesConfig | None = Field(
        None, description="set: the features front end (FeatureSemanticExtractor) instead of `model` "
        "(SemanticExtractor, DreamDiffusion's transformer encoder)"
    )
    fmri: FMRISemanticModelConfig = FMRISemanticModelConfig()
    loss: SemanticLossConfig = SemanticLossConfig()
    width: int | None = Field(
        None, gt=0, description="conditioning width; None: the targets' (768). Smaller: a fixed random "
        "orthonormal projection of the targets (for tiny generators)"
    )
    n_tokens: int | None = Field(None, gt=0, description="None: the targets' (77); fewer: the first n")


class MAEStageConfig(FrozenConfig):
    """``neuroimagen train mae``: masked signal pretraining on unlabelled windows."""

    stage: Literal["mae"] = "mae"
    trainer: TrainerConfig = TrainerConfig()
    data: StageDataConfig = StageDataConfig()
    model: MAEModelConfig = MAEModelConfig()


STAGE_CONFIGS: dict[str, type[FrozenConfig]] = {
    "mae": MAEStageConfig,
    "contrastive": ContrastiveStageConfig,
    "saliency": SaliencyStageConfig,
    "semantic": SemanticStageConfig,
}

#: the shipped stage presets: configs/train/<stage>-<preset>.yaml
STAGE_PRESETS = ("tiny", "demo", "paper")


def stage_preset_path(stage: str, preset: str) -> Path:
    """The shipped YAML of a stage preset (``configs/train/<stage>-<preset>.yaml``)."""
    from neuroimagen.stream.config import ConfigError, shipped_config_dirs

    name = f"{stage}-{preset}.yaml"
    for folder in shipped_config_dirs():
        if (folder / "train" / name).is_file():
            return folder / "train" / name
    shipped = sorted({f.stem[len(stage) + 1:] for folder in shipped_config_dirs()
                      for f in (folder / "train").glob(f"{stage}-*.yaml")})
    raise ConfigError(f"no shipped preset {name!r} (the {stage} presets shipped: {', '.join(shipped) or 'none'})")


def load_stage_config(stage: str, preset: str | Path = "demo", overrides: Iterable[str] = ()):
    """A stage's validated config: a shipped preset name or a YAML file, then ``key=value`` overrides.

    Raises
    ------
    ConfigError
        Unknown stage, preset or key (the message names it), or an invalid value.
    """
    from neuroimagen.stream.config import ConfigError

    if stage not in STAGE_CONFIGS:
        raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_CONFIGS)}")
    return load_preset(STAGE_CONFIGS[stage], stage, preset, STAGE_PRESETS, overrides)


def load_preset(cls: type[FrozenConfig], stage: str, preset: str | Path, shipped: Iterable[str],
                overrides: Iterable[str] = ()):
    """``cls`` validated from a shipped preset (``configs/train/<stage>-<preset>.yaml``) or a YAML file.

    The one preset reader of ``train <stage>`` and ``train bundle``: ``key=value`` overrides are
    applied before validation, and a file written for another stage is refused by name.
    """
    from neuroimagen.stream.config import ConfigError, _read_yaml, apply_overrides, validate_section

    shipped = tuple(shipped)
    path = Path(preset)
    if str(preset) in shipped:
        path = stage_preset_path(stage, str(preset))
    elif not path.is_file():
        raise ConfigError(f"preset {str(preset)!r} is neither a shipped {stage} preset ({', '.join(shipped)}) "
                          "nor a YAML file")
    data = apply_overrides(_read_yaml(path), overrides)
    if data.get("stage", stage) != stage:
        raise ConfigError(f"{path}: a preset for stage {data['stage']!r}, not {stage!r}")
    return validate_section(cls, data, f"train.{stage}")
