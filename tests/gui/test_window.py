"""The main window driven by pytest-qt on a real loopback stream with a counter channel."""

from __future__ import annotations

import numpy as np
import pytest

from neuroimagen.stream.montage import montage_ch_names

pytestmark = pytest.mark.gui

CH = montage_ch_names()


def _window(qtbot, tmp_path, bundle, **cfg):
    from neuroimagen.gui.config import GuiConfig
    from neuroimagen.gui.window import MainWindow
    from neuroimagen.realtime.config import RealtimeConfig, SessionConfig
    from neuroimagen.stream.config import StreamConfig

    stream_cfg = StreamConfig()
    stream_cfg = stream_cfg.model_copy(update={"inlet": stream_cfg.inlet.model_copy(
        update={"resolve_timeout_s": cfg.pop("resolve_timeout_s", 10.0)})})
    rt = RealtimeConfig(warmup_frames=1, session=SessionConfig(save_frames=True))
    cfg.setdefault("engine", "thread")  # the engine's own objects are inspected; process mode: test_transport
    window = MainWindow(stream_cfg, rt, GuiConfig(display_s=2.0, **cfg), bundle=bundle,
                        out_root=tmp_path / "gui", truth_images=cfg.pop("truth", None))
    qtbot.addWidget(window)
    window.show()
    return window


def _counter_outlet(**kw):
    import pylsl
    from helpers.lsl import spawn_outlet

    # channel 0 counts samples; the 128 montage channels follow (the contract drops 'counter')
    outlet = spawn_outlet(n_channels=129, ch_names=["counter", *CH], unit="microvolts", chunk_size=32,
                          wait_consumer=True, **kw)
    assert pylsl.resolve_byprop("name", outlet.name, 1, 60.0), "the child outlet never appeared"
    return outlet


def test_connect_frames_content_settings_record_screenshot_stop(lsl_loopback, qtbot, tmp_path, tiny_bundle):
    from helpers.wait import wait_until
    from PIL import Image

    window = _window(qtbot, tmp_path, tiny_bundle, n_display_channels=129)  # the counter too
    with _counter_outlet() as outlet:
        # 1. connect: the engine loads and warms up in its thread, frames arrive by the timer
        window.connect_stream(outlet.name)
        qtbot.waitUntil(lambda: bool(window.n_frames_shown >= 3 or window.error), timeout=60_000)
        assert window.error is None, window.error
        runner = window.runner
        assert runner.phase == "running"
        assert "tiny-random" in window.banner.text()

        # 2. the image items show the last frame drawn, which is the frame the engine published
        frame = window.shown_frame
        np.testing.assert_array_equal(window.image_item.image, frame.image)
        np.testing.assert_array_equal(window.saliency_item.image, frame.saliency)
        png = runner.out_dir / "frames" / f"{frame.seq:06d}.png"  # written by the engine's session
        wait_until(png.is_file, 10.0, message=f"{png}")
        np.testing.assert_array_equal(np.asarray(Image.open(png).convert("RGB")), window.image_item.image)
        assert window.topk_bars[0].format().startswith(frame.top_k[0][0])
        np.testing.assert_array_equal(window.strip_tile(0), frame.image)  # 32 px frames: tiles at full size
        np.testing.assert_array_equal(window.strip_item.image, window.strip_image)

        # 3. the scope holds exactly the samples that were sent: column i % n_cols has counter i
        qtbot.waitUntil(lambda: bool(window.scope.buffer is not None
                                     and window.scope.buffer.n_written > window.scope.buffer.n_cols),
                        timeout=20_000)
        buf = window.scope.buffer
        n, n_cols = buf.n_written, buf.n_cols
        assert buf.n_channels == 129 and buf.sfreq == 1000.0
        cols = np.arange(n_cols)
        expected = (n - 1 - ((n - 1 - cols) % n_cols)).astype(np.float32)
        np.testing.assert_array_equal(buf.data[0], expected)
        k = np.arange(n - n_cols, n)
        np.testing.assert_allclose(buf.data[5, k % n_cols], np.sin(k * 0.01 * 5), atol=1e-6)
        # what is drawn: each pixel's min/max of the counter column range
        mins, maxs = buf.peaks(int(window.scope.plot.getViewBox().width()))
        edges = np.linspace(0, n_cols, mins.shape[1] + 1).astype(int)
        np.testing.assert_array_equal(mins[0], np.minimum.reduceat(expected, edges[:-1]))
        np.testing.assert_array_equal(maxs[0], np.maximum.reduceat(expected, edges[:-1]))
        assert window.scope.raster.image.shape[1] == mins.shape[1] and window.scope.n_redraws > 10
        # what is shown: the raster drawn column by column over many frames equals one full drawing
        # of those peaks (no tick ran since the last pull + redraw: same data, gain, centres, colours)
        from neuroimagen.gui.scope import ScopeRaster

        scope = window.scope
        full = ScopeRaster(buf.n_channels).draw(
            mins, maxs, np.ones(mins.shape[1], bool), height=scope.raster.image.shape[0],
            gain=scope.scale_to_volts / (scope.scale_uv * 1e-6), centre=scope.centre, quality=scope.quality)
        np.testing.assert_array_equal(scope.raster.image, full)
        assert scope.traces.qimage.width() == mins.shape[1]

        # 4. settings: steps, strength, sliding hop; Apply restarts the engine with them
        window.steps_spin.setValue(1)
        window.strength_spin.setValue(0.5)
        window.mode_combo.setCurrentText("sliding")
        shown_before = window.n_frames_shown
        qtbot.mouseClick(window.apply_button, _left())
        assert window.runner is not runner
        qtbot.waitUntil(lambda: bool((window.runner is not None and window.runner.phase == "running"
                                      and window.n_frames_shown >= shown_before + 2) or window.error),
                        timeout=60_000)
        assert window.error is None, window.error
        frame_fn = window.runner.backend.frame
        assert frame_fn.num_inference_steps == 1 and frame_fn.strength == 0.5

        # 5. record the stream: the recording holds consecutive counter values
        qtbot.mouseClick(window.record_button, _left())
        assert window.recorder is not None
        out = window.recording_dir
        wait_until(lambda: window.recorder.n_samples.get(outlet.name, 0) > 500, 20.0,
                   message=lambda: f"500 recorded samples (have {window.recorder.n_samples})")
        qtbot.mouseClick(window.record_button, _left())
        assert window.recorder is None
        fifs = list(out.rglob("*.fif"))
        assert fifs, list(out.rglob("*"))
        import mne

        raw = mne.io.read_raw_fif(fifs[0], preload=True, verbose="error")
        counter = raw.get_data(picks=[raw.ch_names.index("counter")])[0] * 1e6  # stored in V, sent in uV
        assert counter.size > 500
        np.testing.assert_allclose(np.diff(counter), 1.0, atol=1e-3)

        # 6. screenshot of the whole window
        shot = window.save_screenshot(tmp_path / "shot.png")
        with Image.open(shot) as im:
            assert im.size == (window.width(), window.height())
            assert np.asarray(im.convert("L")).std() > 5  # not a blank grab

        # 7. stop: the engine stops, its final figures come back
        summary = window.disconnect_stream()
        assert window.runner is None and summary["n_frames"] >= 2
        assert summary["n_frames"] + summary["n_dropped"] + summary["n_unfinished_at_stop"] == summary["n_windows"]
    window.shutdown()


