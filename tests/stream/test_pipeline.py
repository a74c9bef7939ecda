"""WindowPipeline end to end against a real 129-channel outlet in a child process.

The outlet carries a counter in channel 0 (not a montage channel: the contract
drops it) and ``sin(i * 0.01 * k)`` in channel k for the montage's 128 channels
in a shuffled order, so every window can be located exactly in the source: its
values identify the sample indices (first_sample .. first_sample + 439) and the
channel order the contract restored.
"""

import logging

import numpy as np
import pytest
from helpers import wait_until
from helpers.lsl import spawn_outlet

from neuroimagen.stream.config import StreamConfig
from neuroimagen.stream.montage import montage_ch_names
from neuroimagen.stream.pipeline import WindowPipeline
from neuroimagen.stream.preprocessing import preprocess_continuous, preprocess_window

N_SAMPLES = 1500
N_TIMES = 440
HOP = 50
MONTAGE = montage_ch_names()
ORDER = np.random.default_rng(0).permutation(len(MONTAGE))  # stream position of each montage channel - 1
STREAM_NAMES = ["counter"] + [MONTAGE[i] for i in np.argsort(ORDER)]


def _source_volts(n: int) -> np.ndarray:
    """What the outlet sends, in model channel order, in volts: (128, n) float32."""
    idx = np.arange(n, dtype=np.float64)
    k = ORDER + 1  # montage channel j sits in stream channel ORDER[j] + 1
    uv = np.sin(idx[None, :] * 0.01 * k[:, None]).astype(np.float32)
    return uv * np.float32(1e-6)


def _cfg(**pre) -> StreamConfig:
    base = {"inlet": {"resolve_timeout_s": 10.0, "counter_channel": 0},
            "windowing": {"mode": "sliding", "n_times": N_TIMES, "hop_s": HOP / 1000}}
    if pre:
        base["preprocessing"] = pre
    return StreamConfig.model_validate(base)


RAW = dict(bandpass=None, notch_hz=None, reference="none", normalization={"mode": "none"})


def _spawn(**kw):
    return spawn_outlet(n_channels=129, sfreq=1000.0, n_samples=N_SAMPLES, ch_names=STREAM_NAMES,
                        unit="microvolts", wait_consumer=True, chunk_size=16, **kw)


def _collect(pipe: WindowPipeline, n_windows: int) -> list:
    got = []
    wait_until(lambda: got.extend(pipe.poll()) or len(got) >= n_windows, timeout=30,
               message=lambda: f"{n_windows} windows (have {len(got)}, {pipe.stats})")
    return got


N_EXPECTED = (N_SAMPLES - N_TIMES) // HOP + 1


def test_sliding_windows_are_exact_slices_of_the_source(lsl_loopback):
    with _spawn() as child, WindowPipeline(_cfg(**RAW), eeg_name=child.name) as pipe:
        assert pipe.ch_names == MONTAGE and pipe.sfreq == 1000.0
        windows = _collect(pipe, N_EXPECTED)
        _, ts, first, _ = pipe.inlet.buffer.read_since(0)
        assert first == 0
        stats = pipe.stats
    src = _source_volts(N_SAMPLES)
    assert [w.first_sample for w in windows] == [k * HOP for k in range(N_EXPECTED)]
    for w in windows:
        assert w.data.shape == (128, N_TIMES) and w.data.dtype == np.float32
        np.testing.assert_array_equal(w.data, src[:, w.first_sample : w.first_sample + N_TIMES])
        assert w.timestamp == ts[w.first_sample + N_TIMES - 1]  # LSL time of the last sample
        assert w.sfreq == 1000.0
    assert stats["n_received"] == N_SAMPLES and stats["gaps"] == [] and stats["n_lost_samples"] == 0
    assert stats["n_windows"] == N_EXPECTED and stats["window_ready_ms_p99"] is not None and stats["timestamp_to_ready_ms_p99"] is not None


def test_default_preprocessing_equals_the_offline_path(lsl_loopback):
    cfg = StreamConfig.model_validate(
        {"inlet": {"resolve_timeout_s": 10.0, "counter_channel": 0},
         "windowing": {"mode": "sliding", "n_times": N_TIMES, "hop_s": HOP / 1000},
         "preprocessing": {"resample_n_times": 512}}  # band-pass 5-95 Hz, window z-score, 440 -> 512
    )
    with _spawn() as child, WindowPipeline(cfg, eeg_name=child.name) as pipe:
        windows = _collect(pipe, N_EXPECTED)
    # the offline path training uses: one-shot continuous stage, then cut, then per-window stage
    cont = preprocess_continuous(_source_volts(N_SAMPLES), 1000.0, cfg.preprocessing, MONTAGE)
    assert len(windows) == N_EXPECTED
    for w in windows:
        ref = preprocess_window(cont[:, w.first_sample : w.first_sample + N_TIMES], cfg.preprocessing)
        assert w.data.shape == (128, 512)
        np.testing.assert_allclose(w.data, ref, rtol=1e-4, atol=2e-4)


