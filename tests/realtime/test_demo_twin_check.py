"""The demo checks the twin it regenerates against the bundle's manifest before replaying it."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from neuroimagen.realtime.cli import main
from neuroimagen.realtime.demo import twin_mismatches
from neuroimagen.training.models.bundle import read_manifest


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


def test_the_demo_refuses_a_cached_twin_that_is_not_the_bundles(twins, tmp_path):
    _, other, bundle = twins
    import shutil

    # the demo caches the bundle's twin as <workdir>/twin-<preset>-seed<seed>; plant another one there
    shutil.copytree(other, tmp_path / "twin-small-seed0")
    result = CliRunner().invoke(main, ["demo", "--bundle", str(bundle), "--headless", "--duration", "1",
                                       "--workdir", str(tmp_path), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "is not the one bundle" in result.output and "seed is 5" in result.output
    assert not (tmp_path / "out").exists()
