"""Child-process LSL outlet used by tests (see helpers.lsl.spawn_outlet).

Run as ``python lsl_child_outlet.py '<json args>'``; LSLAPICFG is inherited.
The sleeps in here are the outlet's own behaviour (pacing at ``speed * sfreq``,
staying up ``linger_s`` so the tail is delivered), never a test's synchronisation:
tests wait with helpers.wait_until, or release the outlet with ``wait_go``.

Optional keys (absent: the plain counter stream):

- ``nonfinite_at``: counter values whose sample gets NaN in channel 1 and +inf
  in the last channel.
- ``backstep_every``: every chunk is stamped explicitly on the sample grid and
  every Nth 0.5 s in the past, making the stream's timestamps non-monotonic
  exactly N times.
- ``speed``: pace at ``speed * sfreq`` (0: as fast as possible).
- ``preprocessed``: dict written to ``desc/neuroimagen/preprocessed`` (JSON values).
- ``wait_consumer``: hold the first sample until an inlet has subscribed
  (polled, with a 30 s deadline).
- ``wait_go``: hold the first sample until the test writes a line to stdin
  (``ChildOutlet.go()``): the test says when every inlet it needs has
  subscribed, instead of a fixed wait.
"""

import json
import sys
import time

import numpy as np
import pylsl


def main() -> None:
    a = json.loads(sys.argv[1])
    n_ch = a["n_channels"]
    info = pylsl.StreamInfo(
        a["name"], a["stype"], n_ch, a["sfreq"], a["channel_format"], a["source_id"]
    )
    chs = info.desc().append_child("channels")
    names = a["ch_names"] or (["counter"] + [f"ch{i}" for i in range(1, n_ch)])
    for ch in names:
        c = chs.append_child("channel")
        c.append_child_value("label", ch)
        if a["unit"]:
            c.append_child_value("unit", a["unit"])
        c.append_child_value("type", "EEG")
    if a.get("preprocessed"):  # as the replay player writes it (see interfaces.md)
        pre = info.desc().append_child("neuroimagen").append_child("preprocessed")
        for key, value in a["preprocessed"].items():
            pre.append_child_value(key, json.dumps(value))
    outlet = pylsl.StreamOutlet(info, a["chunk_size"])
    if a.get("wait_consumer"):  # start counting only once an inlet listens: nothing lost to resolve time
        deadline = time.monotonic() + 30.0
        while not outlet.have_consumers() and time.monotonic() < deadline:
            time.sleep(0.005)
    if a.get("wait_go"):  # the test's signal: every inlet it needs is subscribed
        sys.stdin.readline()
    nonfinite = set(a.get("nonfinite_at") or ())
    backstep = a.get("backstep_every") or 0
    speed = a.get("speed", 1.0)
    rate = a["sfreq"] * speed if speed else 0.0
    n_total = a["n_samples"]
    i = a["start"]
    stop = None if n_total is None else a["start"] + n_total
    t0 = time.perf_counter()
    stamp0 = pylsl.local_clock() - a["start"] / a["sfreq"]
    sent = 0
    n_chunks = 0
    while stop is None or i < stop:
        n = a["chunk_size"] if stop is None else min(a["chunk_size"], stop - i)
        idx = np.arange(i, i + n, dtype=np.float64)
        chunk = np.empty((n, n_ch), dtype=np.float64)
        chunk[:, 0] = idx
        if n_ch > 1:
            chunk[:, 1:] = np.sin(idx[:, None] * 0.01 * np.arange(1, n_ch))
        for k in nonfinite.intersection(range(i, i + n)):
            chunk[k - i, 1 % n_ch] = np.nan
            chunk[k - i, n_ch - 1] = np.inf
        n_chunks += 1
        # explicit stamps on the sample grid (a device clock): a push made late by a loaded
        # machine neither opens a gap nor steps back; the only backward steps are the injected ones
        stamps = stamp0 + idx / a["sfreq"]
        if backstep and n_chunks % backstep == 0:
            stamps = stamps - 0.5
        outlet.push_chunk(chunk, stamps.tolist())
        i += n
        sent += n
        # pace against the start (no drift)
        if rate:
            delay = t0 + sent / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    deadline = time.monotonic() + a["linger_s"]
    while time.monotonic() < deadline:
        time.sleep(0.05)


if __name__ == "__main__":
    main()