def test_preprocessed_stream_skips_filter_and_normalisation(lsl_loopback, caplog):
    pre = {"bandpass_hz": [5, 95], "normalized": "dataset"}
    cfg = StreamConfig.model_validate(
        {"inlet": {"resolve_timeout_s": 10.0, "counter_channel": 0},
         "windowing": {"mode": "sliding", "n_times": N_TIMES, "hop_s": HOP / 1000}}
    )  # default preprocessing: band-pass + window z-score, which must NOT be applied again
    caplog.set_level(logging.WARNING, logger="neuroimagen.stream.pipeline")
    with _spawn(preprocessed=pre) as child, WindowPipeline(cfg, eeg_name=child.name) as pipe:
        assert pipe.meta.preprocessed == pre
        assert pipe.preprocessor is None and pipe.window_cfg.normalization.mode == "none"
        windows = _collect(pipe, 3)
    assert "ALREADY FILTERED" in caplog.text and "ALREADY NORMALISED" in caplog.text
    src = _source_volts(N_SAMPLES)
    for w in windows:
        np.testing.assert_array_equal(w.data, src[:, w.first_sample : w.first_sample + N_TIMES])


def test_worker_keeps_only_the_newest_window_and_counts_the_dropped(lsl_loopback):
    with _spawn() as child:
        pipe = WindowPipeline(_cfg(**RAW), eeg_name=child.name, run_worker=True)
        with pipe:
            wait_until(lambda: pipe.n_windows >= N_EXPECTED, timeout=30,
                       message=lambda: f"{N_EXPECTED} windows ({pipe.stats})")
            with pytest.raises(RuntimeError):
                pipe.start()
            newest = pipe.latest(timeout=1.0)
            assert pipe.latest() is None  # taken: the slot is empty until a new window
    # nothing was taken before the end: every window but the newest was dropped
    assert newest.first_sample == (N_EXPECTED - 1) * HOP
    assert pipe.n_dropped_windows == N_EXPECTED - 1
    src = _source_volts(N_SAMPLES)
    np.testing.assert_array_equal(newest.data, src[:, newest.first_sample : newest.first_sample + N_TIMES])


def test_missing_dataset_stats_is_a_clear_error(lsl_loopback):
    cfg = _cfg(**{**RAW, "normalization": {"mode": "dataset"}})
    with _spawn() as child:
        pipe = WindowPipeline(cfg, eeg_name=child.name)
        with pytest.raises(ValueError, match="NormStats"):
            pipe.start()
        assert not pipe.inlet.running


def test_marker_locked_windows_from_the_replay_player(lsl_loopback):
    """Marker mode with H3's Player (EEG + '<name>-markers' outlets): windows lock exactly."""
    import json

    from helpers.lsl import unique_name

    from neuroimagen.stream.config import ReplayConfig
    from neuroimagen.stream.readers import Recording
    from neuroimagen.stream.replay import Player

    n = 3000
    src = _source_volts(n)
    stream_order = np.argsort(ORDER)  # stream channel i carries montage channel stream_order[i]
    onsets = [500, 1200, 2100]
    payloads = [json.dumps({"image": f"n0000000{k}_1", "label": k}) for k in range(3)]
    rec = Recording(data=src[stream_order], sfreq=1000.0, ch_names=STREAM_NAMES[1:],
                    ch_types=["eeg"] * 128, units=["volts"] * 128,
                    markers=list(zip(onsets, payloads, strict=True)), source="synthetic")
    name = unique_name("replay")
    cfg = StreamConfig.model_validate(
        {"inlet": {"resolve_timeout_s": 10.0},
         "windowing": {"mode": "marker", "n_times": N_TIMES, "marker_offset_samples": 20},
         "preprocessing": RAW}
    )
    player = Player(rec, name, ReplayConfig(speed=1.0, wait_for_consumers_s=20.0))
    player.start()
    try:
        with WindowPipeline(cfg, eeg_name=name) as pipe:
            assert pipe.marker_inlet is not None and pipe.marker_inlet.name == f"{name}-markers"
            windows = _collect(pipe, 3)
    finally:
        player.stop()
    assert [w.marker for w in windows] == payloads
    for w, onset, k in zip(windows, onsets, range(3), strict=True):
        assert w.first_sample == onset + 20
        assert dict(w.meta) == {"image": f"n0000000{k}_1", "label": k}
        np.testing.assert_array_equal(w.data, src[:, onset + 20 : onset + 20 + N_TIMES])


