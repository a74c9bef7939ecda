"""``neuroimagen bench ...``: benchmarks that print ratios measured in one run."""

from __future__ import annotations

import click


@click.group()
def bench() -> None:
    """Benchmarks (not tests): each prints its figures and the ratios against its goals."""
