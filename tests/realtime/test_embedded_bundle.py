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
    for key in ("student_nway", "teacher_ddpm_nway", "teacher_ddim_nway", "autoencoder_nway", "class_mean_nway", "saliency_nway",
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


def test_the_embedded_bundle_ships_onnx_graphs_so_the_demo_runs_onnxruntime_by_default():
    """README's first command installs onnxruntime; `realtime.backend: auto` then runs the shipped graphs."""
    import importlib.util

    import numpy as np

    from neuroimagen.realtime.backend import TorchBackend, load_backend, resolve_backend
    from neuroimagen.realtime.backends._frame import exported_parts
    from neuroimagen.realtime.config import RealtimeConfig

    bundle = load_bundle(embedded_bundle())
    onnx = bundle.artifacts("onnx")
    assert set(exported_parts(bundle.manifest)) <= set(onnx)
    assert {onnx[p].precision for p in onnx} == {"fp32"}
    # the export's parity figures travel with the graphs
    parity = {k: v for k, v in bundle.manifest.metrics.items() if k.startswith("onnx_parity_")}
    assert parity and max(parity.values()) <= 1e-4, parity
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime is not installed (the cpu extra)")
    cfg = RealtimeConfig()
    assert resolve_backend(bundle, cfg)[0] == "onnxruntime"
    ort_b, torch_b = load_backend(bundle, cfg), TorchBackend.from_bundle(bundle, RealtimeConfig(backend="torch"))
    try:
        assert ort_b.name == "onnxruntime" and ort_b.status.endswith("[auto]")
        eeg = np.random.default_rng(3).standard_normal(ort_b.spec.shapes()["eeg"]).astype(np.float32)
        a, b = ort_b(eeg), torch_b(eeg)
        for name in ("saliency", "image", "class_scores"):
            assert np.max(np.abs(getattr(a, name) - getattr(b, name))) <= 1e-4, name
    finally:
        ort_b.close()
        torch_b.close()
