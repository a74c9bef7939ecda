"""TensorRT engines: the manifest check (pure Python, tested here) and the build/run path (skips without tensorrt)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from neuroimagen.export.tensorrt import profiles_for
from neuroimagen.training.models.engines import (
    EngineEnvironment,
    EngineManifest,
    ShapeProfile,
    default_engine_dir,
    engine_mismatches,
    read_engine_manifest,
)

SHA_A, SHA_B, SHA_E = "a" * 64, "b" * 64, "e" * 64
ENV = EngineEnvironment(tensorrt_version="10.3.0", compute_capability="8.9", gpu_name="RTX 4090", cuda_version="12.4")


def _manifest(**kw) -> EngineManifest:
    base = dict(part="unet", bundle_name="tiny", onnx_path="onnx/unet.onnx", onnx_sha256=SHA_A, engine_sha256=SHA_E,
                precision="fp16", environment=ENV,
                profiles={"sample": ShapeProfile(min=(1, 4, 8, 8), opt=(1, 4, 8, 8), max=(2, 4, 8, 8))},
                outputs=("noise_pred",))
    return EngineManifest(**{**base, **kw})


def _check(m, env=ENV, **kw):
    args = dict(onnx_sha256=SHA_A, bundle_name="tiny", precision="fp16", engine_sha256=SHA_E,
                shapes={"sample": (1, 4, 8, 8)})
    return engine_mismatches(m, env, **{**args, **kw})


def test_a_matching_engine_has_no_reason_to_be_refused():
    assert _check(_manifest()) == []


@pytest.mark.parametrize(("change", "expected"), [
    ({"env": ENV.model_copy(update={"tensorrt_version": "10.4.1"})}, "TensorRT 10.3.0 built it, 10.4.1 is installed"),
    ({"env": ENV.model_copy(update={"compute_capability": "9.0", "gpu_name": "H100"})},
     "compute capability 8.9 (RTX 4090), this GPU is 9.0 (H100)"),
    ({"env": ENV.model_copy(update={"cuda_version": "11.8"})}, "built with CUDA 12.4, this runtime is CUDA 11.8"),
    ({"onnx_sha256": SHA_B}, "built from another onnx/unet.onnx"),
    ({"bundle_name": "other"}, "built from bundle 'tiny', the bundle is 'other'"),
    ({"precision": "fp32"}, "built for fp16, fp32 asked for"),
    ({"engine_sha256": SHA_B}, "the engine file was modified"),
    ({"shapes": {"sample": (4, 4, 8, 8)}}, "shape (4, 4, 8, 8) is outside its profile (1, 4, 8, 8)..(2, 4, 8, 8)"),
    ({"shapes": {"timestep": (1,)}}, "input 'timestep' has no optimisation profile"),
])
def test_each_mismatch_is_named(change, expected):
    reasons = _check(_manifest(), **change)
    assert len(reasons) == 1 and expected in reasons[0], reasons


def test_several_mismatches_are_all_listed():
    env = ENV.model_copy(update={"tensorrt_version": "9.0", "compute_capability": "7.5"})
    assert len(_check(_manifest(), env, onnx_sha256=SHA_B)) == 3


def test_manifest_round_trip_and_the_engine_folder_beside_the_bundle(tmp_path):
    m = _manifest()
    (tmp_path / "unet.json").write_text(m.model_dump_json())
    assert read_engine_manifest(tmp_path / "unet.json") == m
    assert default_engine_dir(tmp_path / "b2") == (tmp_path / "b2.tensorrt").resolve()


def test_profiles_span_the_dynamic_batch_and_fix_the_rest():
    p = profiles_for({"eeg": (-1, 128, 440), "timestep": (1,)}, max_batch=4)
    assert p["eeg"] == ShapeProfile(min=(1, 128, 440), opt=(1, 128, 440), max=(4, 128, 440))
    assert p["timestep"].min == p["timestep"].max == (1,)
    with pytest.raises(ValueError, match="only the batch axis"):
        profiles_for({"x": (1, -1)}, 2)


def test_tensorrt_backend_refuses_clearly_where_tensorrt_is_absent(tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed: the GPU test below covers the backend")
    from helpers.bundles import write_tiny_bundle

    from neuroimagen.realtime.backend import BackendError, load_backend
    from neuroimagen.realtime.config import RealtimeConfig
    from neuroimagen.training.models.bundle import load_bundle

    bundle = load_bundle(write_tiny_bundle(tmp_path / "b"))
    with pytest.raises(BackendError, match="needs the tensorrt package"):
        load_backend(bundle, RealtimeConfig(backend="tensorrt", device="cuda"))


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None,
                    reason="TensorRT is not installed (pip install tensorrt on a CUDA machine)")
def test_engines_build_run_and_are_refused_after_a_change(exported, tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("TensorRT engines need a CUDA GPU")
    from neuroimagen.export.config import TensorRTConfig
    from neuroimagen.export.tensorrt import build_engines
    from neuroimagen.realtime.backend import load_backend
    from neuroimagen.realtime.config import RealtimeConfig
    from neuroimagen.training.models.bundle import load_bundle

    results = build_engines(exported.out, TensorRTConfig(precision="fp16"))
    assert {r.action for r in results} <= {"built", "kept"}
    assert (default_engine_dir(exported.out) / "timing.cache").is_file()
    bundle = load_bundle(exported.out)
    trt_b = load_backend(bundle, RealtimeConfig(backend="tensorrt", device="cuda", precision="fp16"))
    ref = load_backend(bundle, RealtimeConfig(backend="torch"))
    eeg = np.random.default_rng(0).standard_normal((1, 128, 440)).astype(np.float32)
    a, b = ref(eeg), trt_b(eeg)
    assert np.max(np.abs(a.saliency - b.saliency)) <= 1e-2
    # a tampered manifest is refused with the reason, then rebuilt on request
    mpath = default_engine_dir(exported.out) / "unet.json"
    m = read_engine_manifest(mpath)
    mpath.write_text(m.model_copy(update={"precision": "fp32"}).model_dump_json())
    with pytest.raises(RuntimeError, match="built for fp32, fp16 asked for"):
        build_engines(exported.out, TensorRTConfig(precision="fp16"))
    rebuilt = build_engines(exported.out, TensorRTConfig(precision="fp16"), rebuild=True)
    assert [r.part for r in rebuilt if r.action == "rebuilt"] == ["unet"]
