"""The ``gui`` section: what the viewer shows and how often it redraws."""

from __future__ import annotations

from pydantic import Field

from neuroimagen.stream.config import FrozenConfig


class GuiConfig(FrozenConfig):
    refresh_hz: float = Field(30.0, gt=0, le=240)
    display_s: float = Field(5.0, gt=0, description="seconds of EEG on the scrolling plot")
    n_display_channels: int = Field(16, ge=1)
    top_k: int = Field(5, ge=1)
