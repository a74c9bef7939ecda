"""Streaming rational-rate resampling (polyphase FIR) for the channel/rate contract.

A stream recorded at, say, 512 or 2048 Hz is brought to the model's rate
(1000 Hz) by upsampling by ``up``, low-pass filtering with a linear-phase FIR
and keeping every ``down``-th sample, ``up / down = sfreq_out / sfreq_in``.
The filter is the one :func:`scipy.signal.resample_poly` designs (Kaiser
window, beta 5, ``10 * max(up, down)`` taps per side).

The filter is applied causally, so the streaming output can equal the one-shot
output exactly: :class:`StreamingResampler` fed any chunking (down to single
samples) returns the same samples as :func:`resample_oneshot`, which is built
on :func:`scipy.signal.upfirdn`, an independent implementation.

Timestamps
----------
A linear-phase FIR of ``2 g + 1`` taps delays the signal by ``g`` samples of
the upsampled grid. Output sample ``m`` therefore *represents* the instant at
fractional input index ``p_m = (m * down - g) / up``, and it carries that
instant's timestamp, linearly interpolated between the two neighbouring input
timestamps. Timestamps thus stay aligned with signal content (a marker stamped
at a sample still locks to that sample after resampling); the price is that a
sample is emitted only ``g / up`` input samples (about 10 samples at the lower
of the two rates: 19.5 ms from 512 Hz, 10 ms from 2048 Hz) after its instant.
Outputs whose instant precedes the first input sample (``p_m < 0``, the filter's
start-up transient) are not emitted, so output sample 0 represents an instant
at or just after the first input sample.
"""

from __future__ import annotations

import logging
from fractions import Fraction

import numpy as np
from scipy import signal

__all__ = ["StreamingResampler", "rational_ratio", "resample_filter", "resample_oneshot"]

logger = logging.getLogger(__name__)

#: Largest ``up`` or ``down`` accepted (the filter has ``20 * max(up, down) + 1`` taps).
MAX_FACTOR = 1000


def rational_ratio(sfreq_in: float, sfreq_out: float) -> tuple[int, int]:
    """``(up, down)`` in lowest terms with ``up / down == sfreq_out / sfreq_in``.

    Raises
    ------
    ValueError
        If a rate is not positive, or the ratio needs a factor above
        :data:`MAX_FACTOR` (e.g. 1000 Hz from 999.7 Hz).
    """
    if not (np.isfinite(sfreq_in) and sfreq_in > 0):
        raise ValueError(f"input rate must be positive and finite, got {sfreq_in} Hz")
    if not (np.isfinite(sfreq_out) and sfreq_out > 0):
        raise ValueError(f"output rate must be positive and finite, got {sfreq_out} Hz")
    frac = Fraction(float(sfreq_out) / float(sfreq_in)).limit_denominator(MAX_FACTOR)
    up, down = frac.numerator, frac.denominator
    if up > MAX_FACTOR or abs(up / down * sfreq_in - sfreq_out) > 1e-9 * sfreq_out:
        raise ValueError(
            f"cannot resample {sfreq_in} Hz to {sfreq_out} Hz: the ratio is not a fraction "
            f"with factors <= {MAX_FACTOR}"
        )
    return up, down


def resample_filter(up: int, down: int) -> np.ndarray:
    """The anti-aliasing FIR of :func:`scipy.signal.resample_poly`, gain ``up``.

    Returns
    -------
    ndarray, shape (2 * 10 * max(up, down) + 1,), float64
    """
    max_rate = max(up, down)
    half_len = 10 * max_rate
    h = signal.firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    return h * up


def _n_valid(n_in: int, up: int, down: int) -> int:
    """Number of causal outputs computable from ``n_in`` input samples (from output 0)."""
    # output m needs the upsampled grid up to index m * down; grid points after the
    # last input sample's up - 1 zeros are unknown until the next input arrives.
    return 0 if n_in <= 0 else (up * n_in - 1) // down + 1


