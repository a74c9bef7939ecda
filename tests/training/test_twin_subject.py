"""A new twin subject: its draws, its signal (any chunking), and as a live headset answering markers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.lsl import unique_name
from helpers.twin import make_tiny_twin
from helpers.wait import wait_until

from neuroimagen.training.data.twin.eeg import NARROW, WIDE, build_model, draw_subject
from neuroimagen.training.data.twin.subject import TwinSubjectSource


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    return make_tiny_twin(tmp_path_factory.mktemp("twin"))


def _model(n_classes: int = 4):
    from neuroimagen.stream.montage import channel_positions, montage_ch_names

    return build_model(montage_ch_names(), channel_positions(), n_classes, 1000.0, np.random.default_rng(0))


def test_narrow_subject_draws_what_the_twin_always_drew() -> None:
    # the twins written before the wide variation: gain, shift, channel gains, then trial jitter
    model = _model()
    rng, ref = np.random.default_rng(5), np.random.default_rng(5)
    s = draw_subject(model, rng, NARROW)
    assert s.gain == ref.uniform(0.8, 1.25) and s.latency_shift_s == ref.uniform(-0.012, 0.012)
    np.testing.assert_array_equal(s.ch_gain, np.exp(0.1 * ref.standard_normal(128)))
    assert rng.standard_normal() == ref.standard_normal()  # nothing else was drawn
    np.testing.assert_array_equal(s.topo_class, model.topo_class)


def test_wide_subjects_have_their_own_topographies_latencies_and_gains() -> None:
    model = _model()
    a, b = (draw_subject(model, np.random.default_rng(k), WIDE) for k in (1, 2))
    for s in (a, b):
        r = np.sum(s.topo_class * model.topo_class, axis=1) / 128  # unit-RMS patterns: mean product = r
        assert np.all(r < 0.97) and np.all(r > 0.5), r
        assert np.any(np.abs(s.latency_fixed_s) > 1e-3) and np.any(np.abs(np.log(s.gain_fixed)) > 0.05)
    assert not np.allclose(a.topo_fixed, b.topo_fixed)


def test_source_is_chunking_independent_and_places_responses_at_onsets(twin: Path) -> None:
    image = next(iter(json.loads((twin / "stimuli.json").read_text())))
    sources = [TwinSubjectSource(twin, 11, block_s=2.0, crossfade_s=0.25) for _ in range(3)]
    for s in sources[:2]:
        s.add_onset(1900, image)  # straddles the first block boundary
        s.add_onset(3100, image)
    whole = sources[0].chunk(0, 5000)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, 5000), 40, replace=False))
    parts = [sources[1].chunk(a, b - a) for a, b in zip([0, *cuts], [*cuts, 5000], strict=True)]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)
    evoked = whole - sources[2].chunk(0, 5000)  # same subject and background, no stimuli
    assert np.all(evoked[:, :1900] == 0) and np.all(evoked[:, 2400:3100] == 0) and np.all(evoked[:, 3600:] == 0)
    assert evoked[:, 1900:2400].std() > 1e-6 and evoked[:, 3100:3600].std() > 1e-6
    # the background is continuous across the block joins (no step beyond the sample-to-sample spread)
    bg = sources[2].chunk(0, 5000)
    steps = np.abs(np.diff(bg, axis=1)).mean(axis=0)
    assert steps[1995:2005].max() < 3 * np.median(steps)
    assert not sources[0].add_onset(10, "no-such-image") and sources[0].n_unknown == 1


def test_new_subjects_differ_from_each_other_and_from_the_twin(twin: Path) -> None:
    a, b = TwinSubjectSource(twin, 1), TwinSubjectSource(twin, 2)
    assert not np.allclose(a.subject.topo_class, b.subject.topo_class)
    assert not np.allclose(a.chunk(0, 100), b.chunk(0, 100))
    meta = json.loads((twin / "twin.json").read_text())
    gains = {s["subject_params"]["gain"] for s in meta["sessions"]}
    assert a.subject.gain not in gains


def test_simulated_subject_answers_markers_at_their_timestamps(twin: Path, lsl_loopback) -> None:
    import pylsl

    from neuroimagen.stream.replay import make_marker_info
    from neuroimagen.training.data.twin.subject import SimulatedSubject

    name = unique_name("subject")
    image = next(iter(json.loads((twin / "stimuli.json").read_text())))
    markers = pylsl.StreamOutlet(make_marker_info(f"{name}-markers"))
    sim = SimulatedSubject(TwinSubjectSource(twin, 4), name=name, wait_for_consumers_s=5.0)
    with sim:
        inlet = pylsl.StreamInlet(pylsl.resolve_byprop("name", name, 1, 5.0)[0], max_buflen=30)
        inlet.open_stream(5.0)
        wait_until(lambda: sim._listener.connected and markers.have_consumers(), 10.0, message="marker link")
        wait_until(lambda: sim.t0 is not None, 5.0, message="streaming")
        stamps = [sim.t0 - 0.4]
        for k in range(3):  # 0.7 s apart at least: each response (0.5 s) ends before the next
            wait_until(lambda: pylsl.local_clock() > stamps[-1] + 0.7, 10.0, message="next onset")
            stamps.append(pylsl.local_clock())
            markers.push_sample([json.dumps({"image": image, "index": k})], stamps[-1])
        stamps = stamps[1:]
        data, ts = [], []
        def pulled_past_last() -> bool:
            chunk, t = inlet.pull_chunk(timeout=0.0, max_samples=4096)
            data.extend(chunk)
            ts.extend(t)
            return bool(ts) and ts[-1] > stamps[-1] + 0.6
        wait_until(pulled_past_last, 20.0, message="the last response")
    assert sim.n_markers == 3 and sim.n_late == 0
    x = np.asarray(data, dtype=np.float32).T
    idx = np.round((np.asarray(ts) - sim.t0) * 1000.0).astype(int)
    assert np.all(np.diff(idx) == 1)
    ref = TwinSubjectSource(twin, 4).chunk(0, idx[-1] + 1)[:, idx]  # the same subject, no stimuli
    evoked = x - ref
    onsets = [int(round((s - sim.t0) * 1000.0)) for s in stamps]
    assert [o for o, _ in sim.onsets] == onsets
    for o in onsets:
        pos = o - idx[0]
        assert np.abs(evoked[:, pos - 50 : pos]).max() < 1e-9  # nothing before the onset sample
        assert evoked[:, pos : pos + 500].std() > 1e-6        # the response from it
