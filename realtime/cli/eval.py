"""``neuroimagen eval ...``: metrics, reports and the split-leak check."""

from __future__ import annotations

import click


@click.group(name="eval")
def eval_() -> None:
    """Evaluate reconstructions: n-way top-k, SSIM/PCC, retrieval, CLIP, IS/FID; leak checks."""
