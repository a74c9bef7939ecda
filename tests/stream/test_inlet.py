"""EEGInlet against real peers: LSL outlets in child processes with a sample counter.

Channel 0 of every child outlet counts samples, so the buffer can be checked
exactly: nothing dropped, duplicated or reordered, including across a recover.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers import wait_until
from helpers.lsl import spawn_outlet, unique_name

from neuroimagen.stream.config import InletConfig
from neuroimagen.stream.inlet import (
    EEGInlet,
    NonFiniteError,
    StreamNotFoundError,
    list_streams,
    resolve_stream,
)


def _cfg(name: str, **kw) -> InletConfig:
    kw.setdefault("resolve_timeout_s", 10.0)
    return InletConfig(name=name, **kw)


def _read_all(inlet: EEGInlet) -> tuple[np.ndarray, np.ndarray]:
    data, ts, first, lost = inlet.buffer.read_since(0)
    assert (first, lost) == (0, 0)
    return data, ts


def _start_all(*inlets: EEGInlet) -> None:
    """Start inlets concurrently (each resolve takes a while) so all catch a held outlet's start."""
    with ThreadPoolExecutor(len(inlets)) as pool:
        for fut in [pool.submit(inlet.start) for inlet in inlets]:
            fut.result()


def _wait_received(inlet: EEGInlet, n: int, timeout: float = 20.0) -> None:
    wait_until(lambda: inlet.check() or inlet.n_received >= n, timeout=timeout,
               message=lambda: f"{n} samples (have {inlet.n_received})")


def test_resolve_timeout_lists_the_streams_found(lsl_loopback):
    with spawn_outlet(stype="EEG", n_channels=2) as child:
        wait_until(lambda: any(m.source_id == child.source_id for m in list_streams(0.5)), timeout=15)
        with pytest.raises(StreamNotFoundError) as err:
            resolve_stream(name=unique_name("absent"), timeout=0.5)
        text = str(err.value)
        assert "streams found" in text
        assert child.name in text and child.source_id in text and "type='EEG'" in text
        assert "host=" in text
        with pytest.raises(StreamNotFoundError):
            EEGInlet(_cfg(unique_name("absent"), resolve_timeout_s=0.3)).start()


def test_every_sample_arrives_once_in_order_with_metadata(lsl_loopback):
    import pylsl

    n = 3000
    t_before = pylsl.local_clock()
    with spawn_outlet(n_channels=8, n_samples=n, chunk_size=7, wait_consumer=True, unit="microvolts") as child:
        with EEGInlet(_cfg(child.name, counter_channel=0)) as inlet:
            meta = inlet.meta
            assert (meta.name, meta.source_id, meta.n_channels, meta.sfreq) == (child.name, child.source_id, 8, 1000.0)
            assert meta.ch_names == ["counter"] + [f"ch{i}" for i in range(1, 8)]
            assert meta.units == ["microvolts"] * 8 and meta.preprocessed is None
            # read incrementally, as a consumer does
            parts, index = [], 0
            while index < n:
                inlet.buffer.wait_for(index, 10.0)
                data, ts, first, lost = inlet.buffer.read_since(index)
                assert (first, lost) == (index, 0)
                parts.append((data, ts))
                index += data.shape[1]
                inlet.check()
            tc = inlet.time_correction()
        data = np.concatenate([p[0] for p in parts], axis=1)
        ts = np.concatenate([p[1] for p in parts])
    idx = np.arange(n, dtype=np.float64)
    np.testing.assert_array_equal(data[0], idx)
    expected = np.sin(idx[:, None] * 0.01 * np.arange(1, 8)).T.astype(np.float32)
    np.testing.assert_array_equal(data[1:], expected)
    assert data.dtype == np.float32 and ts.dtype == np.float64
    assert np.all(np.diff(ts) > 0)
    assert abs(tc) < 0.01  # same host
    assert inlet.n_received == n and not inlet.gaps and inlet.n_counter_errors == 0
    # local-clock timestamps: every sample was stamped between this test's start and now
    assert t_before < ts[0] and ts[-1] < pylsl.local_clock()


