"""``neuroimagen bench frame``: frame latency per stage and backend, against diffusers' own pipeline.

Lives in the console script's package because it reaches every layer: the export
layer (ONNX for the onnxruntime backend, random-weight bundles) and diffusers'
pipelines (the reference), besides realtime's backends.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FRAME_GOAL_P99_MS", "run_frame_bench"]

FRAME_GOAL_P99_MS = 60.0


def _stats(ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(ms, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "mean": float(a.mean()),
            "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}


def _machine() -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def _pipeline(frame: Any) -> Any:
    """diffusers' own img2img pipeline on the frame's components and a copy of its scheduler."""
    from diffusers import LatentConsistencyModelImg2ImgPipeline, StableDiffusionImg2ImgPipeline

    scheduler = type(frame.scheduler).from_config(frame.scheduler.config)
    cls = LatentConsistencyModelImg2ImgPipeline if frame.consistency else StableDiffusionImg2ImgPipeline
    pipe = cls(vae=frame.vae, text_encoder=None, tokenizer=None, unet=frame.unet, scheduler=scheduler,
               safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _frame_vs_pipeline(bundle: Any, n_frames: int, n_warmup: int, threads: int | None) -> dict[str, Any]:
    """The diffusion stage alone: our Img2ImgFrame vs the pipeline, same inputs, alternating calls."""
    import torch
    import torch.nn.functional as F

    if threads is not None:
        torch.set_num_threads(threads)
    frame = bundle.frame()
    settings = bundle.manifest.generator
    roles = {m.role: m.name for m in bundle.manifest.members}
    with torch.inference_mode():
        eeg = torch.randn(1, len(bundle.manifest.stream.ch_names), bundle.manifest.n_times,
                          generator=torch.Generator().manual_seed(0))
        saliency = bundle.load_model(roles["saliency"])(bundle.load_model(roles["pixel_encoder"])(eeg))
        tokens, _ = bundle.load_model(roles["semantic"])(eeg)
    pipe = _pipeline(frame)
    kw = dict(strength=settings.strength, num_inference_steps=settings.num_inference_steps,
              guidance_scale=settings.guidance_scale, output_type="pt")

    def ours() -> Any:
        return frame(saliency, tokens, generator=torch.Generator().manual_seed(1))

    def theirs() -> Any:
        with torch.inference_mode():
            image = F.interpolate(saliency, size=frame.output_size(saliency.shape[-2:]), mode="bilinear",
                                  align_corners=False, antialias=True)
            embeds = frame.conditioning(tokens)
            return pipe(prompt_embeds=embeds, image=image, generator=torch.Generator().manual_seed(1), **kw).images

    times: dict[str, list[float]] = {"frame": [], "pipeline": []}
    for i in range(n_warmup + n_frames):
        for name, fn in (("frame", ours), ("pipeline", theirs)):  # alternating: the same machine load
            t0 = time.perf_counter()
            out = fn()
            if i >= n_warmup:
                times[name].append((time.perf_counter() - t0) * 1e3)
            if name == "frame":
                a = out
            else:
                b = out
    return {"frame_ms": _stats(times["frame"]), "pipeline_ms": _stats(times["pipeline"]),
            "pipeline": type(pipe).__name__, "max_abs_diff": float((a - b).abs().max()),
            "ratio_pipeline_over_frame": _stats(times["pipeline"])["p50"] / _stats(times["frame"])["p50"]}


def _backend_bench(bundle: Any, name: str, device: str, threads: int | None, n_frames: int,
                   n_warmup: int) -> dict[str, Any]:
    from neuroimagen.realtime.backend import load_backend
    from neuroimagen.realtime.config import RealtimeConfig

    cfg = RealtimeConfig(backend=name, device=device, torch_threads=threads, warmup_frames=max(1, n_warmup))
    backend = load_backend(bundle, cfg)
    try:
        warm_s = backend.warmup(n_warmup) if n_warmup else 0.0
        rng = np.random.default_rng(0)
        shape = backend.spec.shapes()["eeg"]
        e2e, stages = [], {"extractors": [], "diffusion": []}
        for _ in range(n_frames):
            eeg = rng.standard_normal(shape).astype(np.float32)
            t0 = time.perf_counter()
            out = backend(eeg)
            e2e.append((time.perf_counter() - t0) * 1e3)
            for k in stages:
                stages[k].append(out.timings_ms[k])
        return {"status": backend.status, "warmup_ms": warm_s * 1e3, "end_to_end_ms": _stats(e2e),
                **{f"{k}_ms": _stats(v) for k, v in stages.items()}}
    finally:
        backend.close()


def run_frame_bench(*, bundle_path: Path | None = None, model_size: str = "tiny",
                    backends: Sequence[str] = ("torch", "onnxruntime"), device: str = "cpu",
                    threads: int | None = 1, n_frames: int = 50, n_warmup: int = 5,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure one bundle's frame through each backend and against diffusers' pipeline, in one run.

    Parameters
    ----------
    bundle_path : a bundle, or None for a random-weight bundle at ``model_size``
    backends : any of torch, onnxruntime, tensorrt; a bundle without ONNX graphs is exported
        first (to a temporary bundle; the export time is reported, not counted)
    threads : intra-op threads of torch and onnxruntime (1: the engine's default)

    Returns
    -------
    dict
        ``backends`` {name: per-stage and end-to-end ms (p50, p99, ...)}, ``diffusers`` (our
        frame vs the pipeline), ``ratios`` and ``goals``, ``machine`` before and after.
    """
    from neuroimagen.training.models.bundle import load_bundle

    say = progress or (lambda _msg: None)
    result: dict[str, Any] = {"machine": _machine(), "model_size": model_size if bundle_path is None else None,
                              "bundle": str(bundle_path) if bundle_path else None, "device": device,
                              "threads": threads, "n_frames": n_frames, "n_warmup": n_warmup}
    with tempfile.TemporaryDirectory(prefix="neuroimagen-bench-") as tmp:
        # 1. the bundle: given, or random weights at the asked size
        if bundle_path is None:
            from neuroimagen.export.benchmodels import write_random_bundle

            say(f"building random-weight {model_size} models")
            bundle_path = write_random_bundle(Path(tmp) / f"random-{model_size}", model_size)
        bundle = load_bundle(bundle_path)
        result["bundle_name"] = bundle.manifest.name
        # 2. ONNX graphs for the exported backends
        if any(b != "torch" for b in backends) and not bundle.artifacts("onnx"):
            from neuroimagen.export.onnx import export_bundle

            say("exporting to ONNX (not timed)")
            t0 = time.perf_counter()
            report = export_bundle(bundle_path, Path(tmp) / "onnx-bundle")
            result["export_s"] = time.perf_counter() - t0
            result["parity_max_abs_err"] = max(r[2] for r in report.rows())
            bundle = load_bundle(Path(tmp) / "onnx-bundle")
        # 3. each backend, end to end and per stage
        result["backends"] = {}
        for name in backends:
            say(f"{name}: {n_frames} frames")
            result["backends"][name] = _backend_bench(bundle, name, device, threads, n_frames, n_warmup)
        # 4. our frame vs diffusers' pipeline (torch, the diffusion stage)
        say("our frame vs diffusers' pipeline")
        result["diffusers"] = _frame_vs_pipeline(bundle, n_frames, min(n_warmup, 2), threads)
    b = result["backends"]
    ratios = {"diffusers_pipeline_over_our_frame": result["diffusers"]["ratio_pipeline_over_frame"]}
    if "torch" in b and "onnxruntime" in b:
        ratios["torch_over_onnxruntime"] = b["torch"]["end_to_end_ms"]["p50"] / b["onnxruntime"]["end_to_end_ms"]["p50"]
    fastest = min(b, key=lambda k: b[k]["end_to_end_ms"]["p99"])
    ratios["goal_over_fastest_p99"] = FRAME_GOAL_P99_MS / b[fastest]["end_to_end_ms"]["p99"]
    result["ratios"] = ratios
    result["goals"] = {"frame_p99_ms": FRAME_GOAL_P99_MS, "fastest_backend": fastest,
                       "frame_p99_met": b[fastest]["end_to_end_ms"]["p99"] <= FRAME_GOAL_P99_MS,
                       "faster_than_diffusers": ratios["diffusers_pipeline_over_our_frame"] > 1.0}
    result["machine_after"] = _machine()
    return result
