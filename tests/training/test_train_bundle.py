"""``neuroimagen train bundle --preset tiny``: every stage, the held-out eval, the bundle, resuming."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from neuroimagen.realtime.cli import main
from neuroimagen.training.models.bundle import load_bundle, verify_bundle

STAGES = ("contrastive", "saliency", "semantic", "generator/autoencoder", "generator/teacher",
          "generator/student", "generator/voting", "classifier", "eval")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    result = CliRunner().invoke(main, ["train", "bundle", "--preset", "tiny", "--out", str(out),
                                       "--json", str(out / "result.json")])
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.mark.slow
def test_tiny_preset_trains_every_part_and_writes_a_verified_bundle(built):
    out, output = built
    assert "not built yet" not in output
    for stage in STAGES:
        assert (out / stage / "done.json").is_file(), stage
    manifest = verify_bundle(out / "bundle")
    roles = {m.role for m in manifest.members}
    assert {"pixel_encoder", "saliency", "semantic", "unet", "autoencoder", "projection"} <= roles
    # provenance: the twin's preset and seed (from the preset), the command, the stage times
    assert manifest.simulated and manifest.provenance.twin.seed == 1
    assert manifest.provenance.twin.preset == "small"
    assert manifest.provenance.twin.config["n_classes"] == 3  # the whole twin config: the demo regenerates it
    # the distillation's frame term ran and measured the student-teacher distance on its held-out inits
    student = json.loads((out / "generator" / "student" / "done.json").read_text())
    assert student["endpoint_mse_before"] > 0 and student["endpoint_mse_after"] > 0
    assert student["config"]["frame"]["strength"] == 0.6 and student["config"]["teacher_steps"] == 4
    assert any(c.startswith("neuroimagen train bundle") for c in manifest.provenance.commands)
    # metrics of every method, from the held-out trials, with standard errors
    for name in ("student", "teacher_ddpm", "teacher_ddim", "autoencoder", "shuffled", "saliency", "class_mean"):
        for m in ("nway", "ssim"):
            assert 0.0 <= manifest.metrics[f"{name}_{m}"] <= 1.0
            assert f"{name}_{m}_se" in manifest.metrics
    for teacher in ("teacher_ddpm", "teacher_ddim"):  # the distillation's paired gap to each teacher
        assert manifest.metrics[f"gap_student_vs_{teacher}_ssim"] == pytest.approx(
            manifest.metrics["student_ssim"] - manifest.metrics[f"{teacher}_ssim"])
    # the class embeddings are the (cut, projected) targets the semantic extractor predicts
    bundle = load_bundle(out / "bundle")
    tokens = bundle.data("class_embeddings")["tokens"]
    assert tuple(tokens.shape) == (3, 4, 16)
    # `eval images` reproduces the recorded student figure from the written PNGs
    report = json.loads((out / "eval" / "student.json").read_text())
    assert report["n_pairs"] == manifest.metrics["eval_n_trials"]
    assert report["ssim"]["mean"] == pytest.approx(manifest.metrics["student_ssim"])
    assert (out / "eval" / "grid.png").is_file()
    # the shuffled control: each trial averaged over 5 derangements, each scored from its own PNGs
    assert manifest.metrics["shuffles"] == 5
    shuffles = [json.loads((out / "eval" / f"{name}.json").read_text())["n_way"]["mean"]
                for name in ("shuffled", "shuffled_1", "shuffled_2", "shuffled_3", "shuffled_4")]
    assert manifest.metrics["shuffled_nway"] == pytest.approx(sum(shuffles) / 5)


@pytest.mark.slow
def test_a_second_run_resumes_without_retraining(built):
    out, _ = built
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors") if "bundle" not in p.parts}
    result = CliRunner().invoke(main, ["train", "bundle", "--preset", "tiny", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "contrastive: done" in result.output and "semantic: done" in result.output
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors") if "bundle" not in p.parts}
    assert after == stamps
    verify_bundle(out / "bundle")


def test_another_twin_is_refused_by_name(tmp_path):
    twin = tmp_path / "twin"
    twin.mkdir()
    (twin / "twin.json").write_text(json.dumps({"config": {"preset": "small", "seed": 7}}))
    result = CliRunner().invoke(main, ["train", "bundle", "--preset", "tiny", "--twin", str(twin),
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "seed is 7, the preset says 1" in result.output


def test_unknown_preset_key_is_named(tmp_path):
    result = CliRunner().invoke(main, ["train", "bundle", "--preset", "tiny", "--param", "frame.strenght=0.5",
                                       "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "strenght" in result.output


def test_an_unknown_preset_and_another_stage_s_file_are_refused_by_name(tmp_path):
    result = CliRunner().invoke(main, ["train", "bundle", "--preset", "nope", "--out", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert "'nope' is neither a shipped bundle preset (tiny, demo, full) nor a YAML file" in result.output
    other = tmp_path / "saliency.yaml"
    other.write_text("stage: saliency\n")
    result = CliRunner().invoke(main, ["train", "bundle", "--preset", str(other), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert "a preset for stage 'saliency', not 'bundle'" in result.output


def test_a_missing_shipped_preset_file_lists_that_stage_s_presets():
    from neuroimagen.stream.config import ConfigError
    from neuroimagen.training.config import stage_preset_path

    with pytest.raises(ConfigError, match=r"no shipped preset 'bundle-nope.yaml' \(the bundle presets shipped: "
                                          r"demo, full, tiny\)"):
        stage_preset_path("bundle", "nope")


def test_every_shipped_preset_validates_and_the_full_preset_keeps_the_demo_frame_sizes():
    from neuroimagen.training.train.bundle_build import BUNDLE_PRESETS, load_bundle_preset

    cfgs = {name: load_bundle_preset(name) for name in BUNDLE_PRESETS}
    full, demo = cfgs["full"], cfgs["demo"]
    assert full.twin.preset == "full" and full.name != demo.name
    # the same image size, UNet widths and decoder, and the same LCM steps and guidance, so a full-twin
    # frame costs what the demo's does but for the latent convolutions and the pooled conditioning
    sizes = ("image_size", "ae_channels", "unet_channels", "cross_attention_dim", "attention_head_dim",
             "time_cond_proj_dim", "prior_images_per_class", "distill_w_max")
    assert {k: getattr(full.generator, k) for k in sizes} == {k: getattr(demo.generator, k) for k in sizes}
    assert (full.frame.num_inference_steps, full.frame.guidance_scale) == (
        demo.frame.num_inference_steps, demo.frame.guidance_scale)


@pytest.mark.slow
def test_a_finished_stage_with_another_config_is_refused(built, tmp_path):
    out, _ = built
    result = CliRunner().invoke(main, ["train", "bundle", "--preset", "tiny", "--out", str(out),
                                       "--param", "contrastive.params=[trainer.batch_size=4]"])
    assert result.exit_code != 0
    assert "finished with another contrastive config" in result.output


def test_the_bundle_gets_a_copy_of_the_semantic_extractor_with_its_token_temperature(tmp_path):
    import torch

    from neuroimagen.training.models.format import load_model, save_model
    from neuroimagen.training.models.semantic import FeatureSemanticExtractor, SemanticExtractor
    from neuroimagen.training.train.bundle_build import SemanticSpec, _semantic_for_bundle

    trained = save_model(FeatureSemanticExtractor(n_channels=4, n_times=20, bin_samples=5, n_classes=3,
                                                  n_tokens=2, width=8, token_rank=3), tmp_path / "trained")
    assert _semantic_for_bundle(SemanticSpec(), trained, tmp_path / "copy") == trained
    copy = _semantic_for_bundle(SemanticSpec(token_temperature=0.01), trained, tmp_path / "copy")
    assert copy != trained
    assert load_model(FeatureSemanticExtractor, copy).config.token_temperature == 0.01
    assert load_model(FeatureSemanticExtractor, trained).config.token_temperature is None  # left as trained
    x = torch.randn(2, 4, 20)
    torch.testing.assert_close(load_model(FeatureSemanticExtractor, copy)(x)[1],
                               load_model(FeatureSemanticExtractor, trained)(x)[1])
    other = save_model(SemanticExtractor(n_channels=4, n_times=20, patch_size=4, dim=8, depth=1, n_heads=2,
                                         n_tokens=2, width=8), tmp_path / "transformer")
    with pytest.raises(ValueError, match="needs a FeatureSemanticExtractor"):
        _semantic_for_bundle(SemanticSpec(token_temperature=0.01), other, tmp_path / "copy2")
