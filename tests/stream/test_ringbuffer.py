"""RingBuffer: modulo writes, copies out, exact sample indices, overflow counted."""

import threading

import numpy as np
import pytest

from neuroimagen.stream.ringbuffer import RingBuffer


def _chunk(start: int, n: int, n_channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(start, start + n, dtype=np.float64)
    data = np.repeat(idx[:, None], n_channels, axis=1) + np.arange(n_channels) * 0.25
    return data.astype(np.float32), idx / 100.0


def test_write_read_wraps_and_keeps_order():
    rb = RingBuffer(3, 10)
    got, index = [], 0
    for start, n in [(0, 4), (4, 4), (8, 5), (13, 1), (14, 6)]:  # wraps several times
        rb.write(*_chunk(start, n))
        data, ts, first, lost = rb.read_since(index)
        assert (first, lost) == (index, 0)
        assert data.shape == (3, n) and data.dtype == np.float32 and data.flags.c_contiguous
        np.testing.assert_array_equal(data[0], np.arange(start, start + n))
        np.testing.assert_array_equal(data[2], np.arange(start, start + n) + 0.5)
        np.testing.assert_allclose(ts, np.arange(start, start + n) / 100.0)
        got.extend(data[0].tolist())
        index = first + data.shape[1]
    assert got == list(range(20)) and rb.total_written == 20 and rb.n_overflow == 0


def test_read_returns_a_copy():
    rb = RingBuffer(3, 8)
    rb.write(*_chunk(0, 5))
    data, ts, _, _ = rb.read_since(0)
    data[:] = -1
    ts[:] = -1
    again, ts2, _, _ = rb.read_since(0)
    np.testing.assert_array_equal(again[0], np.arange(5))
    assert ts2[0] == 0.0


def test_overflow_is_counted_and_reader_resumes_at_oldest():
    rb = RingBuffer(3, 10)
    rb.write(*_chunk(0, 7))
    rb.write(*_chunk(7, 8))  # 15 written, 0..4 overwritten
    data, _, first, lost = rb.read_since(0)
    assert (first, lost, rb.n_overflow) == (5, 5, 5)
    np.testing.assert_array_equal(data[0], np.arange(5, 15))


def test_chunk_larger_than_capacity_keeps_the_newest():
    rb = RingBuffer(3, 10)
    rb.write(*_chunk(0, 25))
    assert rb.total_written == 25
    data, _, first, lost = rb.read_since(0)
    assert (first, lost) == (15, 15)
    np.testing.assert_array_equal(data[0], np.arange(15, 25))


def test_latest_and_max_samples():
    rb = RingBuffer(3, 10)
    rb.write(*_chunk(0, 13))
    data, ts, first = rb.latest(4)
    assert first == 9
    np.testing.assert_array_equal(data[0], [9, 10, 11, 12])
    data, _, first, _ = rb.read_since(3, max_samples=2)
    assert first == 3 and data[0].tolist() == [3, 4]
    assert rb.latest(100)[0].shape == (3, 10)


def test_shape_mismatch_is_an_error():
    rb = RingBuffer(3, 10)
    with pytest.raises(ValueError, match="3 channels"):
        rb.write(np.zeros((4, 2), np.float32), np.zeros(4))


def test_concurrent_writer_and_reader_see_every_sample_once():
    rb = RingBuffer(4, 64)
    n_total = 20000
    seen: list[np.ndarray] = []
    progress = threading.Condition()
    state = {"read": 0}

    def writer():
        i = 0
        rng = np.random.default_rng(0)
        while i < n_total:
            n = min(int(rng.integers(1, 17)), n_total - i)
            # stay within capacity of the reader's position: no loss by design
            with progress:
                need = i + n - 64
                progress.wait_for(lambda: state["read"] >= need, timeout=5.0)  # noqa: B023
            rb.write(*_chunk(i, n, 4))
            i += n

    t = threading.Thread(target=writer)
    t.start()
    index = 0
    while index < n_total:
        assert rb.wait_for(index, 5.0)
        data, _, first, lost = rb.read_since(index)
        assert lost == 0 and first == index
        seen.append(data[0])
        index = first + data.shape[1]
        with progress:
            state["read"] = index
            progress.notify_all()
    t.join()
    counter = np.concatenate(seen)
    np.testing.assert_array_equal(counter, np.arange(n_total))
    assert rb.n_overflow == 0
