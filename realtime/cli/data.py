"""``neuroimagen data ...``: datasets and the synthetic twin."""

from __future__ import annotations

import click


@click.group()
def data() -> None:
    """Datasets: inspect real ones, make the synthetic EEG-ImageNet twin, run baselines."""
