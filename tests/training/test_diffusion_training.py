"""The generator's training steps on tiny models: fine-tuning overfits, distillation moves the student
towards the teacher, the latent regressor and the voting encoder learn."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler, LCMScheduler
from helpers.diffusion import tiny_taesd, tiny_unet

from neuroimagen.training.models.img2img import ConditioningProjection, guidance_scale_embedding
from neuroimagen.training.models.latent import BrainToLatent
from neuroimagen.training.models.voting import ImageEncoder, vote
from neuroimagen.training.train.diffusion import (
    CROSS_ATTENTION_KEY,
    DreamDiffusionFinetuner,
    FrameEndpoints,
    LCMDistiller,
    apply_finetune_checkpoint,
    ddim_solve,
    make_student,
    save_finetune_checkpoint,
    train_brain_to_latent,
    train_image_encoder,
)

SCHED = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
N_CH, N_T, N_TOK, WIDTH, CROSS = 8, 40, 5, 12, 16


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is faster than two on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class _TinyEncoder(torch.nn.Module):
    """eeg (B, n_channels, n_times) -> (tokens (B, n_tokens, width), pooled (B, width))."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(N_CH * N_T, N_TOK * WIDTH)

    def forward(self, eeg):
        tokens = self.lin(eeg.flatten(1)).view(-1, N_TOK, WIDTH)
        return tokens, tokens.mean(1)


def test_finetuning_overfits_a_fixed_batch_and_touches_only_cross_attention(tmp_path):
    prediction = "epsilon"
    torch.manual_seed(0)
    unet = tiny_unet(cross_attention_dim=CROSS, cross_attention_first=True)
    encoder = _TinyEncoder()
    proj = ConditioningProjection(WIDTH, CROSS, N_TOK, learned_null=True)
    base = {k: v.clone() for k, v in unet.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    eeg, latents = torch.randn(4, N_CH, N_T, generator=g), torch.randn(4, 4, 4, 4, generator=g)
    noise, t = torch.randn(4, 4, 4, 4, generator=g), torch.tensor([50, 300, 600, 900])
    tuner = DreamDiffusionFinetuner(encoder, proj, unet, DDPMScheduler(**SCHED, prediction_type=prediction),
                                    lr=1e-2, lr_encoder=1e-2, null_drop=0.0)
    losses = [tuner.step(eeg, latents, noise=noise, timesteps=t) for _ in range(80)]
    # only the cross-attention, projection and encoder learn, yet the fixed batch is fitted
    assert losses[-1] < 0.4 * losses[0], losses[::10]
    # everything but the cross-attention is frozen
    after = unet.state_dict()
    changed = {k for k in base if not torch.equal(base[k], after[k])}
    assert changed and all(CROSS_ATTENTION_KEY in k for k in changed)
    # the checkpoint holds only what changed, and restores it onto the base UNet
    ckpt = save_finetune_checkpoint(tmp_path / "ckpt", encoder, proj, unet)
    from safetensors.torch import load_file

    assert set(load_file(str(ckpt / "unet_cross_attention.safetensors"))) == {
        k for k in after if CROSS_ATTENTION_KEY in k
    }
    fresh = tiny_unet(cross_attention_dim=CROSS, cross_attention_first=True)
    apply_finetune_checkpoint(fresh, ckpt)
    assert all(torch.equal(fresh.state_dict()[k], after[k]) for k in after)


def test_v_prediction_finetuning_regresses_the_velocity():
    unet = tiny_unet(cross_attention_dim=CROSS, sd2=True)
    ddpm = DDPMScheduler(**SCHED, prediction_type="v_prediction")
    tuner = DreamDiffusionFinetuner(_TinyEncoder(), ConditioningProjection(WIDTH, CROSS, N_TOK), unet, ddpm,
                                    null_drop=0.0)
    g = torch.Generator().manual_seed(0)
    eeg, latents, noise = torch.randn(2, N_CH, N_T, generator=g), torch.randn(2, 4, 4, 4, generator=g), torch.randn(2, 4, 4, 4, generator=g)
    t = torch.tensor([100, 700])
    unet.eval()
    tuner.encoder.eval()
    loss = tuner.loss(eeg, latents, noise=noise, timesteps=t)
    with torch.no_grad():
        embeds = tuner.projection(tuner.encoder(eeg)[0])
        pred = unet(ddpm.add_noise(latents, noise, t), t, encoder_hidden_states=embeds).sample
    velocity = ddpm.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1) * noise - (
        1 - ddpm.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1) * latents
    assert torch.allclose(loss, ((pred - velocity) ** 2).mean(), atol=1e-6)


