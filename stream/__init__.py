"""LSL in and out: inlet + ring buffer, contract, preprocessing, windowing, replay, simulate, record.

Signal processing shared by training and the live process lives here, once,
as pure functions on float32 arrays shaped ``(n_channels, n_times)``.
"""