@pytest.mark.slow
def test_windows_never_straddle_a_recover_and_stay_exact(lsl_loopback):
    from helpers.lsl import unique_name

    name = unique_name("pipe-recover")
    a = _spawn(name=name)  # counter 0..1499, then the outlet is killed
    pipe = WindowPipeline(_cfg(**RAW), eeg_name=name)
    got = []
    try:
        pipe.start()
        got.extend(_collect(pipe, N_EXPECTED))
        a.kill()
        with spawn_outlet(name, n_channels=129, sfreq=1000.0, n_samples=N_SAMPLES, ch_names=STREAM_NAMES,
                          unit="microvolts", wait_consumer=True, chunk_size=16, source_id=a.source_id,
                          start=5000) as b:
            got.extend(_collect(pipe, N_EXPECTED))
            b.kill()
    finally:
        pipe.stop()
        a.stop()
    data, _, _, _ = pipe.inlet.buffer.read_since(0)
    counter = data[0].astype(np.int64)
    np.testing.assert_array_equal(counter, np.r_[0:N_SAMPLES, 5000 : 5000 + N_SAMPLES])
    assert [g.n_samples for g in pipe.inlet.gaps] == [5000 - N_SAMPLES]
    assert pipe.n_segments == 2
    src = _source_volts(5000 + N_SAMPLES)
    before = [k * HOP for k in range(N_EXPECTED)]
    assert [w.first_sample for w in got] == before + [N_SAMPLES + f for f in before]
    for w in got:  # stream index -> source counter: exact slices on both sides, none across
        c0 = int(counter[w.first_sample])
        assert int(counter[w.first_sample + N_TIMES - 1]) == c0 + N_TIMES - 1
        np.testing.assert_array_equal(w.data, src[:, c0 : c0 + N_TIMES])


def test_caller_acquisition_gives_the_same_exact_windows(lsl_loopback):
    """acquisition='caller': no acquisition thread; each poll() pulls first, in this thread."""
    with _spawn() as child, WindowPipeline(_cfg(**RAW), eeg_name=child.name, acquisition="caller") as pipe:
        assert not pipe.inlet.running
        windows = _collect(pipe, N_EXPECTED)
    src = _source_volts(N_SAMPLES)
    assert [w.first_sample for w in windows] == [k * HOP for k in range(N_EXPECTED)]
    for w in windows:
        np.testing.assert_array_equal(w.data, src[:, w.first_sample : w.first_sample + N_TIMES])


def test_restart_after_stop_counts_afresh(lsl_loopback):
    from helpers.lsl import unique_name

    name = unique_name("pipe-restart")
    with spawn_outlet(name, n_channels=129, sfreq=1000.0, n_samples=None, ch_names=STREAM_NAMES,
                      unit="microvolts", chunk_size=16):
        pipe = WindowPipeline(_cfg(**RAW), eeg_name=name)
        with pipe:
            first = _collect(pipe, 3)
        with pipe:  # the outlet kept going: a stale last timestamp would make this "a gap"
            assert pipe.n_windows == 0 and pipe.n_segments == 1
            again = _collect(pipe, 3)
            stats = pipe.stats
    assert first[0].first_sample == 0 and again[0].first_sample == 0
    assert stats["gaps"] == [] and stats["n_gap_samples"] == 0 and stats["n_segments"] == 1
    assert stats["n_windows"] == len(again) and stats["n_lost_samples"] == 0


def _nan_outlet():
    # sample 600 is NaN/inf: an inlet with on_nonfinite='raise' fails there
    return spawn_outlet(n_channels=129, sfreq=1000.0, n_samples=N_SAMPLES, ch_names=STREAM_NAMES,
                        unit="microvolts", wait_consumer=True, chunk_size=16, nonfinite_at=[600])


def test_poll_re_raises_the_inlet_error(lsl_loopback):
    from neuroimagen.stream.inlet import NonFiniteError

    cfg = _cfg(**RAW).model_copy(update={"inlet": _cfg().inlet.model_copy(update={"on_nonfinite": "raise"})})
    with _nan_outlet() as child:
        pipe = WindowPipeline(cfg, eeg_name=child.name)
        pipe.start()
        try:
            with pytest.raises(NonFiniteError, match="at sample 600"):
                wait_until(lambda: pipe.poll() and False, timeout=30, message="the inlet error")
        finally:
            with pytest.raises(NonFiniteError):
                pipe.stop()


def test_latest_re_raises_the_worker_error_instead_of_none_forever(lsl_loopback):
    from neuroimagen.stream.inlet import NonFiniteError

    cfg = _cfg(**RAW).model_copy(update={"inlet": _cfg().inlet.model_copy(update={"on_nonfinite": "raise"})})
    with _nan_outlet() as child:
        pipe = WindowPipeline(cfg, eeg_name=child.name, run_worker=True)
        pipe.start()
        try:
            with pytest.raises(NonFiniteError, match="at sample 600"):
                wait_until(lambda: pipe.latest(timeout=0.5) and False, timeout=30, message="the worker error")
            wait_until(lambda: not pipe.running, message="the worker to end")
        finally:
            with pytest.raises(NonFiniteError):
                pipe.stop()