def test_finetune_checkpoint_for_another_unet_is_refused(tmp_path):
    unet = tiny_unet(cross_attention_dim=CROSS)
    ckpt = save_finetune_checkpoint(tmp_path / "c", _TinyEncoder(), ConditioningProjection(WIDTH, CROSS, N_TOK), unet)
    with pytest.raises(ValueError, match="cross-attention tensors do not match"):
        apply_finetune_checkpoint(tiny_unet(cross_attention_dim=CROSS * 2), ckpt)


def _student_error(student, teacher, ddpm, latents, embeds, n_ddim, seed):
    """Mean squared distance of the 1-step student to the teacher's 25-step ODE solution, same start."""
    sch = LCMScheduler(**SCHED, original_inference_steps=n_ddim)
    sch.set_timesteps(1, strength=0.8)
    t0 = sch.timesteps[:1]
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
    noisy = sch.add_noise(latents, noise, t0.repeat(len(latents)))
    ref = ddim_solve(teacher, noisy, int(t0), embeds, ddpm, n_steps=25)
    w = guidance_scale_embedding(torch.zeros(len(latents)), student.config.time_cond_proj_dim)
    with torch.no_grad():
        out = sch.step(student(noisy, t0, encoder_hidden_states=embeds, timestep_cond=w).sample, t0, noisy)
    return float(((out.denoised - ref) ** 2).mean())


@pytest.mark.slow
def test_distilled_student_is_closer_to_the_teacher_on_held_out_seeds():
    teacher, ddpm, n_ddim = tiny_unet(cross_attention_dim=CROSS), DDPMScheduler(**SCHED), 10
    student = make_student(teacher, time_cond_proj_dim=8)
    g = torch.Generator().manual_seed(0)
    latents, embeds = torch.randn(64, 4, 8, 8, generator=g), torch.randn(64, 7, CROSS, generator=g)
    held_lat = torch.randn(8, 4, 8, 8, generator=torch.Generator().manual_seed(99))
    held_emb = torch.randn(8, 7, CROSS, generator=torch.Generator().manual_seed(98))
    before = [_student_error(student, teacher, ddpm, held_lat, held_emb, n_ddim, s) for s in (5, 6)]
    distiller = LCMDistiller(teacher, student, ddpm, num_ddim_timesteps=n_ddim, lr=1e-3, loss="mse", ema_decay=0.9)
    for _ in range(60):
        idx = torch.randint(0, 64, (16,), generator=g)
        distiller.step(latents[idx], embeds[idx], generator=g)
    after = [_student_error(student, teacher, ddpm, held_lat, held_emb, n_ddim, s) for s in (5, 6)]
    for b, a in zip(before, after, strict=True):
        assert a < 0.75 * b, (before, after)