@pytest.mark.slow
def test_recover_after_outlet_loss_reports_the_gap_exactly(lsl_loopback):
    name = unique_name("recover")
    a = spawn_outlet(name, n_channels=4, n_samples=1000, wait_go=True)
    counted = EEGInlet(_cfg(name, counter_channel=0))
    by_time = EEGInlet(_cfg(name))  # no counter: gap from the timestamp jump
    _start_all(counted, by_time)
    a.go()  # both inlets are subscribed: both see the counter from 0
    try:
        _wait_received(counted, 1000)
        _wait_received(by_time, 1000)
        a.kill()  # the outlet vanishes without a goodbye
        # a new outlet, SAME source_id (liblsl's recover reattaches), continuing the counter
        # 4000 samples on; it holds its first sample until one inlet is back
        with spawn_outlet(name, n_channels=4, source_id=a.source_id, start=5000, n_samples=2000,
                          wait_consumer=True) as b:
            wait_until(lambda: counted.check() or counted._last_counter == 6999, timeout=40)
            wait_until(lambda: by_time.check() or by_time.n_received >= 1000
                       and by_time.buffer.latest(1)[0][0, 0] == 6999, timeout=40)
            b.kill()
            counted.stop()  # stops with the outlet gone (raises WorkerStopTimeout if it cannot)
            by_time.stop()
    finally:
        counted.stop()
        by_time.stop()
        a.stop()
    firsts = []
    for inlet in (counted, by_time):
        data, ts = _read_all(inlet)
        # exact before; exact and contiguous after (from wherever this inlet reconnected)
        first_after = int(data[0, 1000])
        firsts.append(first_after)
        np.testing.assert_array_equal(data[0], np.r_[0:1000, first_after:7000])
        assert np.all(np.diff(ts) > 0)
        assert len(inlet.gaps) == 1
        gap = inlet.gaps[0]
        assert gap.at_index == 1000 and gap.at_timestamp == ts[1000]
        assert gap.seconds == pytest.approx(ts[1000] - ts[999] - 1e-3)
        assert gap.seconds > 0 and not gap.reconnected  # liblsl's recover, not a re-resolve
    assert 5000 in firsts  # the outlet held its first sample until an inlet was back
    assert counted.gaps[0].n_samples == firsts[0] - 1000  # exact, from the counter
    assert by_time.gaps[0].n_samples == round((by_time.gaps[0].seconds + 1e-3) * 1000) - 1


def test_nonfinite_samples_are_counted_and_handled_per_policy(lsl_loopback):
    bad = [100, 101, 250]
    with spawn_outlet(n_channels=8, n_samples=400, wait_go=True, nonfinite_at=bad) as child:
        hold = EEGInlet(_cfg(child.name, on_nonfinite="hold"))
        zero = EEGInlet(_cfg(child.name, on_nonfinite="zero"))
        fail = EEGInlet(_cfg(child.name, on_nonfinite="raise"))
        _start_all(hold, zero, fail)
        child.go()
        try:
            _wait_received(hold, 400)
            _wait_received(zero, 400)
            wait_until(lambda: not fail.running, timeout=20, message="the raising inlet to stop")
        finally:
            hold.stop()
            zero.stop()
            with pytest.raises(NonFiniteError, match=r"channel 'ch1' at sample 100"):
                fail.stop()
    idx = np.arange(400, dtype=np.float64)
    clean = np.sin(idx[:, None] * 0.01 * np.arange(1, 8)).T.astype(np.float32)
    for inlet in (hold, zero):
        assert inlet.n_nonfinite == 3
        data, _ = _read_all(inlet)
        assert np.isfinite(data).all()
        np.testing.assert_array_equal(data[0], idx)
        good = np.setdiff1d(np.arange(400), bad)
        np.testing.assert_array_equal(data[1:, good], clean[:, good])
        np.testing.assert_array_equal(data[2:7, bad], clean[1:6, bad])  # untouched channels
    h, _ = _read_all(hold)
    for ch in (1, 7):  # NaN in ch1, inf in ch7: held from the last finite sample
        np.testing.assert_array_equal(h[ch, [100, 101, 250]], clean[ch - 1, [99, 99, 249]])
    z, _ = _read_all(zero)
    assert np.all(z[[1, 7]][:, bad] == 0)


def test_nonmonotonic_timestamps_are_counted_or_monotonized(lsl_loopback):
    # every 5th chunk of 10 is stamped 0.5 s in the past: 10 backward steps in 500 samples
    with spawn_outlet(n_channels=3, n_samples=500, chunk_size=10, backstep_every=5,
                      wait_go=True) as child:
        raw = EEGInlet(_cfg(child.name, counter_channel=0, dejitter=False, monotonize=False))
        mono = EEGInlet(_cfg(child.name, counter_channel=0, dejitter=False, monotonize=True))
        _start_all(raw, mono)
        child.go()
        try:
            _wait_received(raw, 500)
            _wait_received(mono, 500)
        finally:
            raw.stop()
            mono.stop()
    for inlet in (raw, mono):
        data, _ = _read_all(inlet)
        np.testing.assert_array_equal(data[0], np.arange(500))
        assert not inlet.gaps  # counter says nothing was lost, whatever the timestamps do
    _, ts_raw = _read_all(raw)
    assert raw.n_nonmonotonic == 10 == np.count_nonzero(np.diff(ts_raw) < 0)
    _, ts_mono = _read_all(mono)
    assert mono.n_nonmonotonic == 0 and np.all(np.diff(ts_mono) >= 0)


def test_lost_outlet_without_recover_is_an_error_from_stop(lsl_loopback):
    with spawn_outlet(n_channels=2, n_samples=None) as child:
        inlet = EEGInlet(_cfg(child.name, recover=False))
        inlet.start()
        try:
            _wait_received(inlet, 50)
            child.kill()
            wait_until(lambda: not inlet.running, timeout=20, message="the inlet to notice the loss")
        finally:
            with pytest.raises(ConnectionError, match="was lost and recover is off"):
                inlet.stop()


