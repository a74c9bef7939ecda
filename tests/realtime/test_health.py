"""Input health: flat and railing channels, NaN bursts and stream gaps injected into a live stream are
detected, reported in the metrics and the log, and never stop the engine."""

from __future__ import annotations

import logging

from helpers.engine import CH, FakeBackend, make_recording, playing
from helpers.lsl import unique_name
from helpers.wait import wait_until

from neuroimagen.realtime.config import HealthConfig, RealtimeConfig
from neuroimagen.realtime.engine import Engine
from neuroimagen.stream.config import StreamConfig, WindowingConfig
from neuroimagen.stream.pipeline import WindowPipeline

FAST = RealtimeConfig(health=HealthConfig(check_interval_s=0.2))


def _engine(name: str, **inlet) -> Engine:
    base = StreamConfig()
    cfg = base.model_copy(update={
        "inlet": base.inlet.model_copy(update={"name": name, **inlet}),
        "windowing": WindowingConfig(mode="sliding", n_times=440, hop_s=0.1),
    })
    return Engine(WindowPipeline(cfg, eeg_name=name, acquisition="caller"), FakeBackend(), FAST)


def _run_until(engine: Engine, predicate, n_frames_after: int = 3) -> dict:
    """Start, wait for the fault to be reported and for frames to keep coming, stop (must not raise)."""
    engine.start()
    try:
        wait_until(lambda: predicate(engine.health.summary()), timeout=20,
                   message=lambda: str(engine.health.summary()))
        n = engine.metrics.counters["n_frames"]
        wait_until(lambda: engine.metrics.counters["n_frames"] >= n + n_frames_after, timeout=20,
                   message="frames after the fault")
    finally:
        engine.stop()
    return engine.summary()


def test_flat_channels_are_reported_by_name(lsl_loopback, caplog):
    name = unique_name("health-flat")
    with caplog.at_level(logging.WARNING, logger="neuroimagen.realtime.health"), \
            playing(make_recording(4.0, flat=(5, 6)), name):
        s = _run_until(_engine(name), lambda h: h["flat_channels"])
    h = s["health"]
    assert h["flat_channels"] == sorted([CH[5], CH[6]]) and not h["ok"]
    assert h["n_flat_events"] == 1 and h["railing_channels"] == []
    assert any("flat" in r.getMessage() and CH[5] in r.getMessage() for r in caplog.records)


def test_railing_channels_are_reported_as_railing_not_flat(lsl_loopback):
    name = unique_name("health-rail")
    with playing(make_recording(4.0, rail=(9,)), name):
        s = _run_until(_engine(name), lambda h: h["railing_channels"])
    h = s["health"]
    assert h["railing_channels"] == [CH[9]] and h["flat_channels"] == []
    assert h["events"][0]["kind"] == "railing"


def test_a_nan_burst_is_counted_and_replaced_without_a_crash(lsl_loopback, caplog):
    name = unique_name("health-nan")
    with caplog.at_level(logging.WARNING, logger="neuroimagen.realtime.health"), \
            playing(make_recording(4.0, nan_at=(1000, 1200)), name, nonfinite=True):
        s = _run_until(_engine(name), lambda h: h["n_nan_bursts"])
    h = s["health"]
    assert h["n_nan_bursts"] >= 1 and h["n_nonfinite_samples"] == 200
    assert s["pipeline"]["n_nonfinite"] == 200
    assert any("non-finite" in r.getMessage() for r in caplog.records)


def test_a_stream_gap_is_reported_and_the_engine_carries_on(lsl_loopback):
    name = unique_name("health-gap")
    engine = _engine(name)
    # the outlet goes away after 1.5 s and comes back under the same name: a gap
    with playing(make_recording(1.5), name):
        engine.start()
        try:
            wait_until(lambda: engine.metrics.counters["n_frames"] >= 3, timeout=20)
        except BaseException:
            engine.stop()
            raise
    try:
        with playing(make_recording(4.0, seed=1), name):
            wait_until(lambda: engine.health.summary()["n_gaps"] >= 1, timeout=30,
                       message=lambda: str(engine.health.summary()))
            n = engine.metrics.counters["n_frames"]
            wait_until(lambda: engine.metrics.counters["n_frames"] >= n + 3, timeout=20)
    finally:
        engine.stop()
    h = engine.summary()["health"]
    assert h["n_gaps"] >= 1 and h["gap_seconds"] > 0
    assert any(e["kind"] == "gap" for e in h["events"])
