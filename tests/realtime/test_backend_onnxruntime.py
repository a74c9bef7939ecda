"""The onnxruntime backend: the torch backend's named outputs within 1e-4, inside the live engine too."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.engine import make_recording, playing
from helpers.lsl import unique_name
from helpers.wait import wait_until

from neuroimagen.realtime.backend import Backend, BackendError, TorchBackend, load_backend
from neuroimagen.realtime.config import RealtimeConfig
from neuroimagen.realtime.engine import Engine
from neuroimagen.stream.config import StreamConfig
from neuroimagen.stream.pipeline import WindowPipeline
from neuroimagen.training.models.bundle import load_bundle

NAMES = ("saliency", "image", "class_scores")


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory):
    from helpers.exported import exported_tiny_bundle

    return load_bundle(exported_tiny_bundle(tmp_path_factory.getbasetemp()).out)


class Recording:
    """A backend wrapper that keeps every window and output the engine passed through it."""

    def __init__(self, backend: Backend) -> None:
        self.inner = backend
        self.name, self.device, self.spec, self.status = backend.name, backend.device, backend.spec, backend.status
        self.calls: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        self.n_warmup = 0

    def warmup(self, n_frames: int = 3) -> float:
        self.n_warmup += n_frames
        return self.inner.warmup(n_frames)

    def __call__(self, eeg):
        out = self.inner(eeg)
        self.calls.append((eeg.copy(), {n: getattr(out, n).copy() for n in NAMES}))
        return out

    def close(self) -> None:
        self.inner.close()


def _max_err(a, b) -> dict[str, float]:
    return {n: float(np.max(np.abs(getattr(a, n) - getattr(b, n)))) for n in NAMES}


@pytest.mark.slow
def test_same_spec_and_outputs_as_torch_within_1e4(onnx_bundle):
    torch_b = load_backend(onnx_bundle, RealtimeConfig(backend="torch"))
    ort_b = load_backend(onnx_bundle, RealtimeConfig(backend="onnxruntime"))
    assert isinstance(ort_b, Backend) and ort_b.name == "onnxruntime"
    assert ort_b.spec == torch_b.spec and "CPUExecutionProvider" in ort_b.status
    rng = np.random.default_rng(7)
    for _ in range(3):  # the frames' noise streams advance in step (same seed, same draws)
        eeg = rng.standard_normal((1, *torch_b.spec.shapes()["eeg"][1:])).astype(np.float32)
        a, b = torch_b(eeg), ort_b(eeg)
        for n in NAMES:
            assert getattr(b, n).dtype == np.float32 and getattr(b, n).shape == torch_b.spec.shapes()[n]
        assert max(_max_err(a, b).values()) <= 1e-4, _max_err(a, b)
        assert set(b.timings_ms) == {"extractors", "diffusion"}


@pytest.mark.slow
def test_outputs_are_not_overwritten_by_the_next_frame(onnx_bundle):
    # the sessions write into buffers allocated once: what a frame returned must stay as it was
    backend = load_backend(onnx_bundle, RealtimeConfig(backend="onnxruntime"))
    rng = np.random.default_rng(1)
    first = backend(rng.standard_normal((1, 128, 440)).astype(np.float32))
    kept = {n: getattr(first, n).copy() for n in NAMES}
    second = backend(rng.standard_normal((1, 128, 440)).astype(np.float32))
    assert any(not np.array_equal(kept[n], getattr(second, n)) for n in NAMES)
    for n in NAMES:
        np.testing.assert_array_equal(getattr(first, n), kept[n])


@pytest.mark.slow
def test_parity_with_torch_inside_the_live_engine(lsl_loopback, onnx_bundle):
    # the engine runs onnxruntime on a live LSL stream; torch then replays the same windows
    name = unique_name("ortengine")
    cfg = RealtimeConfig(backend="onnxruntime", warmup_frames=2)
    backend = Recording(load_backend(onnx_bundle, cfg))
    base = onnx_bundle.stream_config(StreamConfig())
    scfg = base.model_copy(update={"inlet": base.inlet.model_copy(update={"name": name}),
                                   "windowing": base.windowing.model_copy(update={"hop_s": 0.2})})
    pipeline = WindowPipeline(scfg, eeg_name=name, acquisition="caller", norm_stats=onnx_bundle.norm_stats())
    engine = Engine(pipeline, backend, cfg)
    with playing(make_recording(3.0), name):
        engine.start()
        try:
            wait_until(lambda: len(backend.calls) >= 4, timeout=60, message="4 frames through onnxruntime")
        finally:
            engine.stop()
    reference = TorchBackend.from_bundle(onnx_bundle, RealtimeConfig())
    reference.warmup(backend.n_warmup)
    for eeg, out in backend.calls:
        ref = reference(eeg)
        errs = {n: float(np.max(np.abs(out[n] - getattr(ref, n)))) for n in NAMES}
        assert max(errs.values()) <= 1e-4, errs


def test_a_bundle_without_onnx_is_refused_with_the_export_command(tmp_path):
    from helpers.bundles import write_tiny_bundle

    bundle = load_bundle(write_tiny_bundle(tmp_path / "plain"))
    with pytest.raises(BackendError, match=r"no ONNX graph for \['pixel_encoder'.*neuroimagen export --bundle"):
        load_backend(bundle, RealtimeConfig(backend="onnxruntime"))
    # with a fallback configured, torch runs and says FALLBACK
    fb = load_backend(bundle, RealtimeConfig(backend="onnxruntime", fallback_backend="torch"))
    assert fb.name == "torch" and fb.status.startswith("FALLBACK")


def test_auto_picks_onnxruntime_only_where_the_bundle_has_its_graphs_and_says_why(onnx_bundle, tmp_path,
                                                                                  monkeypatch, caplog):
    import importlib.util
    import logging

    from helpers.bundles import write_tiny_bundle

    from neuroimagen.realtime.backend import resolve_backend

    auto = RealtimeConfig()
    assert auto.backend == "auto"
    # 1. an exported bundle on the CPU: onnxruntime, logged and marked in the status line
    with caplog.at_level(logging.INFO, logger="neuroimagen.realtime.backend"):
        b = load_backend(onnx_bundle, auto)
    try:
        assert b.name == "onnxruntime" and b.status.endswith("[auto]") and "CPUExecutionProvider" in b.status
        assert "realtime.backend auto: onnxruntime" in caplog.text
    finally:
        b.close()
    # 2. torch where onnxruntime cannot serve the bundle, each with its reason
    plain = load_bundle(write_tiny_bundle(tmp_path / "plain"))
    name, why = resolve_backend(plain, auto)
    assert name == "torch" and "no ONNX graphs for pixel_encoder" in why and "neuroimagen export" in why
    t = load_backend(plain, auto)
    assert t.name == "torch" and t.status.endswith("[auto]") and not t.status.startswith("FALLBACK")
    t.close()
    assert resolve_backend(onnx_bundle, RealtimeConfig(device="cuda"))[0] == "torch"
    name, why = resolve_backend(onnx_bundle, RealtimeConfig(precision="fp16"))
    assert name == "torch" and "['fp32']" in why
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "onnxruntime" else real_find_spec(n, *a))
    name, why = resolve_backend(onnx_bundle, auto)
    assert name == "torch" and "onnxruntime is not installed" in why
    # 3. a named backend is taken as it is
    assert resolve_backend(plain, RealtimeConfig(backend="onnxruntime")) == ("onnxruntime", "configured")


def test_cuda_without_the_cuda_provider_is_an_error_not_a_cpu_run(onnx_bundle):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(BackendError, match="no CUDAExecutionProvider.*onnxruntime-gpu"):
        load_backend(onnx_bundle, RealtimeConfig(backend="onnxruntime", device="cuda"))


def test_precision_must_match_the_exported_graphs(onnx_bundle):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("checked on a CPU-only onnxruntime")
    with pytest.raises(BackendError, match=r"ONNX graphs are \['fp32'\], realtime.precision is 'fp16'"):
        load_backend(onnx_bundle, RealtimeConfig(backend="onnxruntime", device="cuda", precision="fp16"))


@pytest.mark.slow
def test_run_with_the_onnxruntime_backend_runs_the_chain(lsl_loopback, onnx_bundle, tmp_path):
    import json

    from click.testing import CliRunner

    from neuroimagen.realtime.cli import main

    name = unique_name("ortrun")
    out = tmp_path / "session"
    with playing(make_recording(5.0, marker_every_s=0.5), name):
        result = CliRunner().invoke(main, [
            "run", "--bundle", str(onnx_bundle.path), "--stream", name, "--headless", "--duration", "3",
            "--out", str(out), "--hop", "0.1", "--set", "realtime.backend=onnxruntime",
        ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_frames"] >= 5 and m["backend"].startswith("onnxruntime")
    assert len(list((out / "frames").glob("*.png"))) == m["n_frames"]
