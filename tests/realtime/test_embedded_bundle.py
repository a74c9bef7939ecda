"""The shipped embedded default bundle: present, intact, simulated, and what `demo` picks by default."""

from __future__ import annotations

import pytest

from neuroimagen.realtime.embedded import embedded_bundle
from neuroimagen.training.models.bundle import load_bundle, verify_bundle

pytestmark = pytest.mark.skipif(embedded_bundle() is None, reason="this install has no embedded bundle")


def test_the_embedded_bundle_verifies_and_says_it_is_simulated():
    manifest = verify_bundle(embedded_bundle())
    assert manifest.simulated and manifest.provenance.twin is not None
    assert any(c.startswith("neuroimagen train bundle --preset demo") for c in manifest.provenance.commands)
    # every figure the issue asks for is recorded, from held-out trials
    for key in ("student_nway", "teacher_nway", "autoencoder_nway", "class_mean_nway", "saliency_nway",
                "shuffled_nway", "student_ssim", "margin_student_vs_autoencoder"):
        assert key in manifest.metrics, key
    assert manifest.metrics["eval_n_trials"] >= 40


def test_the_embedded_bundle_runs_one_frame():
    import torch

    bundle = load_bundle(embedded_bundle())
    roles = {m.role: m.name for m in bundle.manifest.members}
    eeg = torch.randn(1, len(bundle.manifest.stream.ch_names), bundle.manifest.n_times)
    with torch.no_grad():
        saliency = bundle.load_model(roles["saliency"])(bundle.load_model(roles["pixel_encoder"])(eeg))
        tokens, _ = bundle.load_model(roles["semantic"])(eeg)
        image = bundle.frame()(saliency, tokens)
    size = bundle.manifest.generator.image_size
    assert image.shape == (1, 3, size, size)
    assert torch.isfinite(image).all() and 0 <= float(image.min()) and float(image.max()) <= 1
