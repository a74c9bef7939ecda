"""The live hot path allocates no work memory per chunk (numerics: test_preprocessing,
test_contract and test_pipeline's offline == live tests)."""

from __future__ import annotations

import tracemalloc

import numpy as np
from scipy import signal

from neuroimagen.stream.config import ContractConfig, PreprocessingConfig
from neuroimagen.stream.contract import ChannelContract
from neuroimagen.stream.montage import montage_ch_names
from neuroimagen.stream.preprocessing import StreamingPreprocessor, design_sos, resample_window


def _peak_bytes(fn, n_calls: int = 20) -> int:
    fn()  # first call: the buffers are made here, once
    tracemalloc.start()
    try:
        for _ in range(n_calls):
            fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_causal_filter_keeps_its_float64_work_buffer():
    cfg = PreprocessingConfig()  # band-pass 5-95 Hz
    pre = StreamingPreprocessor(cfg, 1000.0, 128)
    chunk = np.random.default_rng(0).standard_normal((128, 1000)).astype(np.float32)
    out_bytes = chunk.nbytes  # the float32 result is the one allocation left
    peak = _peak_bytes(lambda: pre.process(chunk))
    # a float64 copy of the chunk alone is 2 x out_bytes; scipy's sosfilt makes two more
    assert peak < 1.5 * out_bytes, (peak, out_bytes)
    # and the result is the filter's, state carried across those 21 chunks
    ref = signal.sosfilt(design_sos(cfg, 1000.0), np.tile(chunk.astype(np.float64), 22), axis=1)
    np.testing.assert_allclose(pre.process(chunk), ref[:, -1000:].astype(np.float32), rtol=1e-5, atol=1e-6)


def test_contract_gather_target_is_kept():
    names = montage_ch_names()
    order = np.random.default_rng(1).permutation(128)
    contract = ChannelContract(ContractConfig(), [names[i] for i in order], 1000.0, ["uV"] * 128)
    data = np.random.default_rng(2).standard_normal((128, 2000)).astype(np.float32)
    ts = np.arange(2000) / 1000.0
    y, _ = contract.apply(data, ts, copy=False)
    np.testing.assert_array_equal(y, data[np.argsort(order)] * np.float32(1e-6))
    peak = _peak_bytes(lambda: contract.apply(data, ts, copy=False))
    assert peak < 0.25 * data.nbytes, (peak, data.nbytes)  # the timestamps' copy only
    y2, _ = contract.apply(data[:, :500], ts[:500], copy=False)
    assert np.shares_memory(y, y2)  # one target, reused for any chunk that fits
    y3, _ = contract.apply(data[:, :500], ts[:500])  # copy=True (default): the caller's own array
    assert not np.shares_memory(y3, y2)


def test_window_resample_tables_are_made_once_per_shape():
    x = np.random.default_rng(3).standard_normal((128, 440)).astype(np.float32)
    resample_window(x, 512)
    peak = _peak_bytes(lambda: resample_window(x, 512))
    out_bytes = 128 * 512 * 4
    # the gather/blend temporaries are float64 (unchanged numerics); the index and weight
    # tables (512 int64 + 512 float64 each) are not rebuilt: compare against rebuilding them
    assert peak < 8 * out_bytes
    from neuroimagen.stream.preprocessing import _interp_tables

    info = _interp_tables.cache_info()
    resample_window(x, 512)
    assert _interp_tables.cache_info().hits == info.hits + 1 and _interp_tables.cache_info().misses == info.misses
