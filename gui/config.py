"""The ``gui`` section: what the viewer shows and how often it redraws."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from neuroimagen.stream.config import FrozenConfig


class GuiConfig(FrozenConfig):
    engine: Literal["process", "thread"] = Field(
        "process", description="where the engine runs: its own process (snapshots via shared memory, the "
        "scope reads LSL itself) or threads of the GUI's process (shares the GIL with the redraws)",
    )
    refresh_hz: float = Field(
        40.0, gt=0, le=240, description="redraw target; the scope adapts down under load (40: a QTimer at "
        "exactly 30 Hz lands just under 30 redraws/s, the goal)",
    )
    panel_hz: float = Field(
        4.0, gt=0, le=60, description="figures (performance panel, stream status, status bar) redraws per second "
        "at most: they change slowly, and each text change costs a relayout and a repaint",
    )
    display_s: float = Field(5.0, gt=0, le=60, description="seconds of EEG across the scope (sweep display)")
    n_display_channels: int = Field(128, ge=1, description="channels drawn on the scope (the stream's first N)")
    scale_uv: float = Field(50.0, gt=0, description="scope: microvolts per channel spacing")
    noisy_std_v: float = Field(1e-4, gt=0, description="scope colouring: std above this is a noisy channel")
    top_k: int = Field(5, ge=1)
    strip_n: int = Field(8, ge=1, le=64, description="last N reconstructions in the strip")
    gil_switch_interval_s: float | None = Field(
        0.0005, gt=0, description="sys.setswitchinterval while the GUI runs (None: Python's 5 ms): the "
        "redraws hold the GIL, and a short interval hands it back to the engine's threads sooner",
    )
    nice: int = Field(
        10, ge=0, le=19, description="raise the GUI thread's nice value by this much (Linux; 0: off): on a busy "
        "machine the kernel then favours the engine's process, which keeps its priority (gui.priority)",
    )
    screenshot_dir: Path = Field(Path("screenshots"), description="where the screenshot button saves PNGs")
