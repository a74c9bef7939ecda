"""The demo generator's stages (resumable) and the bundle assembly, on a tiny twin with tiny budgets."""

from __future__ import annotations

import json

import pytest
import torch

from neuroimagen.training.models.bundle import load_bundle
from neuroimagen.training.models.format import save_model
from neuroimagen.training.models.latent import BrainToLatent
from neuroimagen.training.train.generator import GeneratorConfig, assemble_bundle, build_generator


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    from neuroimagen.training.config import TwinConfig
    from neuroimagen.training.data.twin import make_twin

    out = tmp_path_factory.mktemp("twin")
    make_twin(out, TwinConfig(seed=1, n_classes=2, n_images_per_class=10, n_subjects=1, image_size_px=32))
    return out


@pytest.mark.slow
def test_stages_resume_and_the_bundle_assembles(twin, tmp_path):
    cfg = GeneratorConfig(image_size=32, ae_channels=8, unet_channels=(8, 16), cross_attention_dim=16,
                          attention_head_dim=4, time_cond_proj_dim=8, ae_steps=2, unet_steps=2,
                          distill_steps=2, voting_epochs=1, batch_size=4)
    work = tmp_path / "gen"
    first = build_generator(twin, work, cfg)
    assert set(first) == {"autoencoder", "teacher", "student", "voting"}
    stamps = {p: p.stat().st_mtime_ns for p in work.rglob("*.safetensors")}
    second = build_generator(twin, work, cfg)  # every stage done: nothing is retrained
    assert second == first
    assert {p: p.stat().st_mtime_ns for p in work.rglob("*.safetensors")} == stamps
    # a finished stage trained with another config is refused by name, not silently reused
    with pytest.raises(ValueError, match=r"student: finished with another generator config \(distill_steps was 2, now 3"):
        build_generator(twin, work, cfg.model_copy(update={"distill_steps": 3}))
    with pytest.raises(ValueError, match=r"autoencoder: finished .*ae_channels was 8, now 16"):
        build_generator(twin, work, cfg.model_copy(update={"ae_channels": 16}))
    # an extractor folder stands in for the extractors issue's outputs (same model format)
    meta = json.loads((twin / "twin.json").read_text())
    ext = save_model(BrainToLatent(n_channels=len(meta["ch_names"]), n_times=meta["n_times"]), tmp_path / "ext")
    manifest = assemble_bundle(tmp_path / "bundle", twin_dir=twin, generator_dir=work,
                               extractors={"latent_regressor": ext}, metrics={"frame_p99_ms": 1.0},
                               commands=("pytest",))
    assert manifest.provenance.twin.seed == 1 and manifest.simulated
    assert manifest.stream.ch_names == tuple(meta["ch_names"])
    assert manifest.preprocessing.normalization.mode == "dataset"
    assert len(manifest.class_names) == 2
    bundle = load_bundle(tmp_path / "bundle")
    frame = bundle.frame()
    tokens = bundle.data("class_embeddings")["tokens"]
    out = frame(torch.rand(2, 3, 32, 32), tokens)
    assert out.shape == (2, 3, 32, 32)


def test_prior_images_are_the_twins_classes_drawn_anew(twin):
    """The image prior: the twin's renderer, its classes and image statistics, never one of its images."""
    from neuroimagen.training.train.generator import load_twin_images, render_prior_images

    meta = json.loads((twin / "twin.json").read_text())
    images, labels = render_prior_images(meta, 6, 32, seed=3)
    assert images.shape == (12, 3, 32, 32) and images.dtype == torch.float32
    assert labels.tolist() == [0] * 6 + [1] * 6
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    again, _ = render_prior_images(meta, 6, 32, seed=3)
    assert torch.equal(images, again)  # seeded
    other, _ = render_prior_images(meta, 6, 32, seed=4)
    assert not torch.equal(images, other)
    twin_images = load_twin_images(twin, 32)["images"]
    # no prior image is one of the twin's (held-out ones included): the smallest distance is far from 0
    dist = torch.cdist(images.flatten(1), twin_images.flatten(1))
    assert float(dist.min()) > 1.0
    # same renderer and encoding: the mean grey level matches the twin's within a few percent
    assert abs(float(images.mean()) - float(twin_images.mean())) < 0.05


def test_learning_rate_decays_by_steps_or_by_the_stage_budget_whichever_is_further(monkeypatch):
    from neuroimagen.training.train import generator as gen

    clock = [100.0]
    monkeypatch.setattr(gen.time, "monotonic", lambda: clock[0])
    cfg = GeneratorConfig(max_minutes_per_stage=10, stage_minutes={"teacher": 2})
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    set_lr = gen._cosine_lr(cfg, opt, 1.0, n_steps=100, stage="teacher")
    set_lr(0)
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)
    set_lr(50)  # half the steps, no time spent
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
    clock[0] += 60.0  # half the teacher's own 2-minute budget, a tenth of the steps
    set_lr(10)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
    clock[0] += 120.0  # past the budget: decayed to zero, and the stage is over
    set_lr(20)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    over = gen._budget(cfg, "autoencoder")  # no override: max_minutes_per_stage
    clock[0] += 9 * 60
    assert not over()
    clock[0] += 2 * 60
    assert over()


def test_pooled_conditioning_reaches_the_unet_without_its_cross_attention():
    """With ``unet_pooled_conditioning`` the conditioning also enters the time embedding: silence every
    cross-attention output and the UNet still answers to it; without the option it no longer does."""
    from neuroimagen.training.train.generator import tiny_unet

    def answers_without_cross_attention(pooled: bool) -> bool:
        torch.manual_seed(0)
        cfg = GeneratorConfig(image_size=16, unet_channels=(8, 16), cross_attention_dim=16, attention_head_dim=4,
                              unet_pooled_conditioning=pooled)
        unet = tiny_unet(cfg).eval()
        with torch.no_grad():
            for name, p in unet.named_parameters():
                if ".attn2.to_out." in name:
                    p.zero_()
            x, t = torch.randn(1, 4, 4, 4), torch.tensor([500])
            a, b = (unet(x, t, encoder_hidden_states=torch.randn(1, 3, 16)).sample for _ in range(2))
        return not torch.allclose(a, b)

    assert answers_without_cross_attention(True)
    assert not answers_without_cross_attention(False)


def test_min_snr_weights_leave_the_noisy_steps_and_damp_the_clean_ones():
    from neuroimagen.training.train.generator import min_snr_weights, noise_scheduler

    sched = noise_scheduler()
    snr = sched.alphas_cumprod / (1 - sched.alphas_cumprod)
    w = min_snr_weights(sched, 5.0)
    assert w.shape == (sched.config.num_train_timesteps,)
    assert torch.equal(w[snr <= 5.0], torch.ones(int((snr <= 5.0).sum())))  # noise-dominated: unchanged
    clean = snr > 5.0
    assert clean[0] and not clean[-1]  # the first (least noisy) steps are damped, the last are not
    assert torch.allclose(w[clean] * snr[clean], torch.full_like(w[clean], 5.0))
    assert bool((w[1:] >= w[:-1]).all())  # less damping as the noise grows
