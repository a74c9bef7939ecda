"""Child process: mne-lsl's own ``PlayerLSL`` streaming a raw file (a real peer, its own liblsl).

Run as ``python mne_lsl_player_child.py '<json args>'`` (see helpers.peers.spawn_mne_lsl_player);
LSLAPICFG is inherited. Streams ``fname`` ``n_repeat`` times (annotations on
``<name>-annotations`` in ``annotations_encoding``), then exits; SIGTERM stops it
at once.
"""

import json
import signal
import sys
import threading


def main() -> None:
    a = json.loads(sys.argv[1])
    import mne
    from mne_lsl.player import PlayerLSL

    raw = mne.io.read_raw(a["fname"], preload=True, verbose="error")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    player = PlayerLSL(
        raw, chunk_size=a["chunk_size"], n_repeat=a["n_repeat"], name=a["name"],
        source_id=a["source_id"], annotations=a["annotations"],
        annotations_encoding=a["annotations_encoding"],
    )
    player.start()
    # the player ends by itself after n_repeat passes; it has no done event to wait on
    while player.running and not done.wait(0.1):
        pass
    if player.running:
        player.stop()


if __name__ == "__main__":
    main()
