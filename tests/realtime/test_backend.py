"""The torch backend on a tiny random bundle: named outputs, the same numbers as the models run by hand,
loud failures, and a fallback only when configured."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch

from neuroimagen.realtime.backend import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    Backend,
    BackendError,
    TorchBackend,
    load_backend,
)
from neuroimagen.realtime.config import RealtimeConfig
from neuroimagen.training.models.bundle import MANIFEST_NAME, load_bundle
from neuroimagen.training.models.semantic import class_scores


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle)


@pytest.fixture(scope="module")
def backend(bundle):
    b = load_backend(bundle, RealtimeConfig())
    yield b
    b.close()


def _eeg(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 128, 440)).astype(np.float32)


def test_outputs_have_the_documented_names_dtypes_and_shapes(backend):
    assert isinstance(backend, Backend) and backend.name == "torch" and backend.device == "cpu"
    assert INPUT_NAMES == ("eeg",) and OUTPUT_NAMES == ("saliency", "image", "class_scores")
    shapes = backend.spec.shapes()
    assert shapes["eeg"] == (1, 128, 440)
    out = backend(_eeg())
    for name in OUTPUT_NAMES:
        value = getattr(out, name)
        assert value.dtype == np.float32 and value.shape == shapes[name], name
    assert shapes["class_scores"] == (1, 6)
    assert 0.0 <= out.image.min() and out.image.max() <= 1.0
    assert 0.0 <= out.saliency.min() and out.saliency.max() <= 1.0
    assert set(out.timings_ms) == {"extractors", "diffusion"} and all(v > 0 for v in out.timings_ms.values())
    with pytest.raises(ValueError, match=r"\(1, 128, 440\)"):
        backend(np.zeros((1, 64, 440), np.float32))


def test_the_frame_equals_the_bundle_models_run_by_hand(bundle, backend):
    eeg = _eeg(1)
    x = torch.from_numpy(eeg)
    pixel, sal, sem = (bundle.load_role(r) for r in ("pixel_encoder", "saliency", "semantic"))
    ref_frame = bundle.frame()
    with torch.no_grad():
        saliency = sal(pixel(x))
        tokens, pooled = sem(x)
        scores = class_scores(pooled, bundle.data("class_embeddings")["pooled"])
        ref_frame.generator.manual_seed(123)
        image = ref_frame(saliency, tokens)
    backend.frame.generator.manual_seed(123)
    out = backend(eeg)
    np.testing.assert_allclose(out.saliency, saliency.numpy(), atol=1e-6)
    np.testing.assert_allclose(out.class_scores, scores.numpy(), atol=1e-5)
    np.testing.assert_allclose(out.image, image.numpy(), atol=1e-5)


def test_warmup_runs_frames_and_reports_seconds(backend):
    assert backend.warmup(2) > 0


def test_cuda_that_is_not_there_raises_with_the_cause(bundle):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(BackendError, match="no CUDA device"):
        load_backend(bundle, RealtimeConfig(device="cuda"))


def test_fp16_on_cpu_is_refused(bundle):
    with pytest.raises(BackendError, match="fp16"):
        load_backend(bundle, RealtimeConfig(precision="fp16"))


def test_a_configured_backend_that_cannot_load_raises_and_never_falls_back_unasked(bundle):
    # a bundle with no ONNX graphs cannot run on onnxruntime: an error, not a torch run
    with pytest.raises(BackendError, match="no ONNX graph"):
        load_backend(bundle, RealtimeConfig(backend="onnxruntime"))


def test_a_configured_fallback_is_loud(bundle, caplog):
    with caplog.at_level(logging.ERROR, logger="neuroimagen.realtime.backend"):
        b = load_backend(bundle, RealtimeConfig(backend="tensorrt", fallback_backend="torch"))
    assert isinstance(b, TorchBackend)
    assert b.status.startswith("FALLBACK torch") and "tensorrt" in b.status
    assert any("FALLING BACK" in r.getMessage() for r in caplog.records)


def test_a_bundle_missing_a_member_fails_to_load_naming_it(tiny_bundle, tmp_path):
    import json

    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    # drop the semantic extractor from the manifest and the folder: a consistent bundle without it
    manifest = json.loads((broken / MANIFEST_NAME).read_text())
    manifest["members"] = [m for m in manifest["members"] if m["role"] != "semantic"]
    (broken / MANIFEST_NAME).write_text(json.dumps(manifest))
    shutil.rmtree(broken / "semantic")
    with pytest.raises(BackendError, match="semantic") as info:
        load_backend(load_bundle(broken), RealtimeConfig())
    assert info.value.__cause__ is not None
