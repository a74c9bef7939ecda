"""The twin's oracle decoder: far above chance with class content, at chance without it."""

from __future__ import annotations

import pytest

from neuroimagen.training.data.twin.oracle import run_oracle

pytestmark = pytest.mark.slow


def test_oracle_reads_the_class_only_when_the_twin_encodes_it(tmp_path):
    from helpers.twin import make_tiny_twin

    from neuroimagen.training.config import TwinConfig
    from neuroimagen.training.data.twin import make_twin

    twin = make_tiny_twin(tmp_path / "twin")
    res = run_oracle(twin, "all", background_s=30)
    assert res["n_test"] == 80 and res["chance"] == 0.25
    assert res["accuracy"] >= 0.7, res
    # the same generative model without the class component: the matched filter has nothing to find
    from helpers.twin import TINY_TWIN

    flat = tmp_path / "flat"
    make_twin(flat, TwinConfig(seed=0, class_snr=0.0, **TINY_TWIN))
    res0 = run_oracle(flat, "all", background_s=30)
    assert res0["accuracy"] <= 0.45, res0


def test_oracle_refuses_a_twin_without_subject_parameters(tmp_path):
    import json

    from helpers.twin import make_tiny_twin

    from neuroimagen.training.data.twin.oracle import OracleDecoder

    twin = make_tiny_twin(tmp_path / "twin")
    meta = json.loads((twin / "twin.json").read_text())
    for s in meta["sessions"]:
        del s["subject_params"]
    (twin / "twin.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="subject_params"):
        OracleDecoder(twin, background_s=10)
