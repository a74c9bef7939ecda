"""The default model montage.

The default is MNE's ``brainproducts-RNP-BA-128`` standard montage: Brain
Products' actiCAP 128-channel layout (10-5 names), the cap family EEG-ImageNet
was recorded with. That montage lists 130 positions; its last two, ``FCz``
(recording reference) and ``Fpz`` (ground), are not recorded channels, so the
model montage is its first 128 channels, in MNE's order. EEG-ImageNet's files
carry no channel names: the loaders and the synthetic twin assign these 128
names in this order.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

DEFAULT_MONTAGE = "brainproducts-RNP-BA-128"
#: Positions in the standard montage that are not recorded channels.
NON_RECORDED = {"brainproducts-RNP-BA-128": ("FCz", "Fpz")}


@lru_cache(maxsize=8)
def _montage_names(montage: str) -> tuple[str, ...]:
    import mne

    try:
        mon = mne.channels.make_standard_montage(montage)
    except ValueError as exc:
        raise ValueError(f"unknown montage {montage!r}: {exc}") from None
    skip = set(NON_RECORDED.get(montage, ()))
    return tuple(ch for ch in mon.ch_names if ch not in skip)


def montage_ch_names(montage: str = DEFAULT_MONTAGE) -> list[str]:
    """Recorded channel names of a standard montage, in model order.

    Returns
    -------
    list of str
        128 names for the default montage.
    """
    return list(_montage_names(montage))


def get_montage(montage: str = DEFAULT_MONTAGE):
    """The ``mne.channels.DigMontage`` restricted to the recorded channels."""
    import mne

    mon = mne.channels.make_standard_montage(montage)
    keep = set(_montage_names(montage))
    pos = mon.get_positions()["ch_pos"]
    return mne.channels.make_dig_montage(
        ch_pos={ch: pos[ch] for ch in mon.ch_names if ch in keep}, coord_frame="head"
    )


def channel_positions(montage: str = DEFAULT_MONTAGE) -> np.ndarray:
    """Head-frame positions in metres, shape (n_channels, 3), float64, in model order."""
    pos = get_montage(montage).get_positions()["ch_pos"]
    return np.array([pos[ch] for ch in montage_ch_names(montage)], dtype=np.float64)
