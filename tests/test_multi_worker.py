"""MultiWorkerMirroredStrategy with two worker processes on localhost."""

import json
import os
import socket
import subprocess
import sys

import pytest

import supcon_tf as sct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 600


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_workers(args, tmp_path, n=2):
    """Starts `n` workers of `args` with TF_CONFIG; each gets its own TMPDIR.
    Returns their CompletedProcess-like (returncode, output) and TMPDIRs."""
    ports = free_ports(n)
    procs, tmpdirs = [], []
    for index in range(n):
        tmpdir = tmp_path / f"tmp{index}"
        tmpdir.mkdir()
        env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONPATH=ROOT,
                   TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=sct.distribute.tf_config_for_localhost(ports, index))
        procs.append(subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
        tmpdirs.append(tmpdir)
    results = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=TIMEOUT)
            results.append((proc.returncode, out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return results, tmpdirs


def _worker_dirs(tmpdir):
    """The output folders `supcon_tf.distribute.output_dir` made in `tmpdir`
    (TFDS leaves folders of its own there when it looks for metadata offline)."""
    return [p for p in tmpdir.iterdir() if p.name.startswith("supcon_tf_")]


def test_two_workers_match_one_process(tmp_path):
    single = tmp_path / "single"
    single.mkdir()
    from tests._multi_worker_job import main as job          # one device, in this process
    assert not os.environ.get("TF_CONFIG")
    job(str(single / "h.json"))
    multi = tmp_path / "multi"
    multi.mkdir()
    results, tmpdirs = run_workers(["tests/_multi_worker_job.py", str(multi / "h.json")],
                                   tmp_path)
    for code, out in results:
        assert code == 0, out[-3000:]
    one = json.loads((single / "h.json").read_text())
    two = json.loads((multi / "h.json").read_text())
    assert one["replicas"] == 1 and two["replicas"] == 2 and two["chief"]
    # Stated tolerance: 1e-4 relative (round-off of the cross-process sums
    # over 8 SGD steps; the loss itself moves by > 1e-2 over them).
    assert abs(one["history"]["loss"][-1] - one["history"]["loss"][0]) > 1e-2
    for key in ("loss", "contrastive_accuracy"):
        assert two["history"][key] == pytest.approx(one["history"][key], rel=1e-4), key
    # The non-chief wrote into a temporary folder and removed it.
    assert _worker_dirs(tmpdirs[1]) == []


def test_pretrain_script_multi_worker(tmp_path):
    model_dir = tmp_path / "run"
    args = ["examples/pretrain.py", "--config=configs/fashion_mnist/supcon.py",
            "--config.distribute=multi_worker", "--config.data.train_size=256",
            "--config.batch_size=64", "--config.encoder.width=0.0625", "--config.epochs=1",
            "--verbose=2", f"--model_dir={model_dir}"]
    results, tmpdirs = run_workers(args, tmp_path)
    for code, out in results:
        assert code == 0, out[-3000:]
    assert "on 2 replica(s)" in results[0][1]
    assert "pretrained" not in results[1][1]  # worker 1 is not the chief
    record = json.loads((model_dir / "pretrain.json").read_text())
    assert record["replicas"] == 2 and record["config"]["distribute"] == "multi_worker"
    assert (model_dir / "encoder.keras").is_file() and (model_dir / "logs").is_dir()
    # Only the chief wrote: the worker's temporary outputs are gone.
    assert _worker_dirs(tmpdirs[1]) == []
