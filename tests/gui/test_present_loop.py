"""The whole new-subject loop with no hardware: present (offscreen) -> simulated subject -> record ->
calibrate (tiny) -> run; markers, windows and images line up."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.bundles import write_twin_bundle
from helpers.lsl import unique_name
from helpers.twin import make_tiny_twin

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    return make_tiny_twin(tmp_path_factory.mktemp("twin"))


@pytest.mark.slow
def test_present_subject_record_calibrate_run(qapp, twin, lsl_loopback, tmp_path) -> None:
    from neuroimagen.gui.present import PresenterOptions, run_presenter
    from neuroimagen.realtime.cli import main
    from neuroimagen.stream.design import load_stimuli, make_schedule, read_session
    from neuroimagen.stream.replay import Player
    from neuroimagen.training.data.twin.subject import SimulatedSubject, TwinSubjectSource
    from neuroimagen.training.models.bundle import load_bundle, verify_bundle
    from neuroimagen.training.train.calibrate import calibrate, session_windows

    name = unique_name("subject")
    base = write_twin_bundle(tmp_path / "base", twin)
    stimuli = load_stimuli(twin / "images")
    trials = make_schedule(stimuli, soa_s=0.15, jitter_s=0.05, n_test_per_class=1, test_repeats=2,
                           break_every=0, max_trials=36, seed=3)
    # 1. the subject listens to <name>-markers; 2. the presenter opens it, records, shows
    sim = SimulatedSubject(TwinSubjectSource(twin, 21), name=name)
    with sim:
        meta = run_presenter(trials, tmp_path / "session", eeg_stream=name,
                             opts=PresenterOptions(stimulus_s=0.05, image_px=32, window_px=(64, 64), lead_in_s=1.5,
                                                   photodiode_px=8),
                             session_meta={"stimuli": str(stimuli.root)})
    assert meta["complete"] and meta["n_shown"] == len(trials)
    assert meta["timestamped_at"].startswith("after repaint()")
    assert sim.n_markers == len(trials) and sim.n_late == 0
    for key in ("onset_error_ms_p50", "onset_error_ms_p99", "flip_to_push_ms_p50", "flip_to_push_ms_p99"):
        assert np.isfinite(meta["timing"][key])
    # 3. markers, windows and images line up: each window's marker names the image shown at that
    #    onset, and sits on the sample where the subject put that image's response
    session, rec = read_session(tmp_path / "session")
    sw, _ = session_windows(tmp_path / "session", load_bundle(base))
    shown = [t["stem"] for t in session["trials"]]
    assert [p["image"] for p in sw.payloads] == shown == [t.stimulus.stem for t in trials]
    assert [p["index"] for p in sw.payloads] == list(range(len(trials)))
    stamps = np.load(tmp_path / "session" / f"{name}_timestamps.npy")
    first = int(round((stamps[0] - sim.t0) * 1000.0))  # absolute sample index of the recording's sample 0
    # the recorder maps a marker to the sample nearest its timestamp, the subject rounds (ts - t0) * sfreq
    np.testing.assert_allclose(sw.onsets + first, [o for o, _ in sim.onsets], atol=1)
    assert [json.loads(p)["image"] for _, p in sim.onsets] == shown
    flips = np.array([t["flip_ts"] for t in session["trials"]])
    np.testing.assert_allclose(stamps[sw.onsets], flips, atol=0.6e-3)  # the marker sample is the flip's
    # the response is in the recording at the onsets, not before the first
    ref = TwinSubjectSource(twin, 21)
    idx = first + np.arange(rec.n_times)
    evoked = rec.data - ref.chunk(0, int(idx[-1]) + 1)[:, idx]
    assert np.abs(evoked[:, : sw.onsets[0]]).max() < 1e-9 < evoked[:, sw.onsets[0] : sw.onsets[0] + 500].std()
    # 4. calibrate on a tiny budget: NEW is verified, BASE untouched
    report = calibrate(tmp_path / "session", base, tmp_path / "new", budget_s=20.0, max_steps=2, batch_size=8)
    assert report["n_trials"] == len(trials) and report["n_test"] == sum(t.test for t in trials)
    verify_bundle(tmp_path / "new")
    verify_bundle(base)
    # 5. run NEW live on the recorded session replayed (marker windows): every frame names a shown image
    from neuroimagen.stream.config import ReplayConfig

    player = Player(rec, name=f"{name}-replay", cfg=ReplayConfig(wait_for_consumers_s=30.0))
    with player:
        result = CliRunner().invoke(main, [
            "run", "--bundle", str(tmp_path / "new"), "--stream", f"{name}-replay", "--headless",
            "--duration", "5", "--out", str(tmp_path / "run"), "--mode", "marker",
        ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (tmp_path / "run" / "topk.jsonl").read_text().splitlines()]
    assert lines and all(x["marker"]["image"] in shown for x in lines)


def test_present_refuses_classes_the_bundle_cannot_score(twin, tmp_path) -> None:
    from helpers.bundles import write_tiny_bundle

    from neuroimagen.realtime.cli import main

    other = write_tiny_bundle(tmp_path / "other", class_names=["cat", "dog"])
    result = CliRunner().invoke(main, ["present", "--twin", str(twin), "--out", str(tmp_path / "s"), "--no-record",
                                       "--bundle", str(other)])
    assert result.exit_code == 1 and "has no targets for 4 class(es) shown: n90000000 (solid circle)" in result.output
    assert not (tmp_path / "s").exists()
    result = CliRunner().invoke(main, ["stream", "simulate", "--twin-subject", "3"])
    assert result.exit_code == 2 and "--twin-subject SEED and --twin DIR go together" in result.output


def test_timing_summary_is_flip_minus_intended_and_push_minus_flip() -> None:
    from neuroimagen.gui.present import timing_summary

    trials = [{"intended_ts": 10.0 + k, "flip_ts": 10.0 + k + 0.001 * k, "push_ts": 10.0 + k + 0.001 * k + 0.0002}
              for k in range(101)]
    t = timing_summary(trials + [{"intended_ts": 0.0}])
    assert t["n_shown"] == 101 and t["onset_error_ms_p50"] == pytest.approx(50.0)
    assert t["onset_error_ms_p99"] == pytest.approx(99.0) and t["flip_to_push_ms_p50"] == pytest.approx(0.2)
