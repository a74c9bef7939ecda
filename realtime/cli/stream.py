"""``neuroimagen stream ...``: list, replay, simulate, record, finalize."""

from __future__ import annotations

import click


@click.group()
def stream() -> None:
    """LSL streams: list, replay files, simulate a headset, record and finalize."""
