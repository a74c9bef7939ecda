"""What ``run`` and ``demo`` share: bundle + backend loading, the scorer, the terminal table, the run."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def default_session_dir(kind: str) -> Path:
    return Path("sessions") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


def load_bundle_or_fail(path: Path | None, rt_cfg: Any) -> Any:
    """The bundle at ``path``, else ``realtime.bundle``, else the embedded one; verified."""
    from neuroimagen.realtime.embedded import embedded_bundle, missing_embedded_bundle_message
    from neuroimagen.training.models.bundle import BundleError, load_bundle

    path = path or rt_cfg.bundle or embedded_bundle()
    if path is None:
        raise click.ClickException(missing_embedded_bundle_message())
    try:
        return load_bundle(path)
    except BundleError as exc:
        raise click.ClickException(str(exc)) from None


def load_backend_or_fail(bundle: Any, rt_cfg: Any) -> Any:
    from neuroimagen.realtime.backend import BackendError, load_backend

    try:
        return load_backend(bundle, rt_cfg)
    except BackendError as exc:
        cause = f" (cause: {type(exc.__cause__).__name__})" if exc.__cause__ is not None else ""
        raise click.ClickException(f"{exc}{cause}") from None


def resolved_config(cfg_data: dict, **sections: Any) -> dict:
    """Every section, validated models dumped over the merged data (what the session saves)."""
    out = dict(cfg_data)
    for name, model in sections.items():
        out[name] = model.model_dump(mode="json")
    return out


def live_table(title: str) -> Callable[[Any], Any]:
    """A rich table of a snapshot: frame, top-k, latencies, fps, drops, health, live scores."""
    from rich.table import Table

    def ms(d: dict | None) -> str:
        if not d or d.get("p50") is None:
            return "-"
        return f"p50 {d['p50']:.1f}  p95 {d['p95']:.1f}  p99 {d['p99']:.1f} ms"

    def pct(v: Any) -> str:
        return "-" if v is None else f"{100 * v:.0f} %"

    def render(snap: Any) -> Table:
        m = snap.metrics or {}
        t = Table(title=title, show_header=False)
        t.add_row("backend", snap.status)
        t.add_row("frames / windows", f"{m.get('n_frames', 0)} / {m.get('n_windows', 0)}  "
                  f"({m.get('fps_recent', 0.0):.1f} fps)")
        t.add_row("dropped (windows, frames)", f"{m.get('n_dropped_windows', 0)}, {m.get('n_dropped_frames', 0)}")
        lat = m.get("latency_ms", {})
        t.add_row("end to end (last sample -> frame)", ms(lat.get("end_to_end")))
        first = (m.get("first_frame_ms") or {}).get("end_to_end")
        t.add_row("  first frame (start-up, not above)", "-" if first is None else f"{first:.1f} ms")
        for stage in ("pull", "preprocess", "extractors", "diffusion", "publish"):
            t.add_row(f"  {stage}", ms(lat.get(stage)))
        f = snap.frame
        if f is not None:
            top = ", ".join(f"{n} {s:.2f}" for n, s in f.top_k[:3])
            truth = f.marker.get("image")
            t.add_row("last frame", f"#{f.seq} {f.image.shape[1]}x{f.image.shape[0]}"
                      + (f" (shown: {truth})" if truth else ""))
            t.add_row("decoded top-3", top)
        sc = m.get("scores") or {}
        held = sc.get("heldout") or {}
        if held.get("n"):
            t.add_row("held-out images: class top-1", f"{pct(held['class_top1'])} "
                      f"(chance {pct(sc.get('chance_class_top1'))}, n={held['n']})")
            t.add_row("held-out images: SSIM", "-" if held["ssim"] is None else f"{held['ssim']:.3f}")
            t.add_row(f"held-out images: {held['nway']}-way top-1",
                      f"{pct(held['nway_top1'])} (chance {pct(sc.get('chance_nway_top1'))})")
        h = m.get("health") or {}
        if h:
            bad = h.get("flat_channels", []) + h.get("railing_channels", [])
            t.add_row("input health", ("OK" if h.get("ok") else f"{len(bad)} bad channel(s)")
                      + f"; NaN bursts {h.get('n_nan_bursts', 0)}, gaps {h.get('n_gaps', 0)}")
        return t

    return render


def run_with_table(title: str, run: Callable[[Callable[[Any], None]], dict], summary: dict) -> Any:
    """Run ``run(on_snapshot)`` under a live terminal table, stopping cleanly on SIGINT/SIGTERM.

    Returns the :class:`~._common.StopSignal` (``signum`` None: it ended by itself).
    """
    import signal

    from rich.console import Console
    from rich.live import Live

    from ._common import stop_on_signals

    console = Console()
    render = live_table(title)
    last: list[Any] = []

    def on_snapshot(snap: Any) -> None:
        last[:] = [snap]
        live.update(render(snap))

    with stop_on_signals() as stopped, Live(console=console, refresh_per_second=4, transient=False) as live:
        try:
            run(on_snapshot)
        except KeyboardInterrupt:
            stopped.signum = stopped.signum or signal.SIGINT
        if last:
            final = last[0]
            live.update(render(type(final)(final.seq, final.frame, summary, final.recent_eeg,
                                           final.eeg_ch_names, final.sfreq, final.status)))
    return stopped


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
