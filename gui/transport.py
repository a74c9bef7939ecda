"""Snapshots across processes: one shared-memory block guarded by a sequence counter (a seqlock).

The engine process (:mod:`neuroimagen.gui.engine_process`) writes each new
snapshot's frame, saliency and figures; the GUI polls from its timer. Nothing
blocks either side: the writer never waits for the reader, and a reader that
catches a write half-way sees the two counters differ and simply tries again
on its next tick (latest wins; what it missed is counted by the engine as
frames it published, not as drops).

Layout (little-endian)::

    0   int64  seq_begin   incremented before a write
    8   int64  seq_end     set to seq_begin after the write
    16  int32  image_h, image_w, sal_h, sal_w, json_len
    36  ...    image (image_h * image_w * 3 uint8), saliency, JSON (utf-8)

The EEG for the scope does not go through here: the GUI reads the LSL stream
itself with its own inlet (LSL is the transport for samples).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SHM_SIZE", "SnapshotReader", "SnapshotWriter", "WireSnapshot"]

_HEADER = struct.Struct("<qq5i")
MAX_IMAGE = 512 * 512 * 3
MAX_SALIENCY = 256 * 256 * 3
MAX_JSON = 256 * 1024
SHM_SIZE = _HEADER.size + MAX_IMAGE + MAX_SALIENCY + MAX_JSON


@dataclass(frozen=True)
class WireSnapshot:
    """What crossed: ``info`` holds seq, frame fields (top_k, marker, timings_ms), metrics, status, phase."""

    seq: int
    image: np.ndarray | None
    saliency: np.ndarray | None
    info: dict[str, Any]


class SnapshotWriter:
    """The engine side: write into the block named ``name`` (created by the reader's side).

    Notes
    -----
    One writer thread.
    """

    def __init__(self, name: str) -> None:
        from multiprocessing import shared_memory

        self.shm = shared_memory.SharedMemory(name=name, create=False)
        # Python < 3.13 registers an attached block with this process's resource tracker, which
        # unlinks it when this (engine) process exits: the GUI owns the block, not us
        from multiprocessing import resource_tracker

        try:
            resource_tracker.unregister(self.shm._name, "shared_memory")
        except Exception:  # no tracker running: nothing to undo
            pass
        self._seq = 0

    def write(self, image: np.ndarray | None, saliency: np.ndarray | None, info: dict[str, Any]) -> int:
        """Publish one snapshot; returns its write sequence number."""
        buf = self.shm.buf
        payload = json.dumps(info, default=_json_default).encode()
        if len(payload) > MAX_JSON:
            raise ValueError(f"snapshot JSON {len(payload)} B exceeds {MAX_JSON} B")
        ih, iw = (image.shape[:2] if image is not None else (0, 0))
        sh, sw = (saliency.shape[:2] if saliency is not None else (0, 0))
        if ih * iw * 3 > MAX_IMAGE or sh * sw * 3 > MAX_SALIENCY:
            raise ValueError(f"image {ih}x{iw} or saliency {sh}x{sw} too large for the shared block")
        self._seq += 1
        struct.pack_into("<q", buf, 0, self._seq)  # begin: readers now know a write is under way
        struct.pack_into("<5i", buf, 16, ih, iw, sh, sw, len(payload))
        off = _HEADER.size
        if image is not None:
            buf[off:off + ih * iw * 3] = np.ascontiguousarray(image, np.uint8).tobytes()
        off += MAX_IMAGE
        if saliency is not None:
            buf[off:off + sh * sw * 3] = np.ascontiguousarray(saliency, np.uint8).tobytes()
        off += MAX_SALIENCY
        buf[off:off + len(payload)] = payload
        struct.pack_into("<q", buf, 8, self._seq)  # end == begin: complete
        return self._seq

    def close(self) -> None:
        self.shm.close()


class SnapshotReader:
    """The GUI side: creates the block; :meth:`read` returns a new complete snapshot or None.

    Notes
    -----
    One reader (the GUI thread). :meth:`close` unlinks the block.
    """

    def __init__(self) -> None:
        from multiprocessing import shared_memory

        self.shm = shared_memory.SharedMemory(create=True, size=SHM_SIZE)
        self.shm.buf[:_HEADER.size] = bytes(_HEADER.size)
        self.name = self.shm.name
        self.last = 0
        self.n_torn = 0

    def read(self) -> WireSnapshot | None:
        buf = self.shm.buf
        begin, end, ih, iw, sh, sw, n_json = _HEADER.unpack_from(buf, 0)
        if begin == self.last or begin != end:
            if begin != end:
                self.n_torn += 1
            return None
        off = _HEADER.size
        image = np.frombuffer(bytes(buf[off:off + ih * iw * 3]), np.uint8).reshape(ih, iw, 3) if ih else None
        off += MAX_IMAGE
        sal = np.frombuffer(bytes(buf[off:off + sh * sw * 3]), np.uint8).reshape(sh, sw, 3) if sh else None
        off += MAX_SALIENCY
        raw = bytes(buf[off:off + n_json])
        if struct.unpack_from("<q", buf, 0)[0] != begin:  # overwritten while copying: next tick
            self.n_torn += 1
            return None
        self.last = begin
        return WireSnapshot(begin, image, sal, json.loads(raw))

    def close(self) -> None:
        self.shm.close()
        try:
            self.shm.unlink()
        except FileNotFoundError:  # already gone (an engine process on Python < 3.13 unlinked it)
            pass


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