def _left():
    from PyQt6 import QtCore

    return QtCore.Qt.MouseButton.LeftButton


def test_show_snapshot_draws_exactly_the_published_frame(qtbot, tmp_path, tiny_bundle):
    """A fake publisher: the decoding view renders what the snapshot holds, truth included."""
    from PIL import Image

    from neuroimagen.realtime.engine import Frame, Snapshot

    truth = np.zeros((20, 30, 3), np.uint8)
    truth[5:10, 3:8] = (255, 0, 0)
    Image.fromarray(truth).save(tmp_path / "img7.png")
    window = _window(qtbot, tmp_path, tiny_bundle, top_k=3, strip_n=4)
    window.truth_images = {"img7": tmp_path / "img7.png"}
    rng = np.random.default_rng(0)
    frames = []
    for seq in range(1, 6):
        f = Frame(seq=seq, timestamp=0.0, first_sample=0, marker={"image": "img7"} if seq == 5 else {},
                  image=rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),
                  saliency=rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
                  class_scores=np.zeros(3, np.float32), top_k=[("a", 0.9), ("b", 0.1), ("c", -0.5)],
                  timings_ms={})
        metrics = {"latency_ms": {"end_to_end": {"p50": 10.0 * seq, "p99": 20.0 * seq}}, "n_frames": seq,
                   "first_frame_ms": {"end_to_end": 460.0}}
        window.show_snapshot(Snapshot(seq, f, metrics, np.zeros((0, 0), np.float32), [], 1000.0, "fake"))
        frames.append(f)
    last = frames[-1]
    np.testing.assert_array_equal(window.image_item.image, last.image)
    np.testing.assert_array_equal(window.saliency_item.image, last.saliency)
    np.testing.assert_array_equal(window.truth_item.image, truth)
    # the strip: newest first, the last strip_n frames
    for i, f in enumerate(frames[::-1][:4]):
        np.testing.assert_array_equal(window.strip_tile(i), f.image)
    np.testing.assert_array_equal(window.strip_item.image, window.strip_image)
    assert [b.format().split()[0] for b in window.topk_bars] == ["a", "b", "c"]
    assert "p99 100.0 ms" in window.perf_label.text()
    assert "first frame</b> 460.0 ms (start-up" in window.perf_label.text()
    assert window.shown_seq == 5


def test_an_unknown_stream_is_an_error_in_the_window_not_a_crash(lsl_loopback, qtbot, tmp_path, tiny_bundle):
    from helpers.lsl import unique_name

    window = _window(qtbot, tmp_path, tiny_bundle, resolve_timeout_s=0.5)
    window.connect_stream(unique_name("absent"))
    qtbot.waitUntil(lambda: window.error is not None, timeout=30_000)
    assert "absent" in window.error and window.runner is None
    assert "ERROR" in window.statusBar().currentMessage()
    window.shutdown()
