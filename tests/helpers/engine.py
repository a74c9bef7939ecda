"""Real-time engine test helpers: crafted recordings replayed over LSL and a fake backend."""


from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator

import numpy as np

from neuroimagen.realtime.backend import BackendOutput, BackendSpec
from neuroimagen.stream.montage import montage_ch_names

CH = montage_ch_names()
SFREQ = 1000.0


def make_recording(duration_s: float, *, seed: int = 0, flat: tuple[int, ...] = (), rail: tuple[int, ...] = (),
                   nan_at: tuple[int, int] | None = None, marker_every_s: float | None = None):
    """A seeded 128-channel recording in volts (~10 uV noise) with injected faults.

    flat: channels held at a constant; rail: channels stuck at +10 mV; nan_at: (start, stop)
    samples set to NaN in channels 0..7; markers ``{"image": "img<k>", "label": k % 3}`` every
    ``marker_every_s`` seconds.
    """
    from neuroimagen.stream.readers import Recording

    n = int(duration_s * SFREQ)
    rng = np.random.default_rng(seed)
    data = (rng.standard_normal((len(CH), n)) * 10e-6).astype(np.float32)
    for c in flat:
        data[c] = 3e-6
    for c in rail:
        data[c] = 10e-3
    if nan_at is not None:
        data[:8, nan_at[0]:nan_at[1]] = np.nan
    markers = []
    if marker_every_s:
        step = int(marker_every_s * SFREQ)
        markers = [(k * step, json.dumps({"image": f"img{k}", "label": k % 3}))
                   for k in range(1, n // step)]
    return Recording(data=data, sfreq=SFREQ, ch_names=list(CH), ch_types=["eeg"] * len(CH),
                     units=["volts"] * len(CH), markers=markers, source="test")


class _Playing:
    """A running :func:`playing` block: ``go()`` subscribes to the markers, releasing the player."""

    def __init__(self, player, name: str) -> None:
        self.player = player
        self.name = name
        self.marker_inlet = None

    def go(self) -> None:
        import pylsl

        found = pylsl.resolve_byprop("name", f"{self.name}-markers", 1, 10.0)
        assert found, f"{self.name}-markers not resolved"
        self.marker_inlet = pylsl.StreamInlet(found[0])
        self.marker_inlet.open_stream(10.0)


@contextlib.contextmanager
def playing(recording, name: str, *, loop: bool = False, nonfinite: bool = False,
            hold: bool = False) -> Iterator[_Playing]:
    """Replay ``recording`` over LSL as ``name`` (+ ``name-markers``) while the block runs.

    The player holds its first sample until both outlets have a consumer, so nothing is lost to
    the engine's resolve time. A sliding-mode engine reads no markers: this block consumes them,
    at once, or (``hold=True``) when the test calls ``go()`` once every EEG consumer it needs is
    subscribed.
    """
    from neuroimagen.stream.config import ReplayConfig
    from neuroimagen.stream.replay import Player

    cfg = ReplayConfig(loop=loop, on_nonfinite="replay" if nonfinite else "refuse", wait_for_consumers_s=30.0)
    player = Player(recording, name=name, cfg=cfg)
    player.start()
    block = _Playing(player, name)
    try:
        if not hold:
            block.go()
        yield block
    finally:
        player.stop()
        if block.marker_inlet is not None:
            block.marker_inlet.close_stream()


class FakeBackend:
    """The Backend protocol without models: for the engine's threading, not for model output.

    ``gate`` (an Event) holds every call until set; ``fail_at`` raises on that call number.
    """

    name = "fake"
    device = "cpu"

    def __init__(self, n_classes: int = 4, gate: threading.Event | None = None, fail_at: int | None = None):
        self.spec = BackendSpec(n_channels=len(CH), n_times=440, saliency_size=16, image_hw=(16, 16),
                                class_names=tuple(f"c{i}" for i in range(n_classes)))
        self.status = "fake backend"
        self.gate = gate
        self.fail_at = fail_at
        self.n_calls = 0
        self.n_warmup = 0
        self.windows: list[np.ndarray] = []

    def warmup(self, n_frames: int = 3) -> float:
        self.n_warmup += n_frames
        return 0.0

    def __call__(self, eeg: np.ndarray) -> BackendOutput:
        assert eeg.shape == (1, len(CH), 440) and eeg.dtype == np.float32
        if self.gate is not None:
            self.gate.wait(30)
        self.n_calls += 1
        if self.fail_at is not None and self.n_calls == self.fail_at:
            raise RuntimeError(f"fake backend failed on call {self.n_calls}")
        self.windows.append(eeg[0, :, -1].copy())
        k = len(self.spec.class_names)
        scores = np.zeros((1, k), np.float32)
        scores[0, self.n_calls % k] = 1.0
        img = np.full((1, 3, 16, 16), 0.5, np.float32)
        return BackendOutput(saliency=img, image=img, class_scores=scores,
                             timings_ms={"extractors": 0.1, "diffusion": 0.2})

    def close(self) -> None:
        pass