@pytest.mark.slow
def test_the_frame_term_brings_the_students_frame_to_the_teachers_on_held_out_inits():
    """FrameEndpoints: the 2-step LCM frame regressed on the guided 25-step DDIM frame of the same inits."""
    from diffusers import DDIMScheduler

    from neuroimagen.training.models.img2img import Img2ImgFrame

    teacher, ddpm = tiny_unet(cross_attention_dim=CROSS), DDPMScheduler(**SCHED)
    student = make_student(teacher, time_cond_proj_dim=8)
    proj = ConditioningProjection(WIDTH, CROSS, N_TOK, learned_null=True)
    vae = tiny_taesd()
    g = torch.Generator().manual_seed(0)
    t_frame = Img2ImgFrame(teacher, vae, DDIMScheduler.from_config(ddpm.config), proj, strength=0.7,
                           num_inference_steps=25, guidance_scale=3.0)
    s_frame = Img2ImgFrame(student, vae, LCMScheduler(**SCHED, original_inference_steps=10), None, strength=0.7,
                           num_inference_steps=2, guidance_scale=3.0)
    student.train().requires_grad_(True)
    with torch.no_grad():
        embeds = proj(torch.randn(72, N_TOK, WIDTH, generator=g))
    ends = FrameEndpoints(t_frame, s_frame, torch.randn(72, 4, 8, 8, generator=g), embeds, g)
    assert len(ends) == 72 and len(t_frame.timesteps()) == 17 and len(s_frame.timesteps()) == 2
    held, fit = torch.arange(8), torch.arange(8, 72)
    before = ends.distance(held)
    distiller = LCMDistiller(teacher, student, ddpm, num_ddim_timesteps=10, lr=1e-3, loss="mse", ema_decay=0.0)
    for _ in range(60):
        idx = fit[torch.randint(0, len(fit), (16,), generator=g)]
        distiller.step(torch.randn(16, 4, 8, 8, generator=g), embeds[idx], generator=g,
                       extra_loss=lambda idx=idx: ends.loss(idx, g))
    after = ends.distance(held)
    assert after < 0.5 * before, (before, after)


def test_student_starts_as_the_teacher():
    teacher = tiny_unet(cross_attention_dim=CROSS)
    student = make_student(teacher, time_cond_proj_dim=8)
    x, e = torch.randn(2, 4, 8, 8), torch.randn(2, 3, CROSS)
    w = guidance_scale_embedding(torch.tensor([0.0, 3.0]), 8)
    with torch.no_grad():
        assert torch.allclose(student(x, 500, encoder_hidden_states=e, timestep_cond=w).sample,
                              teacher(x, 500, encoder_hidden_states=e).sample, atol=1e-6)


def test_brain_to_latent_regression_beats_the_mean_on_held_out_trials():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N_CH, 4 * 4 * 4, generator=g)
    eeg = torch.randn(300, N_CH, 45, generator=g)
    latents = (eeg.mean(-1) @ w).view(-1, 4, 4, 4) + 0.1 * torch.randn(300, 4, 4, 4, generator=g)
    torch.manual_seed(0)
    model = BrainToLatent(n_channels=N_CH, n_times=45, latent_size=4, hidden=16)
    train_brain_to_latent(model, eeg[:250], latents[:250], n_epochs=40, batch_size=125, lr=1e-2)
    with torch.no_grad():
        mse = float(((model(eeg[250:]) - latents[250:]) ** 2).mean())
    baseline = float(((latents[:250].mean(0) - latents[250:]) ** 2).mean())
    assert mse < 0.5 * baseline, (mse, baseline)


def test_voting_encoder_learns_the_class_targets_and_vote_picks_the_right_class():
    g = torch.Generator().manual_seed(0)
    k, width = 3, 16
    pooled = torch.nn.functional.normalize(torch.randn(k, width, generator=g), dim=-1)
    colours = torch.eye(3)  # class c: a noisy image dominated by colour channel c

    def images(labels):
        base = colours[labels][:, :, None, None].expand(-1, 3, 16, 16)
        return (0.6 * base + 0.4 * torch.rand(len(labels), 3, 16, 16, generator=g)).clamp(0, 1)

    labels = torch.arange(120) % k
    torch.manual_seed(0)
    enc = ImageEncoder(width=width, channels=(8, 16))
    fit = train_image_encoder(enc, images(labels), labels, pooled, n_epochs=15, batch_size=30, lr=3e-3)
    assert fit.losses[-1] < 0.5 * fit.losses[0]
    # candidates: one per class for each of 4 samples; the predicted semantics is class (i % 3)
    cands = torch.stack([images(torch.full((4,), c)) for c in range(k)])  # (K, B, 3, H, W)
    target = torch.arange(4) % k
    best, index = vote(enc, cands, pooled[target])
    assert torch.equal(index, target)
    assert torch.equal(best[1], cands[1, 1])
