"""The trainer across processes: resume after SIGKILL gives the uninterrupted weights; 2-process DDP (gloo, CPU)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from helpers.wait import wait_until
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

NEUROIMAGEN = shutil.which("neuroimagen")


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    from helpers.twin import make_tiny_twin

    return make_tiny_twin(tmp_path_factory.mktemp("twin"))


def _env() -> dict[str, str]:
    # one thread per process: the machine is small and results must not depend on thread count
    return {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}


def _train_cmd(twin, out, params, stage="semantic"):
    cmd = [NEUROIMAGEN, "train", stage, str(twin), "--out", str(out), "--preset", "tiny", "--log-level", "WARNING"]
    for p in params:
        cmd += ["--param", p]
    return cmd


def _weights(run, name):
    return load_file(str(run / "model" / name / "diffusion_pytorch_model.safetensors"))


def test_resume_after_sigkill_ends_with_the_uninterrupted_weights(twin, tmp_path):
    params = ["trainer.max_steps=60", "trainer.checkpoint_every=10", "trainer.log_every=10",
              "model.dropout=0.1"]  # dropout: the RNG must be restored too
    whole = tmp_path / "whole"
    subprocess.run(_train_cmd(twin, whole, params), env=_env(), check=True, capture_output=True)

    # 1. start the same run, SIGKILL it as soon as its second checkpoint is complete
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(twin, killed, params), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: (killed / "checkpoints" / "step-0000020" / "trainer_state.json").is_file(),
                   timeout=120, interval=0.01, message="the second checkpoint")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "model").exists(), "the run finished before it was killed; make it longer"
    # 2. resume: it continues from its last complete checkpoint
    out = subprocess.run(_train_cmd(twin, killed, params) + ["--json", str(tmp_path / "r.json")],
                         env=_env(), check=True, capture_output=True, text=True)
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["resumed_from"] is not None and 20 <= result["resumed_from"] < 60, out.stdout
    a, b = _weights(whole, "semantic_extractor"), _weights(killed, "semantic_extractor")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    # the metrics of the redone steps were not duplicated
    steps = [int(r["step"]) for r in csv.DictReader(open(killed / "metrics.csv"))]
    assert steps == list(range(10, 61, 10))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _last_loss(run) -> float:
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    return float(rows[-1]["loss"])


def test_two_process_ddp_matches_one_process(twin, tmp_path):
    """Same global batch, same steps: the final training loss is within 10 % of the 1-process run's."""
    params = ["trainer.max_steps=40", "trainer.batch_size=16", "trainer.log_every=20",
              "trainer.checkpoint_every=40"]
    one = tmp_path / "one"
    subprocess.run(_train_cmd(twin, one, params), env=_env(), check=True, capture_output=True)
    two = tmp_path / "two"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    proc = subprocess.run(launcher + _train_cmd(twin, two, params), env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((two / "run.json").read_text())["world_size"] == 2
    l1, l2 = _last_loss(one), _last_loss(two)
    assert abs(l2 - l1) <= 0.1 * abs(l1), (l1, l2)
    # and it learned: the loss went down in both
    first = float(next(csv.DictReader(open(two / "metrics.csv")))["loss"])
    assert l2 < first
