"""Child process: an LSL outlet that writes a vendor's header (see helpers.vendors for the conventions).

Run as ``python vendor_outlet_child.py '<json spec>'``; LSLAPICFG is inherited.
The spec gives the stream's name, type, source_id, rate, format, the
``desc/channels`` entries (or none at all), extra ``desc`` children, what each
channel carries, and an optional string marker stream. Samples are pushed in
10 ms chunks with drift-free explicit timestamps; a marker carries exactly the
timestamp of the sample it marks. Runs ``duration_s`` (None: until terminated).
"""

import json
import signal
import sys
import threading

import numpy as np
import pylsl


def _signal(kind: str, idx: np.ndarray, ch: int, rng: np.random.Generator) -> np.ndarray:
    n = idx.size
    if kind == "counter":
        return idx.astype(np.float64)
    if kind == "counter128":  # Emotiv's COUNTER wraps at 128
        return (idx % 128).astype(np.float64)
    if kind == "zero":
        return np.zeros(n)
    if kind == "quality":
        return np.full(n, 4.0)
    # EEG: ~10 uV alpha-ish oscillation + noise (+ a DC offset for raw amplifiers)
    uv = 10.0 * np.sin(2 * np.pi * 10.0 * idx / 1000.0 + ch) + rng.normal(0.0, 5.0, n)
    if kind == "eeg_uv_dc":
        return uv + 2000.0 * (ch + 1)
    if kind == "eeg_uv":
        return uv
    if kind == "eeg_v":
        return uv * 1e-6
    raise ValueError(kind)


def main() -> None:
    a = json.loads(sys.argv[1])
    n_ch = len(a["signals"])
    info = pylsl.StreamInfo(a["name"], a["stype"], n_ch, a["sfreq"], a["channel_format"], a["source_id"])
    if a.get("channels") is not None:
        chans = info.desc().append_child("channels")
        for ch in a["channels"]:
            node = chans.append_child("channel")
            for key, value in ch.items():
                node.append_child_value(key, value)
    for parent, children in (a.get("desc") or {}).items():
        node = info.desc().append_child(parent)
        for key, value in children.items():
            node.append_child_value(key, value)
    outlet = pylsl.StreamOutlet(info, 10)
    marker_outlet = None
    m = a.get("markers")
    if m:
        minfo = pylsl.StreamInfo(m["name"], m["stype"], 1, pylsl.IRREGULAR_RATE, "string", m["source_id"])
        marker_outlet = pylsl.StreamOutlet(minfo)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rng = np.random.default_rng(0)
    sfreq = float(a["sfreq"])
    chunk = max(1, int(round(0.01 * sfreq)))
    every = int(round(m["every_s"] * sfreq)) if m else 0
    n_total = None if a.get("duration_s") is None else int(a["duration_s"] * sfreq)
    t0 = pylsl.local_clock()
    k = 0
    while not stop.is_set() and (n_total is None or k < n_total):
        # pace on the LSL clock from t0 (no drift): wait until this chunk's last sample is due
        delay = t0 + (k + chunk) / sfreq - pylsl.local_clock()
        if delay > 0 and stop.wait(delay):
            break
        idx = np.arange(k, k + chunk)
        data = np.stack([_signal(kind, idx, c, rng) for c, kind in enumerate(a["signals"])], axis=1)
        stamps = t0 + idx / sfreq
        outlet.push_chunk(data.astype(np.float32 if a["channel_format"] == "float32" else np.float64),
                          stamps.tolist())
        if marker_outlet is not None:
            for j in np.flatnonzero((idx % every == 0) & (idx > 0)):
                marker_outlet.push_sample([f"{m['payload']}{idx[j] // every}"], float(stamps[j]))
        k += chunk
    stop.wait(a.get("linger_s", 0.5))


if __name__ == "__main__":
    main()
