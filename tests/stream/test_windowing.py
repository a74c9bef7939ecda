"""Windowers: every window is exactly the right slice of a sample-counter stream."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neuroimagen.stream.config import WindowingConfig
from neuroimagen.stream.windowing import (
    MarkerLockedWindower,
    SlidingWindower,
    Window,
    cut_windows,
    make_windower,
    parse_marker_payload,
)

SFREQ = 1000.0
T0 = 1234.5  # LSL-like clock offset


def counter_stream(n_total: int, n_channels: int = 8, seed: int = 0):
    """Channel 0 counts samples (exact in float32 below 2**24); the rest is noise."""
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((n_channels, n_total)).astype(np.float32)
    data[0] = np.arange(n_total, dtype=np.float32)
    ts = T0 + np.arange(n_total) / SFREQ
    return data, ts


def random_chunks(n_total: int, rng: np.random.Generator, max_size: int):
    """Chunk boundaries with sizes in [0, max_size] (empty chunks included)."""
    edges = [0]
    while edges[-1] < n_total:
        edges.append(min(n_total, edges[-1] + int(rng.integers(0, max_size + 1))))
    return list(zip(edges[:-1], edges[1:], strict=True))


def assert_exact_slice(w: Window, data: np.ndarray, ts: np.ndarray, n_times: int) -> None:
    a = w.first_sample
    assert w.data.shape == (data.shape[0], n_times)
    assert w.data.dtype == np.float32
    # the counter proves no drop, duplicate or reordering inside the window
    np.testing.assert_array_equal(w.data[0], np.arange(a, a + n_times, dtype=np.float32))
    np.testing.assert_array_equal(w.data, data[:, a : a + n_times])
    assert w.timestamp == ts[a + n_times - 1]


# --------------------------------------------------------------------------- sliding


@pytest.mark.parametrize("max_chunk", [1, 7, 64, 1000, 5000])
@pytest.mark.parametrize(("n_times", "hop"), [(440, 50), (440, 440), (100, 230), (5, 1)])
def test_sliding_exact_slices_any_chunking(max_chunk, n_times, hop):
    n_total = 3000
    data, ts = counter_stream(n_total)
    rng = np.random.default_rng(max_chunk * 1000 + n_times + hop)
    win = SlidingWindower(data.shape[0], n_times, hop, sfreq=SFREQ)
    got = []
    for a, b in random_chunks(n_total, rng, max_chunk):
        got.extend(win.push(data[:, a:b], ts[a:b]))
    expected_starts = list(range(0, n_total - n_times + 1, hop))
    assert [w.first_sample for w in got] == expected_starts
    for w in got:
        assert_exact_slice(w, data, ts, n_times)
        assert w.sfreq == SFREQ and w.marker is None
    assert win.n_windows == len(expected_starts)
    assert win.n_samples == n_total


def test_sliding_windows_do_not_alias_the_buffer():
    data, ts = counter_stream(2000)
    win = SlidingWindower(data.shape[0], 100, 10, sfreq=SFREQ)
    first = win.push(data[:, :100], ts[:100])[0]
    keep = first.data.copy()
    for i in range(100, 2000, 3):  # many pushes force buffer compaction
        win.push(data[:, i : i + 3], ts[i : i + 3])
    np.testing.assert_array_equal(first.data, keep)


def test_sliding_reset_and_errors():
    data, ts = counter_stream(1000)
    win = SlidingWindower(data.shape[0], 200, 100, sfreq=SFREQ)
    assert len(win.push(data, ts)) == 9
    win.reset()
    out = win.push(data[:, 500:], ts[500:])
    assert out[0].first_sample == 0  # indices restart after reset
    np.testing.assert_array_equal(out[0].data, data[:, 500:700])
    with pytest.raises(ValueError, match="n_times"):
        win.push(data[:3], ts)
    with pytest.raises(ValueError, match="timestamps"):
        win.push(data[:, :10], ts[:9])
    with pytest.raises(ValueError):
        SlidingWindower(4, 0, 10)


def test_cut_windows_matches_slicing_and_estimates_sfreq():
    data, ts = counter_stream(1500)
    wins = cut_windows(data, ts, 440, 50)
    assert [w.first_sample for w in wins] == list(range(0, 1500 - 440 + 1, 50))
    for w in wins:
        assert_exact_slice(w, data, ts, 440)
        assert w.sfreq == pytest.approx(SFREQ, rel=1e-6)


def test_make_windower_from_config():
    sliding = make_windower(WindowingConfig(hop_s=0.05, n_times=440), 128, 1000.0)
    assert isinstance(sliding, SlidingWindower)
    assert (sliding.n_times, sliding.hop_samples) == (440, 50)
    marker = make_windower(
        WindowingConfig(mode="marker", marker_offset_samples=20, marker_max_pending_s=3.0),
        16,
        512.0,
    )
    assert isinstance(marker, MarkerLockedWindower)
    assert (marker.offset_samples, marker.max_pending_s, marker.sfreq) == (20, 3.0, 512.0)


# --------------------------------------------------------------------------- markers


def test_parse_marker_payload():
    assert parse_marker_payload('{"image": "n02951358_31190", "label": 3}') == {
        "image": "n02951358_31190",
        "label": 3,
    }
    assert parse_marker_payload("Stimulus/S  1") == {"description": "Stimulus/S  1"}
    assert parse_marker_payload("{not json") == {"description": "{not json"}
    assert parse_marker_payload("[1, 2]") == {"description": "[1, 2]"}


@pytest.mark.parametrize("max_chunk", [1, 13, 400])
@pytest.mark.parametrize("when", ["before", "after", "mixed"])
def test_marker_windows_exact_any_chunking_and_arrival(max_chunk, when):
    n_total, n_times, offset = 6000, 440, 20
    data, ts = counter_stream(n_total)
    rng = np.random.default_rng(max_chunk + len(when))
    onsets = np.sort(rng.choice(np.arange(10, n_total - n_times - offset), 25, replace=False))
    # marker timestamps jittered within +-0.4 sample: still lock to their onset sample
    jitter = rng.uniform(-0.4, 0.4, onsets.size) / SFREQ
    markers = [
        (ts[o] + j, json.dumps({"image": f"img{o}", "label": int(o % 7)}), int(o))
        for o, j in zip(onsets, jitter, strict=True)
    ]
    win = MarkerLockedWindower(data.shape[0], n_times, offset, SFREQ)
    arrival = {
        "before": np.full(len(markers), -1),  # all known before any sample
        "after": onsets + n_times + offset + 200,  # after their whole window arrived
        "mixed": onsets + rng.integers(-300, 900, onsets.size),
    }[when]
    added = np.zeros(len(markers), dtype=bool)
    got = []
    for a, b in random_chunks(n_total, rng, max_chunk):
        for k, (mts, payload, _) in enumerate(markers):
            if not added[k] and arrival[k] < b:
                win.add_marker(mts, payload)
                added[k] = True
        got.extend(win.push(data[:, a:b], ts[a:b]))
    for k, (mts, payload, _) in enumerate(markers):
        if not added[k]:
            win.add_marker(mts, payload)
    got.extend(win.push(data[:, :0], ts[:0]))  # an empty push delivers late markers

    starts = [w.first_sample for w in got]
    # each marker yields exactly one window; windows of late markers come out when the
    # marker arrives, so only markers known in advance give stream order overall
    assert sorted(starts) == [int(o) + offset for o in onsets]
    if when == "before":
        assert starts == sorted(starts)
    by_onset = {o: (mts, payload) for mts, payload, o in markers}
    for w in got:
        assert_exact_slice(w, data, ts, n_times)
        mts, payload = by_onset[w.first_sample - offset]
        assert w.marker == payload and w.marker_timestamp == mts
        assert w.meta == json.loads(payload)
        assert w.sfreq == SFREQ
    assert win.n_windows == len(markers) and win.n_pending == 0 and win.n_dropped == 0


def test_marker_out_of_order_timestamps():
    data, ts = counter_stream(3000)
    win = MarkerLockedWindower(data.shape[0], 100, 0, SFREQ)
    for onset in (2000, 500, 1200, 500):  # non-monotonic, one onset twice
        win.add_marker(ts[onset], f"m{onset}")
    out = []
    for i in range(0, 3000, 250):
        out += win.push(data[:, i : i + 250], ts[i : i + 250])
    # each marker resolves by its own timestamp; windows come out in stream order
    assert [w.first_sample for w in out] == [500, 500, 1200, 2000]
    assert [w.marker for w in out] == ["m500", "m500", "m1200", "m2000"]
    for w in out:
        assert_exact_slice(w, data, ts, 100)


def test_marker_pending_until_data_then_expired():
    data, ts = counter_stream(5000)
    win = MarkerLockedWindower(data.shape[0], 440, 20, SFREQ, max_pending_s=2.0)
    assert win.push(data[:, :1000], ts[:1000]) == []
    win.add_marker(ts[900], "incomplete-then-complete")
    win.add_marker(ts[999] + 0.5, "future")  # its onset sample has not arrived yet
    assert win.push(data[:, :0], ts[:0]) == [] and win.n_pending == 2
    out = win.push(data[:, 1000:1359], ts[1000:1359])
    assert out == [] and win.n_pending == 2  # the first window needs samples up to 1359
    out = win.push(data[:, 1359:1700], ts[1359:1700])
    assert [w.marker for w in out] == ["incomplete-then-complete"]
    assert_exact_slice(out[0], data, ts, 440)
    # the stream stalls: the future marker's window never completes
    assert win.n_pending == 1
    assert win.expire(ts[1699] + 1.0) == 0
    assert win.expire(ts[999] + 0.5 + 2.5) == 1
    assert win.n_pending == 0 and win.n_expired == 1 and win.n_dropped == 1


def test_marker_in_an_eeg_gap_is_dropped_not_misplaced():
    data, ts = counter_stream(4000)
    win = MarkerLockedWindower(data.shape[0], 100, 0, SFREQ, max_pending_s=1.0)
    win.push(data[:, :1000], ts[:1000])
    # more than half a sample after the last sample: its onset would be sample 1000
    win.add_marker(ts[999] + 0.0006, "needs-sample-1000")
    ts_gap = ts.copy()
    ts_gap[1000:] += 5.0  # EEG gap: no sample near the marker
    out = win.push(data[:, 1000:2000], ts_gap[1000:2000])
    assert out == [] and win.n_no_onset == 1 and win.n_pending == 0


def test_marker_older_than_history_is_dropped():
    data, ts = counter_stream(20000)
    win = MarkerLockedWindower(data.shape[0], 100, 0, SFREQ, max_pending_s=1.0, history_s=1.0)
    for i in range(0, 20000, 100):
        win.push(data[:, i : i + 100], ts[i : i + 100])
    win.add_marker(ts[100], "ancient")
    win.add_marker(ts[19500], "recent")
    out = win.push(data[:, :0], ts[:0])
    assert [w.marker for w in out] == ["recent"]
    assert_exact_slice(out[0], data, ts, 100)
    assert win.n_too_old == 1


def test_marker_history_boundary_onset_at_oldest_kept_sample():
    data, ts = counter_stream(20000)
    win = MarkerLockedWindower(data.shape[0], 50, 0, SFREQ, max_pending_s=1.0, history_s=1.0)
    for i in range(0, 20000, 100):
        win.push(data[:, i : i + 100], ts[i : i + 100])
    oldest = win._buf.start
    assert oldest > 0
    win.add_marker(ts[oldest], "edge")
    out = win.push(data[:, :0], ts[:0])
    assert [w.first_sample for w in out] == [oldest]
    assert win.n_too_old == 0


def test_marker_queue_is_bounded():
    win = MarkerLockedWindower(2, 10, 0, SFREQ, max_pending=3)
    for k in range(5):
        win.add_marker(T0 + k, f"m{k}")
    assert win.n_pending == 3 and win.n_overflow == 2


def test_marker_validation():
    with pytest.raises(ValueError, match="max_pending_s"):
        MarkerLockedWindower(4, 440, 20, SFREQ, max_pending_s=0.3)
    with pytest.raises(ValueError, match="sfreq"):
        MarkerLockedWindower(4, 440, 20, 0.0)


# --------------------------------------------------------------------------- speed


@pytest.mark.parametrize("speed", [0.5, 2.0, 4.0])
@pytest.mark.parametrize("max_chunk", [1, 10, 300])
def test_marker_locks_exactly_when_replayed_faster_or_slower(speed, max_chunk):
    # a replay at `speed` stamps samples 1/(sfreq*speed) apart while the declared
    # rate stays sfreq; a marker stamped with its onset sample's own timestamp
    # must still lock to exactly that sample
    data, _ = counter_stream(4000)
    ts = T0 + np.arange(4000) / (SFREQ * speed)
    win = MarkerLockedWindower(data.shape[0], 200, 20, SFREQ)
    onsets = [300, 1001, 2500, 3333]
    for onset in onsets:
        win.add_marker(ts[onset], f"m{onset}")
    out = []
    for a, b in random_chunks(4000, np.random.default_rng(1), max_chunk):
        out += win.push(data[:, a:b], ts[a:b])
    assert [w.first_sample for w in out] == [o + 20 for o in onsets]
    for w in out:
        assert_exact_slice(w, data, ts, 200)
