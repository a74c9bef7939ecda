"""The ``neuroimagen`` console script.

This package is the one place allowed to reach every layer, and it does so
lazily, inside each command: ``neuroimagen --help`` imports click only.
"""

from __future__ import annotations

import click

from ._common import common_options


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="neuroimagen")
def main() -> None:
    """NeuroImagen: reconstruct the image a person is looking at from live EEG.

    Every command takes --config FILE, --set KEY=VALUE and --log-level.
    """


@main.command("sys-info")
@common_options
def sys_info(cfg_data: dict) -> None:
    """Versions of Python, torch (+CUDA), liblsl, mne, onnxruntime, TensorRT, diffusers, Qt; the GPU."""
    from rich.console import Console
    from rich.table import Table

    from neuroimagen.realtime.sysinfo import collect

    table = Table(title="neuroimagen sys-info", show_header=False)
    for key, value in collect().items():
        table.add_row(key, value)
    Console().print(table)


def _register() -> None:
    from . import bench, bundle, data, demo, eval, export, gui, present, run, stream, train

    main.add_command(stream.stream)
    main.add_command(data.data)
    main.add_command(eval.eval_)
    main.add_command(bench.bench)
    main.add_command(demo.demo)
    main.add_command(train.train)
    main.add_command(bundle.bundle)
    main.add_command(export.export)
    main.add_command(run.run)
    main.add_command(gui.gui)
    main.add_command(gui.engine_process)
    main.add_command(present.present)


_register()
