"""Presentation-design options shared by ``present`` and ``stream simulate-session`` (click only)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click


def design_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the schedule options; the command receives ``design`` (a dict for make_schedule)."""

    @click.option("--soa", "soa_s", type=click.FloatRange(min=0.05), default=0.6, show_default=True,
                  help="Stimulus onset asynchrony, seconds.")
    @click.option("--jitter", "jitter_s", type=click.FloatRange(min=0.0), default=0.2, show_default=True,
                  help="Uniform jitter added to each SOA, seconds.")
    @click.option("--test-per-class", "n_test_per_class", type=click.IntRange(min=0), default=1,
                  show_default=True, help="Test images per class (held out by calibration).")
    @click.option("--test-repeats", type=click.IntRange(min=1), default=4, show_default=True,
                  help="How often each test image is shown.")
    @click.option("--passes", "n_passes", type=click.IntRange(min=1), default=1, show_default=True,
                  help="Passes over the image set, each in its own random order.")
    @click.option("--break-every", type=click.IntRange(min=0), default=150, show_default=True,
                  help="Trials between breaks (0: none).")
    @click.option("--break", "break_s", type=click.FloatRange(min=0.0), default=10.0, show_default=True,
                  help="Break length, seconds.")
    @click.option("--order", type=click.Choice(["rapid", "block"]), default="rapid", show_default=True,
                  help="rapid: random order (default); block: one class per block (confounds class "
                       "with time; warns).")
    @click.option("--max-trials", type=click.IntRange(min=1), default=None, help="Cut the schedule here.")
    @click.option("--minutes", "max_minutes", type=click.FloatRange(min=0.01), default=15.0,
                  show_default=True, help="Cut the schedule at this many minutes.")
    @click.option("--design-seed", type=int, default=0, show_default=True,
                  help="Seed of the order, the test images and the jitter.")
    @functools.wraps(func)
    def wrapper(*args: Any, soa_s, jitter_s, n_test_per_class, test_repeats, n_passes, break_every, break_s, order,
                max_trials, max_minutes, design_seed, **kwargs: Any):
        design = dict(soa_s=soa_s, jitter_s=jitter_s, n_test_per_class=n_test_per_class,
                      test_repeats=test_repeats, n_passes=n_passes, break_every=break_every, break_s=break_s, order=order,
                      max_trials=max_trials, max_duration_s=60.0 * max_minutes, seed=design_seed)
        return func(*args, design=design, **kwargs)

    return wrapper
