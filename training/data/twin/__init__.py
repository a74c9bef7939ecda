"""The synthetic EEG-ImageNet twin: a miniature EEG-ImageNet with known ground truth.

:func:`make_twin` (``neuroimagen data make-twin``) writes procedurally drawn
stimuli (class = shape x fill style; position, size, rotation, colour and
background vary per image), one raw continuous FIF session per subject (128
channels of the default montage, 1000 Hz, volts, JSON marker annotations)
and the exact EEG-ImageNet layout: ``eeg_5_95_std.pth`` segments cut at each
onset from the sessions after the stream layer's causal 5-95 Hz stage and
normalised with per-channel dataset statistics (stored in ``twin.json``), so
a live marker-locked window equals ``segment[:, 20:460]``.

What is encoded where (details in :mod:`.eeg`): every stimulus evokes a
P1/N1/P2 response over occipital electrodes (amplitude grows with object
size); the object's horizontal position drives a contralateral posterior
pattern, its vertical position a dorsal-vs-ventral pattern, its hue two
lateral occipito-temporal patterns; the class adds its own random posterior
pattern x waveform (120-420 ms). Background: spatially correlated 1/f noise,
posterior alpha, line noise, and a per-block gain change that, in block
order, lets class-free EEG "decode" the class (the block-design confound).

:func:`~.baseline.run_baseline` (``neuroimagen data baseline``) scores a
linear single-trial decoder, split by image.
"""

from .make import make_twin, resolve_sizes

__all__ = ["make_twin", "resolve_sizes"]
