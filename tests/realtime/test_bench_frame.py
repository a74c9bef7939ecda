"""`neuroimagen bench frame`: one run prints both ratios (torch/onnxruntime, diffusers pipeline/our frame)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from neuroimagen.realtime.cli import main


@pytest.mark.slow
def test_bench_frame_measures_every_backend_and_the_diffusers_pipeline_in_one_run(tmp_path_factory, tmp_path):
    from helpers.exported import exported_tiny_bundle

    bundle = exported_tiny_bundle(tmp_path_factory.getbasetemp()).out
    out = tmp_path / "frame.json"
    result = CliRunner().invoke(main, ["bench", "frame", "--bundle", str(bundle), "--n-frames", "3",
                                       "--n-warmup", "1", "--json", str(out)], terminal_width=200,
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    assert set(r["backends"]) == {"torch", "onnxruntime"} and "export_s" not in r  # already exported
    for b in r["backends"].values():
        for stage in ("extractors_ms", "diffusion_ms", "end_to_end_ms"):
            assert b[stage]["n"] == 3 and 0 < b[stage]["p50"] <= b[stage]["p99"]
    assert r["backends"]["onnxruntime"]["status"].startswith("onnxruntime")
    d = r["diffusers"]
    assert d["pipeline"] == "LatentConsistencyModelImg2ImgPipeline"
    # same components, scheduler, steps and seed: the pipeline computes the same image (TAESD: no sampling)
    assert d["max_abs_diff"] <= 1e-4
    assert r["ratios"]["torch_over_onnxruntime"] == pytest.approx(
        r["backends"]["torch"]["end_to_end_ms"]["p50"] / r["backends"]["onnxruntime"]["end_to_end_ms"]["p50"])
    assert r["ratios"]["diffusers_pipeline_over_our_frame"] == pytest.approx(
        d["pipeline_ms"]["p50"] / d["frame_ms"]["p50"])
    # the table (rich wraps long labels at 80 columns under the test runner)
    for text in ("torch: end_to_end", "meets goals", f"{r['ratios']['torch_over_onnxruntime']:.2f}",
                 f"{r['ratios']['diffusers_pipeline_over_our_frame']:.2f}"):
        assert text in result.output, text
    assert "not built yet" not in result.output
