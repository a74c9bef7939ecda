"""``neuroimagen demo``: the embedded default, no downloads."""

from __future__ import annotations

import click

from ._common import common_options


@click.command()
@click.option("--duration", type=float, default=60.0, help="seconds to run")
@common_options
def demo(duration: float, cfg_data: dict) -> None:
    """Run the embedded default end to end (GUI where a display exists, headless otherwise)."""
    raise click.ClickException("demo is being wired up")
