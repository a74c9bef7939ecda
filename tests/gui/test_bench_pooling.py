"""bench gui pools every frame's latency from the engine sessions' topk.jsonl files."""

import json

from neuroimagen.gui.bench import _frame_latencies


def test_frame_latencies_reads_every_session_below(tmp_path):
    a, b = tmp_path / "gui-1" / "session-1", tmp_path / "gui-2" / "session-1"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    (a / "topk.jsonl").write_text("\n".join(json.dumps({"seq": i, "timings_ms": {"end_to_end": 10.0 + i}})
                                            for i in range(3)) + "\n")
    # a frame without the figure (and a blank line) is skipped, not counted as zero
    (b / "topk.jsonl").write_text(json.dumps({"seq": 0, "timings_ms": {"end_to_end": 99.5}}) + "\n\n"
                                  + json.dumps({"seq": 1, "timings_ms": {}}) + "\n")
    assert _frame_latencies(tmp_path) == [10.0, 11.0, 12.0, 99.5]
    assert _frame_latencies(tmp_path / "gui-2") == [99.5]
