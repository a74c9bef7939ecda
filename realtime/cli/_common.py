"""Options every command shares: --config, --set, --log-level.

Only click is imported here; each command imports the library it calls
inside its own body, so ``neuroimagen --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def setup_logging(level: str) -> None:
    """``level`` for neuroimagen's own loggers; other libraries' at WARNING unless DEBUG is asked for.

    Libraries such as onnxscript log INFO lines per graph pass and node (hundreds per export),
    which would bury our own progress at the default INFO.
    """
    from rich.logging import RichHandler

    ours = getattr(logging, level.upper())
    logging.basicConfig(
        level=ours if ours <= logging.DEBUG else max(ours, logging.WARNING),
        format="%(name)s: %(message)s",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False)],
        force=True,
    )
    logging.getLogger("neuroimagen").setLevel(ours)


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --config/--set/--log-level; the command receives ``cfg_data`` (the merged dict)."""

    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="YAML file overriding the shipped configs/default.yaml (any subset of sections).",
    )
    @click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override one config value, e.g. --set stream.windowing.hop_s=0.1 (repeatable).",
    )
    @click.option(
        "--log-level",
        type=click.Choice(LOG_LEVELS, case_sensitive=False),
        default="INFO",
        show_default=True,
    )
    @functools.wraps(func)
    def wrapper(*args: Any, config_path: Path | None, overrides: tuple[str, ...], log_level: str, **kwargs: Any):
        setup_logging(log_level)
        from neuroimagen.stream.config import ConfigError, load_config_data

        try:
            cfg_data = load_config_data(config_path, overrides)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
        # a typo anywhere fails now, not minutes into a run
        for name, model in section_models().items():
            section(model, cfg_data, name)
        return func(*args, cfg_data=cfg_data, **kwargs)

    return wrapper


def section_models() -> dict[str, type]:
    """Each top-level config section's model (config modules are light: pydantic only)."""
    from neuroimagen.export.config import ExportConfig
    from neuroimagen.gui.config import GuiConfig
    from neuroimagen.realtime.config import RealtimeConfig
    from neuroimagen.stream.config import StreamConfig
    from neuroimagen.training.config import TrainingConfig

    return {
        "stream": StreamConfig,
        "training": TrainingConfig,
        "export": ExportConfig,
        "realtime": RealtimeConfig,
        "gui": GuiConfig,
    }


def section(model: type, cfg_data: dict, name: str):
    """Validate one section of the merged config, turning errors into a usage error."""
    from neuroimagen.stream.config import ConfigError, validate_section

    try:
        return validate_section(model, cfg_data.get(name), name)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


class StopSignal:
    """Which signal (SIGINT or SIGTERM) asked a long-running command to stop, if any."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum if self.signum else 0

    def exit(self, message: str) -> None:
        """Say in one line what was kept, then exit with the conventional status."""
        click.echo(f"stopped by {self.name}: {message}", err=True)
        raise click.exceptions.Exit(self.exit_code)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopSignal]:
    """SIGINT and SIGTERM become one ``KeyboardInterrupt`` in the main thread, remembered.

    The command catches it, stops cleanly (closes outlets, finalizes, writes
    its report), then calls :meth:`StopSignal.exit`. A second signal while it
    stops is ignored, so it cannot abort the clean stop halfway.
    """
    state = StopSignal()

    def handler(signum: int, frame: object) -> None:
        if state.signum is not None:
            return
        state.signum = signum
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for sig, prev in previous.items():
            signal.signal(sig, prev)
