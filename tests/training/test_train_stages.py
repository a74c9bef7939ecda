"""Every stage trains on a tiny twin through the shared trainer and leaves a complete run folder."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from click.testing import CliRunner

from neuroimagen.training.config import load_stage_config
from neuroimagen.training.models.format import load_model
from neuroimagen.training.train.common import batch_indices, latest_checkpoint, run_stage
from neuroimagen.training.train.stages import build_stage


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    from helpers.twin import make_tiny_twin

    return make_tiny_twin(tmp_path_factory.mktemp("twin"))


def _run(stage, twin, out, params=(), preset="tiny", **kw):
    cfg = load_stage_config(stage, preset, params)
    return run_stage(build_stage(stage, cfg, twin, **kw), out, progress=False)


def test_batch_indices_cover_each_epoch_once_and_split_over_processes():
    seen = [batch_indices(20, 6, m, seed=1) for m in range(3)]  # 20 // 6 = 3 batches per epoch
    flat = torch.tensor([i for b in seen for i in b])
    assert len(flat.unique()) == 18
    assert not torch.equal(torch.as_tensor(batch_indices(20, 6, 3, seed=1)), torch.as_tensor(seen[0]))
    halves = [batch_indices(20, 6, 4, seed=1, rank=r, world_size=2) for r in range(2)]
    assert sorted([*halves[0], *halves[1]]) == sorted(batch_indices(20, 6, 4, seed=1))
    with pytest.raises(ValueError, match="does not split"):
        batch_indices(20, 5, 0, seed=1, world_size=2)


def test_mae_then_semantic_from_it_and_the_run_folder(twin, tmp_path):
    from neuroimagen.training.models.mae import MaskedEEGAutoencoder
    from neuroimagen.training.models.semantic import SemanticExtractor

    res = _run("mae", twin, tmp_path / "mae")
    run = tmp_path / "mae"
    assert res["step"] == 6
    for name in ("config.yaml", "run.json", "metrics.csv", "val_metrics.csv", "eval.json"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    assert all(float(r["loss"]) > 0 and float(r["samples_per_s"]) > 0 for r in rows)
    assert latest_checkpoint(run).name == "step-0000006"
    ev = json.loads((run / "eval.json").read_text())
    assert {"masked_mse", "mean_predictor_mse"} <= set(ev)
    mae = load_model(MaskedEEGAutoencoder, res["models"]["mae"])

    res = _run("semantic", twin, tmp_path / "sem", init_mae=res["models"]["mae"])
    # the semantic stage's first step starts from the MAE encoder: check the run really used it
    info = json.loads((tmp_path / "sem" / "run.json").read_text())
    assert info["stage"] == "semantic"
    sem = load_model(SemanticExtractor, res["models"]["semantic_extractor"])
    assert sem.config.n_tokens == 4 and sem.config.width == 32  # the tiny preset's conditioning shape
    assert sem.config.dim == mae.config.dim
    assert {"top1", "top5", "token_mse"} <= set(res["eval"])


def test_contrastive_pixel_then_saliency_with_samples(twin, tmp_path):
    from neuroimagen.training.models.saliency import SaliencyGenerator

    res = _run("contrastive", twin, tmp_path / "pix")
    enc = res["models"]["pixel_encoder"]
    res = _run("saliency", twin, tmp_path / "sal", encoder=enc)
    gen = load_model(SaliencyGenerator, res["models"]["saliency_generator"])
    assert gen.config.image_size == 16
    assert sorted(p.name for p in (tmp_path / "sal" / "samples").iterdir()) == ["step-0000006.png"]
    assert {"ssim", "pcc", "hemifield_acc"} <= set(res["eval"])
    # the held-out measurement reads the same folders
    from neuroimagen.training.eval.extractors import evaluate_extractors

    m = evaluate_extractors(twin, pixel_encoder=enc, saliency=res["models"]["saliency_generator"])
    assert m["n_test"] == 8 and m["saliency"]["decoded_by"] == "linear"
    assert {"ssim", "pcc", "class_mean_ssim", "class_mean_pcc", "hemifield_acc"} <= set(m["saliency"])
    assert 0 <= m["linear"]["hemifield_acc"] <= 1
    # fine-tuning the encoder through the generator exports it too
    res = _run("saliency", twin, tmp_path / "sal-ft", encoder=enc, params=["loss.encoder_lr_ratio=0.1"])
    assert "pixel_encoder" in res["models"]


def test_nice_encoder_trains_against_the_twin_targets(twin, tmp_path):
    from neuroimagen.training.models.nice import NICEEncoder

    res = _run("contrastive", twin, tmp_path / "nice", params=["encoder=nice", "nice.proj_dim=768"])
    model = load_model(NICEEncoder, res["models"]["nice_encoder"])
    assert model.config.proj_dim == 768 and "top1" in res["eval"]
    with pytest.raises(ValueError, match="proj_dim"):
        _run("contrastive", twin, tmp_path / "bad", params=["encoder=nice", "nice.proj_dim=16"])


def test_resuming_with_another_config_is_refused(twin, tmp_path):
    _run("semantic", twin, tmp_path / "r", params=["trainer.max_steps=3"])
    with pytest.raises(ValueError, match="differs"):
        _run("semantic", twin, tmp_path / "r", params=["trainer.max_steps=4", "trainer.lr=0.5"])


def test_fmri_variants_train_above_chance_on_synthetic_voxels(twin, tmp_path):
    """Voxels = linear mixing of the twin's stimulus factors + noise; pixel and semantic learn the class."""
    from neuroimagen.training.data.twin.voxels import make_voxel_twin

    make_voxel_twin(twin, n_voxels=128, n_repeats=4, class_snr=0.6, layout_snr=0.6, seed=0)
    common = ["trainer.max_steps=60", "trainer.batch_size=32", "trainer.lr=3e-3", "trainer.log_every=20",
              "trainer.checkpoint_every=60"]
    pix = _run("contrastive", twin, tmp_path / "fpix", params=common, modality="fmri")
    sem = _run("semantic", twin, tmp_path / "fsem", params=common, modality="fmri")
    chance = 1 / 4
    # val: 4 unseen images x 4 repeats; class chance is 1/4
    assert pix["eval"]["class_centroid_acc"] >= 2 * chance, pix["eval"]
    assert sem["eval"]["top1"] >= 2 * chance, sem["eval"]


