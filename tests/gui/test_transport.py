"""The shared-memory snapshot block: complete snapshots cross, torn ones are refused."""

from __future__ import annotations

import struct

import numpy as np

from neuroimagen.gui.transport import SnapshotReader, SnapshotWriter


def test_a_written_snapshot_is_read_once_and_exactly():
    reader = SnapshotReader()
    try:
        writer = SnapshotWriter(reader.name)
        assert reader.read() is None  # nothing written yet
        img = np.arange(32 * 24 * 3, dtype=np.uint8).reshape(32, 24, 3)
        sal = np.full((16, 16, 3), 7, np.uint8)
        writer.write(img, sal, {"phase": "running", "frame": {"seq": 3, "top_k": [["a", 0.5]]}})
        snap = reader.read()
        np.testing.assert_array_equal(snap.image, img)
        np.testing.assert_array_equal(snap.saliency, sal)
        assert snap.info["frame"] == {"seq": 3, "top_k": [["a", 0.5]]}
        assert reader.read() is None  # the same snapshot is not returned twice
        writer.write(None, None, {"phase": "stopped"})
        last = reader.read()
        assert last.image is None and last.info == {"phase": "stopped"}
        # a write under way (begin != end) is refused, and read on a later tick
        struct.pack_into("<q", reader.shm.buf, 0, last.seq + 1)
        assert reader.read() is None and reader.n_torn == 1
        writer.close()
    finally:
        reader.close()