def resample_oneshot(data: np.ndarray, sfreq_in: float, sfreq_out: float) -> np.ndarray:
    """Resample a whole signal exactly as :class:`StreamingResampler` would stream it.

    Built on :func:`scipy.signal.upfirdn` (causal polyphase filtering); the
    start-up transient and the tail that would need future samples are cut, as
    in the streaming class (see the module's Notes on timestamps).

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_times)
    sfreq_in, sfreq_out : float
        Rates in Hz.

    Returns
    -------
    ndarray, shape (n_channels, n_out), float32
    """
    data = np.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"data must be (n_channels, n_times), got shape {data.shape}")
    if sfreq_in == sfreq_out:
        return data.astype(np.float32, copy=True)
    up, down = rational_ratio(sfreq_in, sfreq_out)
    h = resample_filter(up, down)
    g = (h.size - 1) // 2
    m0 = -(-g // down)  # first output whose instant is at or after input sample 0
    n_valid = _n_valid(data.shape[1], up, down)
    if n_valid <= m0:
        return np.zeros((data.shape[0], 0), dtype=np.float32)
    y = signal.upfirdn(h, data.astype(np.float64), up, down, axis=1)
    return y[:, m0:n_valid].astype(np.float32)


class StreamingResampler:
    """Polyphase FIR resampler with state across chunks.

    Parameters
    ----------
    sfreq_in, sfreq_out : float
        Input and output rates in Hz; equal rates pass data through unchanged.
    n_channels : int

    Attributes
    ----------
    up, down : int
        The rational factors (1, 1 when passing through).
    delay_s : float
        How long after its instant a sample is emitted (0 when passing through).

    Notes
    -----
    Chunked output equals :func:`resample_oneshot` for any chunking (single
    samples included). Output timestamps are interpolated from the input
    timestamps at the instant each output sample represents (module Notes).
    Not thread-safe: one instance belongs to the thread that feeds it.
    """

    #: Input samples of history kept beyond what the filter needs, before compaction.
    _SLACK = 4096

    def __init__(self, sfreq_in: float, sfreq_out: float, n_channels: int) -> None:
        self.sfreq_in = float(sfreq_in)
        self.sfreq_out = float(sfreq_out)
        self.n_channels = int(n_channels)
        if self.n_channels < 1:
            raise ValueError(f"n_channels must be >= 1, got {n_channels}")
        self.passthrough = self.sfreq_in == self.sfreq_out
        if self.passthrough:
            self.up = self.down = 1
            self.delay_s = 0.0
            self.reset()
            return
        self.up, self.down = rational_ratio(self.sfreq_in, self.sfreq_out)
        up, down = self.up, self.down
        h = resample_filter(up, down)
        self._g = (h.size - 1) // 2
        # Polyphase form: with n = m * down, output m is
        #   y[m] = sum_i x[n // up - i] * h[n % up + i * up],  i = 0 .. n_taps - 1.
        # The pattern repeats every `up` outputs (= `down` inputs), so one fixed
        # matrix maps an input segment to the outputs of one period:
        #   y[q * up + j] = X[:, q * down - (n_taps - 1) + r] @ W[r, j].
        n_taps = -(-h.size // up)
        self._n_taps = n_taps
        padded = np.zeros(n_taps * up)
        padded[: h.size] = h
        j = np.arange(up)
        k_rel = (j * down) // up  # newest input of output j, relative to the period
        phase = (j * down) % up
        lags = np.arange(n_taps)
        w = np.zeros((down + n_taps, up))
        w[k_rel[:, None] + (n_taps - 1) - lags[None, :], j[:, None]] = padded[
            phase[:, None] + lags[None, :] * up
        ]
        self._w = w
        self._k_rel = k_rel
        self._m0 = -(-self._g // down)
        #: Delay between a sample's instant and its emission, in seconds.
        self.delay_s = self._g / up / self.sfreq_in
        logger.debug(
            "resampler %g -> %g Hz: up=%d down=%d, %d taps, delay %.1f ms",
            self.sfreq_in,
            self.sfreq_out,
            up,
            down,
            h.size,
            1e3 * self.delay_s,
        )
        self.reset()

    def reset(self) -> None:
        """Forget all history (the next chunk starts a new signal)."""
        self._n_in = 0  # input samples seen
        self._m_next = 0 if self.passthrough else self._m0  # next output index to emit
        if self.passthrough:
            return
        # Linear history buffer: column c holds global input index self._start + c;
        # it starts with n_hist zeros before the signal (the filter's rest state).
        self._n_hist = self.down + self._n_taps + -(-self._g // self.up) + 2
        cap = self._n_hist + self._SLACK
        self._buf = np.zeros((self.n_channels, cap), dtype=np.float64)
        self._buf_ts = np.zeros(cap, dtype=np.float64)
        self._start = -self._n_hist
        self._fill = self._n_hist

    def _append(self, data: np.ndarray, timestamps: np.ndarray) -> None:
        n = data.shape[1]
        cap = self._buf.shape[1]
        if self._fill + n > cap:
            # keep the last n_hist samples: all that the pending outputs can need
            keep = self._n_hist
            drop = self._fill - keep
            if keep + n > cap:
                new = np.zeros((self.n_channels, keep + n + self._SLACK), dtype=np.float64)
                new_ts = np.zeros(new.shape[1], dtype=np.float64)
                new[:, :keep] = self._buf[:, drop : self._fill]
                new_ts[:keep] = self._buf_ts[drop : self._fill]
                self._buf, self._buf_ts = new, new_ts
            else:
                self._buf[:, :keep] = self._buf[:, drop : self._fill]
                self._buf_ts[:keep] = self._buf_ts[drop : self._fill]
            self._start += drop
            self._fill = keep
        self._buf[:, self._fill : self._fill + n] = data
        self._buf_ts[self._fill : self._fill + n] = timestamps
        self._fill += n

    def process(self, data: np.ndarray, timestamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Resample one chunk.

        Parameters
        ----------
        data : ndarray, shape (n_channels, n), float32
        timestamps : ndarray, shape (n,), float64
            LSL timestamps of the input samples.

        Returns
        -------
        data : ndarray, shape (n_channels, m), float32
            The output samples completed by this chunk (possibly none).
        timestamps : ndarray, shape (m,), float64
        """
        data = np.asarray(data)
        timestamps = np.asarray(timestamps, dtype=np.float64)
        if data.ndim != 2 or data.shape[0] != self.n_channels:
            raise ValueError(f"data must be ({self.n_channels}, n_times), got shape {data.shape}")
        n = data.shape[1]
        if timestamps.shape != (n,):
            raise ValueError(f"timestamps shape {timestamps.shape} does not match {n} samples")
        if self.passthrough:
            self._n_in += n
            return data.astype(np.float32, copy=True), timestamps.copy()

        # 1. append to the history (global index self._n_in onwards)
        self._append(data, timestamps)
        self._n_in += n

        # 2. outputs completed by this chunk
        m_a = self._m_next
        m_b = _n_valid(self._n_in, self.up, self.down)
        if m_b <= m_a:
            return np.zeros((self.n_channels, 0), dtype=np.float32), np.zeros(0)
        self._m_next = m_b
        out = np.empty((self.n_channels, m_b - m_a), dtype=np.float32)

        # 3. polyphase filtering: one matmul per period touched (see __init__)
        up, down, lag = self.up, self.down, self._n_taps - 1
        m = m_a
        while m < m_b:
            q, j0 = divmod(m, up)
            j1 = min(up, j0 + (m_b - m))
            r0 = int(self._k_rel[j0])
            r1 = int(self._k_rel[j1 - 1]) + self._n_taps
            c0 = q * down - lag + r0 - self._start  # buffer column of segment row r0
            seg = self._buf[:, c0 : c0 + (r1 - r0)]
            out[:, m - m_a : m - m_a + (j1 - j0)] = seg @ self._w[r0:r1, j0:j1]
            m += j1 - j0

        # 4. timestamps of the instants the outputs represent (see module Notes)
        pos = (np.arange(m_a, m_b) * down - self._g) / up - self._start
        i0 = np.floor(pos).astype(np.intp)
        frac = pos - i0
        ts = self._buf_ts
        out_ts = ts[i0] + frac * (ts[i0 + 1] - ts[i0])
        return out, out_ts