def test_train_cli_runs_a_stage_and_rejects_unknown_keys(twin, tmp_path):
    from neuroimagen.realtime.cli import main

    out = tmp_path / "cli"
    result = CliRunner().invoke(main, ["train", "mae", str(twin), "--out", str(out), "--preset", "tiny",
                                       "--param", "trainer.max_steps=2", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "not built yet" not in result.output
    assert json.loads((tmp_path / "r.json").read_text())["step"] == 2
    bad = CliRunner().invoke(main, ["train", "mae", str(twin), "--out", str(out), "--preset", "tiny",
                                    "--param", "model.dimm=3"])
    assert bad.exit_code == 2 and "did you mean 'dim'" in bad.output
    for stage in ("mae", "contrastive", "saliency", "semantic"):
        help_out = CliRunner().invoke(main, ["train", stage, "--help"]).output
        assert "not built yet" not in help_out and "--preset" in help_out


def test_semantic_features_front_end_fits_in_closed_form_and_keeps_the_better(twin, tmp_path):
    """The features preset: ridge fitted in closed form, then fine-tuned; the export is the better on val."""
    from neuroimagen.training.eval.extractors import evaluate_extractors
    from neuroimagen.training.models.semantic import FeatureSemanticExtractor

    params = ["features.bin_samples=20", "features.ridge_alphas=[10.0,1000.0]", "loss.pooled_l2_weight=0",
              "trainer.max_steps=4", "trainer.lr=0.1"]
    res = _run("semantic", twin, tmp_path / "feat", params=params)
    ev = res["eval"]
    assert ev["closed_form_alpha"] in (10.0, 1000.0)
    # a learning rate of 0.1 wrecks the fit, so the closed form is what was saved
    assert ev["kept_closed_form"] == 1.0 and ev["top1"] <= ev["closed_form_top1"]
    model = load_model(FeatureSemanticExtractor, res["models"]["semantic_extractor"])
    assert model.config.n_classes == 4 and model.config.channels is None
    with pytest.raises(ValueError, match="init-mae"):
        _run("semantic", twin, tmp_path / "bad", params=params, init_mae=tmp_path)
    # the held-out measurement loads either semantic class and reports the baseline beside it
    out = evaluate_extractors(twin, semantic=res["models"]["semantic_extractor"])
    assert 0 <= out["semantic"]["top1"] <= 1 and "top1" in out["linear"]


def test_saliency_features_path_fits_its_own_encoder_in_closed_form(twin, tmp_path):
    """features: a FeaturePixelEncoder + linear-head generator in closed form; the GAN residual on top."""
    from neuroimagen.training.eval.extractors import evaluate_extractors
    from neuroimagen.training.models.pixel import FeaturePixelEncoder
    from neuroimagen.training.models.saliency import SaliencyGenerator

    params = ["generator.linear_head=true", "features.n_components=8", "features.ridge_alphas=[100.0]"]
    res = _run("saliency", twin, tmp_path / "salf", params=params)
    ev = res["eval"]
    assert ev["closed_form_alpha"] == 100.0 and ev["kept_closed_form"] in (0.0, 1.0)
    enc = load_model(FeaturePixelEncoder, res["models"]["pixel_encoder"])
    gen = load_model(SaliencyGenerator, res["models"]["saliency_generator"])
    assert enc.config.feature_dim == 8 and gen.config.linear_head
    m = evaluate_extractors(twin, pixel_encoder=res["models"]["pixel_encoder"],
                            saliency=res["models"]["saliency_generator"])
    # the exported pair is the closed form or the GAN, whichever was better on val
    def score(pre):
        return ev[f"{pre}ssim"] + ev[f"{pre}pcc"] + ev[f"{pre}hemifield_acc"]

    assert (score("closed_form_") >= score("")) == bool(ev["kept_closed_form"])
    assert 0 < m["saliency"]["ssim"] <= 1
    with pytest.raises(ValueError, match="drop --encoder"):
        _run("saliency", twin, tmp_path / "bad", params=params, encoder=res["models"]["pixel_encoder"])
    with pytest.raises(ValueError, match="linear_head"):
        _run("saliency", twin, tmp_path / "bad2", params=params[1:])


def test_mae_interpolation_baseline_draws_lines_across_masked_spans():
    from neuroimagen.training.train.stages import interpolate_masked

    x = torch.stack([torch.arange(8.0), 10 - 2 * torch.arange(8.0)])[None]  # two linear channels
    visible = torch.tensor([[False, True, False, False, True, True, False, False]])
    out = interpolate_masked(x, visible)
    # between visible samples a line is reproduced exactly; beyond the last/first it is held flat
    torch.testing.assert_close(out[0, :, 1:6], x[0, :, 1:6])
    torch.testing.assert_close(out[0, :, 0], x[0, :, 1])
    torch.testing.assert_close(out[0, :, 6:], x[0, :, 5:6].expand(2, 2))
