"""The demo checks the twin it regenerates against the bundle's manifest before replaying it."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from neuroimagen.realtime.cli import main
from neuroimagen.training.models.bundle import read_manifest, twin_mismatches


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    from helpers.bundles import write_twin_bundle
    from helpers.twin import make_tiny_twin

    work = tmp_path_factory.mktemp("twins")
    same = make_tiny_twin(work / "same", seed=0)
    other = make_tiny_twin(work / "other", seed=5)
    return same, other, write_twin_bundle(work / "bundle", same)


def test_the_same_twin_matches_and_another_seed_is_named(twins):
    same, other, bundle = twins
    manifest = read_manifest(bundle)
    assert twin_mismatches(json.loads((same / "twin.json").read_text()), manifest) == []
    problems = twin_mismatches(json.loads((other / "twin.json").read_text()), manifest)
    assert any("seed is 5" in p for p in problems), problems
    assert any("normalisation mean" in p for p in problems), problems


def test_float_rounding_of_the_near_zero_means_is_not_a_different_twin(twins):
    """The band-passed channel means are ~1e-12 V: another machine's summation order changes them by
    1e-16, a large relative difference but nothing to the normalised signal."""
    same, _, bundle = twins
    meta = json.loads((same / "twin.json").read_text())
    manifest = read_manifest(bundle)
    meta["norm_stats"]["mean"] = [m + 6e-16 for m in meta["norm_stats"]["mean"]]
    assert twin_mismatches(meta, manifest) == []
    std = manifest.norm_stats.std
    meta["norm_stats"]["mean"] = [m + 1e-3 * s for m, s in zip(meta["norm_stats"]["mean"], std, strict=True)]
    assert any("normalisation mean" in p for p in twin_mismatches(meta, manifest))


def test_a_twin_of_other_sizes_is_named(twins, tmp_path):
    """The manifest records the twin's whole config: a twin that differs only in size is refused by field."""
    from helpers.twin import TINY_TWIN

    from neuroimagen.training.config import TwinConfig
    from neuroimagen.training.data.twin import make_twin

    _, _, bundle = twins
    manifest = read_manifest(bundle)
    assert manifest.provenance.twin.config["n_images_per_class"] == TINY_TWIN["n_images_per_class"]
    bigger = make_twin(tmp_path / "bigger", TwinConfig(seed=0, **{**TINY_TWIN, "n_images_per_class": 12}))
    problems = twin_mismatches(bigger, manifest)
    assert any("n_images_per_class is 12" in p and "trained on 10" in p for p in problems), problems


def test_the_demo_refuses_a_cached_twin_that_is_not_the_bundles(twins, tmp_path):
    _, other, bundle = twins
    import shutil

    from neuroimagen.realtime.cli.demo import bundle_twin_dir

    # the demo caches the bundle's twin in <workdir>/twin-<preset>-seed<seed>-<config hash>; plant another one there
    cached = bundle_twin_dir(read_manifest(bundle).provenance.twin, tmp_path, make=False)
    assert cached.name.startswith("twin-small-seed0-")  # the tiny twin is not the plain preset
    shutil.copytree(other, cached)
    result = CliRunner().invoke(main, ["demo", "--bundle", str(bundle), "--headless", "--duration", "1",
                                       "--workdir", str(tmp_path), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "is not the one bundle" in result.output and "seed is 5" in result.output
    assert not (tmp_path / "out").exists()


def test_make_twin_for_a_bundle_regenerates_the_twin_it_was_trained_on(twins, tmp_path):
    same, _, bundle = twins
    runner = CliRunner()
    out = tmp_path / "again"
    result = runner.invoke(main, ["data", "make-twin", "--bundle", str(bundle), "--out", str(out)])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "twin.json").read_text())
    assert meta["config"] == json.loads((same / "twin.json").read_text())["config"]
    assert twin_mismatches(meta, read_manifest(bundle)) == []
    refused = runner.invoke(main, ["data", "make-twin", "--bundle", str(bundle), "--seed", "3",
                                   "--out", str(tmp_path / "x")])
    assert refused.exit_code != 0 and "drop --seed" in refused.output


def test_bench_calibrate_refuses_a_twin_the_bundle_was_not_trained_on(twins, tmp_path):
    _, other, bundle = twins
    result = CliRunner().invoke(main, ["bench", "calibrate", "--twin", str(other), "--bundle", str(bundle),
                                       "--out", str(tmp_path / "b")])
    assert result.exit_code != 0
    assert "is not the twin" in result.output and "seed is 5" in result.output
    assert "data make-twin --bundle" in result.output
