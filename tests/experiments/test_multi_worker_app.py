"""Opt-in (KERAS_LOTTERY_MULTI_WORKER=1, ~15 s): `apps.imp_main` as two MultiWorkerMirroredStrategy workers.

Two fresh app processes on localhost, one `TF_CONFIG` each, train one run: the chief (worker 0)
writes `--output_dir`, the other worker its scratch copy under `<tmp>/keras_lottery_workers/`
(`run_folder.worker_output_dir`), and both end with the same masks and weights, bit for bit.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from keras_lottery.experiments import run_folder
from tests import processes

pytestmark = pytest.mark.skipif(not os.environ.get("KERAS_LOTTERY_MULTI_WORKER"),
                                reason="starts two gRPC workers on localhost: set KERAS_LOTTERY_MULTI_WORKER=1")


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for each in sockets:
        each.bind(("localhost", 0))
    ports = [each.getsockname()[1] for each in sockets]
    for each in sockets:
        each.close()
    return ports


def test_two_workers_train_one_run_and_only_the_chief_writes_its_folder(tiny_fashion, tmp_path):
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    output = tmp_path / "run"
    command = [sys.executable, "-m", "apps.imp_main", f"--data_dir={tiny_fashion}", f"--output_dir={output}",
               "--rounds=1", "--iterations=40", "--batch_size=20", "--validation_examples=100",
               "--evaluations_per_round=2", "--verbose=0", "--distribution_strategy=multi_worker_mirrored"]
    started = []
    for index in range(2):
        environment = {**os.environ, "TMPDIR": str(tmp_path), "CUDA_VISIBLE_DEVICES": "",
                       "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker",
                                                                                          "index": index}})}
        started.append(subprocess.Popen(command, cwd=processes.REPOSITORY, env=environment, text=True,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    try:
        errors = [process.communicate(timeout=240)[1] for process in started]
    finally:
        for process in started:
            process.kill()
    for process, stderr in zip(started, errors):
        assert process.returncode == 0, stderr[-3000:]
    scratch = tmp_path / "keras_lottery_workers" / "worker_1" / "run"
    chief, worker = run_folder.RunFolder(str(output)), run_folder.RunFolder(str(scratch))
    summary = json.loads((output / "summary.json").read_text())
    assert summary["replicas"] == 2 and len(summary["rounds"]) == 2
    for round_index in (0, 1):
        for load in (chief.load_masks, chief.load_final_weights):
            got = getattr(worker, load.__name__)(round_index)
            want = load(round_index)
            for key in want:
                np.testing.assert_array_equal(got[key], want[key])
