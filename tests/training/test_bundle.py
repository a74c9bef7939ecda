"""The model bundle: write, verify, load; tampering, deletion and a foreign stream are refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from diffusers import AutoencoderTiny, LCMScheduler, UNet2DConditionModel
from helpers.diffusion import tiny_taesd, tiny_unet

from neuroimagen.realtime.cli import main
from neuroimagen.stream.config import (
    NormalizationConfig,
    PreprocessingConfig,
    StreamConfig,
    WindowingConfig,
)
from neuroimagen.stream.montage import montage_ch_names
from neuroimagen.stream.pipeline import WindowPipeline
from neuroimagen.stream.preprocessing import NormStats
from neuroimagen.training.models.bundle import (
    MANIFEST_NAME,
    BundleError,
    FrameSettings,
    Provenance,
    StreamContract,
    TwinProvenance,
    load_bundle,
    read_manifest,
    verify_bundle,
    write_bundle,
)
from neuroimagen.training.models.format import WEIGHTS_NAME, save_model
from neuroimagen.training.models.img2img import ConditioningProjection
from neuroimagen.training.models.latent import BrainToLatent

CH = montage_ch_names("brainproducts-RNP-BA-128")
N_CH = len(CH)
N_CLASSES, WIDTH = 3, 24


def _write(out, *, n_channels=N_CH, n_times=440, external=None, **kw):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    pre = PreprocessingConfig(normalization=NormalizationConfig(mode="dataset"))
    sched = LCMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    members = {
        "latent": ("latent_regressor", BrainToLatent(n_channels=n_channels, n_times=n_times, latent_size=8)),
        "unet": ("unet", tiny_unet(cross_attention_dim=16, time_cond_proj_dim=8)),
        "autoencoder": ("autoencoder", tiny_taesd()),
        "projection": ("projection", ConditioningProjection(WIDTH, 16, n_tokens=5)),
    }
    return write_bundle(
        out,
        name="test-bundle",
        stream=StreamContract(ch_names=tuple(CH), sfreq_hz=1000.0),
        preprocessing=pre,
        windowing=WindowingConfig(mode="marker", n_times=440),
        norm_stats=NormStats(rng.normal(0, 1e-6, len(CH)), rng.uniform(1e-6, 2e-6, len(CH))),
        members=members,
        external=external,
        data={"class_embeddings": {"tokens": torch.randn(N_CLASSES, 5, WIDTH), "pooled": torch.randn(N_CLASSES, WIDTH)}},
        class_names=[f"class{i}" for i in range(N_CLASSES)],
        scheduler=sched,
        generator=FrameSettings(unet="unet", autoencoder="autoencoder", projection="projection",
                                strength=0.7, num_inference_steps=2),
        provenance=Provenance(data="twin", seed=0, twin=TwinProvenance(preset="small", seed=0, version="1"),
                              commands=("neuroimagen train bundle --preset demo",)),
        metrics={"nway_top1": 0.5},
        **kw,
    )


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "bundle"
    _write(out)
    return out


@pytest.fixture
def copy(bundle_dir, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(bundle_dir, dst)
    return dst


def test_round_trip_gives_the_stream_sections_and_working_models(bundle_dir):
    b = load_bundle(bundle_dir)
    m = b.manifest
    assert m.simulated and m.provenance.twin.preset == "small"
    # the live chain comes from the bundle: contract, preprocessing, windowing, norm stats
    cfg = b.stream_config(StreamConfig())
    assert cfg.contract.ch_names == tuple(CH) and cfg.contract.sfreq_hz == 1000.0
    assert cfg.preprocessing.normalization.mode == "dataset"
    assert cfg.windowing.mode == "marker"
    stats = b.norm_stats()
    assert isinstance(stats, NormStats) and stats.mean.shape == (len(CH),)
    pipeline = WindowPipeline(cfg, stats, eeg_name="no-such-stream")  # built, not started
    assert pipeline.window_cfg == m.preprocessing and pipeline.norm_stats is stats
    # every member loads strictly and the generator frame runs from the manifest alone
    assert isinstance(b.load_model("unet"), UNet2DConditionModel)
    assert isinstance(b.load_role("autoencoder"), AutoencoderTiny)
    frame = b.frame()
    assert isinstance(frame.scheduler, LCMScheduler) and frame.strength == 0.7
    emb = b.data("class_embeddings")
    out = frame(torch.rand(2, 3, 16, 16), emb["tokens"][:2])
    assert out.shape == (2, 3, 16, 16)
    latent = b.load_model("latent")(torch.randn(1, len(CH), 440))
    assert latent.shape == (1, 4, 8, 8)
    # the manifest records shapes and dtypes of every tensor
    unet_weights = next(f for mm in m.members if mm.name == "unet" for f in mm.files if f.path.endswith(".safetensors"))
    conv_in = unet_weights.tensors["conv_in.weight"]
    assert conv_in.shape == (16, 4, 3, 3) and conv_in.dtype == "F32"


def test_one_flipped_byte_is_refused_naming_the_file(copy):
    path = copy / "unet" / WEIGHTS_NAME
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"unet/diffusion_pytorch_model\.safetensors: modified \(sha256"):
        verify_bundle(copy)
    with pytest.raises(BundleError, match="modified"):
        load_bundle(copy)


def test_deleted_file_is_refused_naming_it(copy):
    (copy / "class_embeddings.safetensors").unlink()
    with pytest.raises(BundleError, match=r"class_embeddings\.safetensors: missing"):
        verify_bundle(copy)


def test_unlisted_file_is_refused(copy):
    (copy / "unet" / "extra.bin").write_bytes(b"x")
    with pytest.raises(BundleError, match=r"unet/extra\.bin: not in the manifest"):
        verify_bundle(copy)


def test_edited_manifest_contract_is_refused(copy):
    data = json.loads((copy / MANIFEST_NAME).read_text())
    data["stream"]["ch_names"] = data["stream"]["ch_names"][:64]
    (copy / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="norm_stats have 128 mean / 128 std values for 64 channels"):
        verify_bundle(copy)


def test_a_stream_with_another_channel_set_is_refused_by_name(bundle_dir):
    b = load_bundle(bundle_dir)
    other = [c for c in CH if c not in ("O1", "Oz")] + ["EXG1"]
    with pytest.raises(BundleError, match=r"missing.*O1.*Oz|missing.*Oz.*O1") as info:
        b.check_stream(other, 1000.0, ["V"] * len(other))
    assert "test-bundle" in str(info.value)
    b.check_stream(list(reversed(CH)), 1000.0, ["uV"] * len(CH))  # same set, any order, any unit: fine


def test_models_that_take_another_stream_are_refused(tmp_path):
    with pytest.raises(BundleError, match="latent: takes 64 channels, the stream contract has 128"):
        _write(tmp_path / "b", n_channels=64)
    with pytest.raises(BundleError, match="latent: takes windows of 512 samples"):
        _write(tmp_path / "c", n_times=512)
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()  # nothing half-written


def test_never_writes_into_an_existing_bundle(bundle_dir):
    with pytest.raises(BundleError, match="not empty"):
        _write(bundle_dir)


def test_external_base_model_is_referenced_not_copied(tmp_path):
    base = save_model(tiny_taesd(seed=1), tmp_path / "sd" / "vae")
    out = tmp_path / "b"
    m = _write(out, external={"base_vae": ("base_autoencoder", base, "diffusers:AutoencoderTiny")})
    assert not (out / "base_vae").exists()
    ext = m.external[0]
    assert ext.path == str(base.resolve()) and {f.path for f in ext.files} == {"config.json", WEIGHTS_NAME}
    assert isinstance(load_bundle(out).load_model("base_vae"), AutoencoderTiny)
    cfg = base / "config.json"
    cfg.write_text(cfg.read_text().replace("\n", "\n ", 1))
    with pytest.raises(BundleError, match=r"external base_vae .*config\.json: modified"):
        verify_bundle(out)
    verify_bundle(out, external=False)  # the bundle's own files are intact


def test_cli_verify_and_info(bundle_dir, copy):
    runner = CliRunner()
    ok = runner.invoke(main, ["bundle", "verify", str(bundle_dir)])
    assert ok.exit_code == 0, ok.output
    assert "OK" in ok.output and "SIMULATED" in ok.output
    (copy / "projection" / WEIGHTS_NAME).unlink()
    bad = runner.invoke(main, ["bundle", "verify", str(copy)])
    assert bad.exit_code == 1
    assert "projection/diffusion_pytorch_model.safetensors: missing" in bad.output
    info = runner.invoke(main, ["bundle", "info", str(bundle_dir)])
    assert info.exit_code == 0, info.output
    for text in ("unet", "autoencoder", "SIMULATED EEG", "dataset", "nway_top1", "strength"):
        assert text in info.output, text
    js = runner.invoke(main, ["bundle", "info", str(bundle_dir), "--json"])
    desc = json.loads(js.output)
    assert desc["stream"]["n_channels"] == 128 and desc["simulated"] is True
    assert read_manifest(bundle_dir).name == desc["name"]
