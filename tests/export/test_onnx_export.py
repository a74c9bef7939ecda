"""`neuroimagen export`: ONNX for every part in a NEW bundle, checked, with onnxruntime parity reported."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from neuroimagen.export.config import ExportConfig
from neuroimagen.export.onnx import PARTS, PartParity, bundle_parts, export_part, part_parity
from neuroimagen.realtime.cli import main
from neuroimagen.training.models.bundle import BundleError, load_bundle, verify_bundle
from neuroimagen.training.models.format import file_sha256


@pytest.mark.slow
def test_export_writes_a_verified_new_bundle_with_every_part(exported):
    manifest = verify_bundle(exported.out)
    onnx_parts = {a.part: a for a in manifest.artifacts if a.kind == "onnx"}
    assert set(onnx_parts) == set(PARTS)
    # the source's members come along unchanged; the graphs are listed files of the new bundle
    src = verify_bundle(exported.source)
    assert [m.files for m in src.members] == [m.files for m in manifest.members]
    for part, entry in onnx_parts.items():
        path = exported.out / entry.files[0].path
        model = onnx.load(str(path))
        onnx.checker.check_model(str(path), full_check=True)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == entry.opset >= 17
        # named inputs and outputs, in the manifest's order
        assert [i.name for i in model.graph.input] == list(entry.inputs), part
        assert [o.name for o in model.graph.output] == list(entry.outputs), part
        assert entry.versions["onnxruntime"] == ort.__version__
    # extractors take any batch; the UNet is exported at the frame's batch
    assert onnx_parts["pixel_encoder"].inputs["eeg"].shape[0] == -1
    assert onnx_parts["unet"].inputs["sample"].shape[0] == 1


@pytest.mark.slow
def test_export_never_modifies_the_source_bundle(exported):
    assert (exported.source / "manifest.json").read_bytes() == exported.source_manifest
    verify_bundle(exported.source)  # no unlisted file (no onnx/ folder) appeared in it
    assert not (exported.source / "onnx").exists()


@pytest.mark.slow
def test_parity_of_every_output_is_printed_within_1e4_and_stored_in_the_metrics(exported):
    expected = {("pixel_encoder", "features"), ("saliency", "saliency"), ("semantic", "tokens"),
                ("semantic", "pooled"), ("projection", "prompt_embeds"), ("vae_encoder", "latent_mean"),
                ("unet", "noise_pred"), ("vae_decoder", "image")}
    assert {(r["part"], r["output"]) for r in exported.rows} == expected
    metrics = verify_bundle(exported.out).metrics
    for r in exported.rows:
        assert r["ok"] and r["scaled_err"] <= 1e-4, r
        assert metrics[f"onnx_parity_{r['part']}_{r['output']}"] == pytest.approx(r["max_abs_err"])
        assert r["output"] in exported.output or r["output"][:10] in exported.output
    assert "not built yet" not in exported.output


@pytest.mark.slow
def test_dynamic_batch_graph_matches_torch_on_another_batch_size(exported):
    bundle = load_bundle(exported.out)
    entry = bundle.artifacts("onnx")["pixel_encoder"]
    sess = ort.InferenceSession(str(exported.out / entry.files[0].path), providers=["CPUExecutionProvider"])
    eeg = torch.randn(3, *entry.inputs["eeg"].shape[1:], generator=torch.Generator().manual_seed(3))
    got = sess.run(["features"], {"eeg": eeg.numpy()})[0]
    with torch.inference_mode():
        ref = bundle.load_role("pixel_encoder")(eeg).numpy()
    assert got.shape == ref.shape == (3, entry.outputs["features"].shape[1])
    assert np.max(np.abs(got - ref)) <= 1e-4


def test_export_refuses_a_non_empty_out_and_names_it(exported, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "x").write_text("x")
    result = CliRunner().invoke(main, ["export", "--bundle", str(exported.source), "--out", str(out)])
    assert result.exit_code == 1 and "not empty" in result.output


def test_large_weights_go_to_external_data_and_still_match(tmp_path):
    from helpers.bundles import write_tiny_bundle

    bundle = load_bundle(write_tiny_bundle(tmp_path / "b"))
    part = next(p for p in bundle_parts(bundle) if p.part == "saliency")
    cfg = ExportConfig(external_data_mb=0.0)  # every part's weights count as large
    files = export_part(part, tmp_path / "onnx" / "saliency.onnx", cfg)
    assert [f.name for f in files] == ["saliency.onnx", "saliency.onnx.data"]
    # the weights are in the data file, not in the graph
    assert files[1].stat().st_size > files[0].stat().st_size
    parity = part_parity(part, files[0], atol=1e-4)
    assert parity.ok and parity.errors["saliency"] <= 1e-4


def test_parity_judges_errors_relative_to_the_output_scale_above_one():
    p = PartParity("unet", {"a": 5e-5, "b": 5e-4}, {"a": 0.5, "b": 10.0}, 1e-4, "CPUExecutionProvider")
    assert p.scaled("a") == 5e-5 and p.scaled("b") == pytest.approx(5e-5) and p.ok
    assert not PartParity("x", {"a": 2e-4}, {"a": 1.0}, 1e-4, "cpu").ok


def test_a_modified_onnx_file_is_refused_by_the_bundle_check(exported, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exported.out, copy)
    graph = copy / "onnx" / "unet.onnx"
    graph.write_bytes(graph.read_bytes() + b"\0")
    with pytest.raises(BundleError, match="artifact onnx_unet: onnx/unet.onnx: modified"):
        verify_bundle(copy)
    assert file_sha256(exported.out / "onnx" / "unet.onnx") != file_sha256(graph)


@pytest.mark.gpu
def test_fp16_parity_on_cuda(tmp_path):
    if not torch.cuda.is_available() or "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs a CUDA GPU, a CUDA torch and onnxruntime-gpu (onnxruntime-CPU lacks fp16 kernels)")
    from helpers.bundles import write_tiny_bundle

    from neuroimagen.export.onnx import export_bundle

    report = export_bundle(write_tiny_bundle(tmp_path / "b"), tmp_path / "b16",
                           ExportConfig(precision="fp16"), device="cuda")
    assert report.ok and all(r[4] <= 1e-2 for r in report.rows())
