"""derive_bundle: a new bundle = a verified source + files + artifact entries; the source is never touched."""

from __future__ import annotations

import pytest
from helpers.bundles import write_tiny_bundle

from neuroimagen.training.models.bundle import (
    ArtifactEntry,
    BundleError,
    TensorSpec,
    artifact_files,
    derive_bundle,
    load_bundle,
    verify_bundle,
)


def _entry(root, rel="onnx/unet.onnx", source=("unet",), name="onnx_unet"):
    return ArtifactEntry(name=name, kind="onnx", part="unet", source=source, files=artifact_files(root, [rel]),
                         inputs={"sample": TensorSpec(shape=(1, 4, 8, 8), dtype="float32")},
                         outputs={"noise_pred": TensorSpec(shape=(1, 4, 8, 8), dtype="float32")}, opset=18)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_tiny_bundle(tmp_path_factory.mktemp("derive") / "src")


def test_derived_bundle_lists_the_new_files_and_keeps_the_source_as_it_was(source, tmp_path):
    before = (source / "manifest.json").read_bytes()
    graph = tmp_path / "g.onnx"
    graph.write_bytes(b"graph")
    m = derive_bundle(source, tmp_path / "out", add_files={"onnx/unet.onnx": graph}, artifacts=lambda root: [_entry(root)],
                      metrics={"onnx_parity_unet_noise_pred": 1e-6}, command="test")
    assert (source / "manifest.json").read_bytes() == before and not (source / "onnx").exists()
    assert verify_bundle(tmp_path / "out") == m
    assert load_bundle(tmp_path / "out").artifacts("onnx")["unet"].opset == 18
    assert m.metrics["onnx_parity_unet_noise_pred"] == 1e-6 and m.provenance.commands[-1] == "test"
    # a deleted graph is named by the check
    (tmp_path / "out" / "onnx" / "unet.onnx").unlink()
    with pytest.raises(BundleError, match="artifact onnx_unet: onnx/unet.onnx: missing"):
        verify_bundle(tmp_path / "out")


def test_an_artifact_of_an_unknown_member_and_a_replaced_source_file_are_refused(source, tmp_path):
    graph = tmp_path / "g.onnx"
    graph.write_bytes(b"graph")
    with pytest.raises(BundleError, match=r"built from \['nope'\], which are not models"):
        derive_bundle(source, tmp_path / "a", add_files={"onnx/unet.onnx": graph},
                      artifacts=lambda root: [_entry(root, source=("nope",))])
    with pytest.raises(BundleError, match="would replace a file of the source bundle"):
        derive_bundle(source, tmp_path / "b", add_files={"unet/config.json": graph})
    with pytest.raises(BundleError, match="is the source bundle|not empty"):
        derive_bundle(source, source)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_derived_bundle_can_be_derived_again_replacing_its_artifact_and_keeping_the_others(source, tmp_path):
    # an exported bundle exported again (the shipped default at another opset): the new graph
    # replaces the old one, file and entry; an artifact that is not replaced keeps its file
    old, new, other = tmp_path / "old.onnx", tmp_path / "new.onnx", tmp_path / "other.onnx"
    old.write_bytes(b"old graph")
    new.write_bytes(b"new graph")
    other.write_bytes(b"other graph")
    first = tmp_path / "first"
    derive_bundle(source, first, add_files={"onnx/unet.onnx": old, "onnx/vae.onnx": other},
                  artifacts=lambda root: [_entry(root), _entry(root, "onnx/vae.onnx", name="onnx_vae")])
    second = derive_bundle(first, tmp_path / "second", add_files={"onnx/unet.onnx": new},
                           artifacts=lambda root: [_entry(root)])
    assert (tmp_path / "second" / "onnx" / "unet.onnx").read_bytes() == b"new graph"
    assert (tmp_path / "second" / "onnx" / "vae.onnx").read_bytes() == b"other graph"
    assert sorted(a.name for a in second.artifacts) == ["onnx_unet", "onnx_vae"]
    assert verify_bundle(tmp_path / "second") == second
    assert (first / "onnx" / "unet.onnx").read_bytes() == b"old graph"  # the source is only read
    # a new file over a kept artifact's file is refused by name
    with pytest.raises(BundleError, match="onnx/vae.onnx would replace a file of the source bundle's artifact "
                                          "onnx_vae"):
        derive_bundle(first, tmp_path / "third", add_files={"onnx/vae.onnx": new},
                      artifacts=lambda root: [_entry(root, "onnx/vae.onnx", name="onnx_other")])
    assert not (tmp_path / "third").exists()
