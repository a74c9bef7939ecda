"""Child-process LSL outlet used by tests (see helpers.lsl.spawn_outlet).

Run as ``python lsl_child_outlet.py '<json args>'``; LSLAPICFG is inherited.
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
    outlet = pylsl.StreamOutlet(info, a["chunk_size"])
    n_total = a["n_samples"]
    i = a["start"]
    stop = None if n_total is None else a["start"] + n_total
    t0 = time.perf_counter()
    sent = 0
    while stop is None or i < stop:
        n = a["chunk_size"] if stop is None else min(a["chunk_size"], stop - i)
        idx = np.arange(i, i + n, dtype=np.float64)
        chunk = np.empty((n, n_ch), dtype=np.float64)
        chunk[:, 0] = idx
        if n_ch > 1:
            chunk[:, 1:] = np.sin(idx[:, None] * 0.01 * np.arange(1, n_ch))
        outlet.push_chunk(chunk)
        i += n
        sent += n
        # pace at sfreq against the start (no drift)
        delay = t0 + sent / a["sfreq"] - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    deadline = time.monotonic() + a["linger_s"]
    while time.monotonic() < deadline:
        time.sleep(0.05)


if __name__ == "__main__":
    main()