def test_stream_list_cli_shows_every_visible_stream(lsl_loopback):
    import json

    from click.testing import CliRunner

    from neuroimagen.realtime.cli import main

    with spawn_outlet(n_channels=5, sfreq=250.0, stype="EEG") as child:
        wait_until(lambda: any(m.source_id == child.source_id for m in list_streams(0.5)), timeout=15)
        result = CliRunner().invoke(main, ["stream", "list", "--timeout", "1.0", "--json"])
        assert result.exit_code == 0, result.output
        rows = {r["source_id"]: r for r in json.loads(result.output[result.output.index("["):])}
        row = rows[child.source_id]
        assert (row["name"], row["stype"], row["n_channels"], row["sfreq"]) == (child.name, "EEG", 5, 250.0)
        assert row["hostname"]
        table = CliRunner().invoke(main, ["stream", "list", "--timeout", "1.0"], env={"COLUMNS": "300"})
        assert table.exit_code == 0 and child.name in table.output and "source_id" in table.output


def test_restart_after_stop_starts_fresh(lsl_loopback):
    """A second start() gets a new buffer, counters and gap list: no spurious gap at index 0."""
    with spawn_outlet(n_channels=3, n_samples=None, chunk_size=5) as child:
        inlet = EEGInlet(_cfg(child.name, counter_channel=0))
        inlet.start()
        try:
            _wait_received(inlet, 300)
        finally:
            inlet.stop()
        first_run = _read_all(inlet)[0][0]
        np.testing.assert_array_equal(np.diff(first_run), 1)
        # the outlet keeps counting while we are away: had the last timestamp or counter
        # survived, the first chunk of the second run would be "a gap"
        inlet.start()
        try:
            _wait_received(inlet, 300)
            data, _ = _read_all(inlet)
        finally:
            inlet.stop()
    assert inlet.gaps == [] and inlet.n_counter_errors == 0
    assert inlet.buffer.total_written == inlet.n_received >= 300
    assert inlet.n_received == data.shape[1] < first_run.size + data.shape[1]  # counted afresh
    np.testing.assert_array_equal(np.diff(data[0]), 1)
    assert data[0, 0] > first_run[-1]  # new samples, from sample index 0 of a new buffer


def test_acquire_in_the_callers_thread_gets_every_sample_once(lsl_loopback):
    n = 1200
    with spawn_outlet(n_channels=5, n_samples=n, chunk_size=9, wait_consumer=True) as child:
        inlet = EEGInlet(_cfg(child.name, counter_channel=0))
        inlet.start(thread=False)
        try:
            assert not inlet.running  # no acquisition thread: this test's thread pulls
            with pytest.raises(RuntimeError, match="already started"):
                inlet.start()
            wait_until(lambda: inlet.acquire() >= 0 and inlet.n_received >= n, timeout=20,
                       message=lambda: f"{n} samples (have {inlet.n_received})")
        finally:
            inlet.stop()
    data, ts = _read_all(inlet)
    np.testing.assert_array_equal(data[0], np.arange(n))
    assert np.all(np.diff(ts) > 0) and inlet.gaps == []
    with pytest.raises(RuntimeError, match="not connected"):
        inlet.acquire()


@pytest.mark.slow
def test_outlet_restarted_with_a_new_source_id_is_re_resolved(lsl_loopback):
    """kill -9, then the same name and type with another source_id: liblsl's recover cannot
    reattach; the inlet finds it by name and type, reconnects and reports the gap."""
    name = unique_name("reresolve")
    a = spawn_outlet(name, n_channels=3, n_samples=None, chunk_size=5)
    inlet = EEGInlet(_cfg(name, counter_channel=0, reresolve_after_s=0.3))
    inlet.start()
    try:
        _wait_received(inlet, 500)
        a.kill()
        n_before = inlet.n_received
        with spawn_outlet(name, n_channels=3, n_samples=None, chunk_size=5, start=100_000) as b:
            assert b.source_id != a.source_id
            wait_until(lambda: inlet.check() or inlet.n_reconnects == 1 and inlet.n_received > n_before + 300,
                       timeout=40, message=lambda: f"a reconnect ({inlet.stats()})")
    finally:
        inlet.stop()
        a.stop()
    data, ts = _read_all(inlet)
    assert len(inlet.gaps) == 1
    gap = inlet.gaps[0]
    assert gap.reconnected and gap.at_index == n_before and gap.at_timestamp == ts[n_before]
    assert data[0, n_before] >= 100_000  # the second outlet's counter from here on
    np.testing.assert_array_equal(np.diff(data[0, :n_before]), 1)
    np.testing.assert_array_equal(np.diff(data[0, n_before:]), 1)
    # sized by the timestamps either side (the counters of two outlets say nothing)
    assert gap.seconds == pytest.approx(ts[n_before] - ts[n_before - 1] - 1e-3)
    assert gap.n_samples == round((gap.seconds + 1e-3) * 1000) - 1 > 0
    assert inlet.meta.source_id == b.source_id
    assert inlet.stats()["n_gap_samples"] == gap.n_samples
