"""What TensorBoard itself serves for finished runs: a real TensorBoard, asked through its HTTP API.

One TensorBoard process (`python -m tensorboard.main`) reads a tiny sign-flip IMP run and a
one-pass run side by side, as a user who compares runs points it at their parent folder.
Each chart the README documents ("Seeing what happened: TensorBoard") must have its data,
with the x axis it claims.
"""

import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from keras_lottery.experiments import imp
from tests import processes

ROUNDS, ITERATIONS, EVALUATIONS = 2, 40, 4
# Every chart the README's TensorBoard section names, by TensorBoard run: (tag, x values).
PER_ROUND = ["imp/test_accuracy", "imp/best_val_accuracy", "imp/early_stop_iteration", "imp/weights_remaining",
             "imp/flips/fc1/fraction_flipped", "imp/flips/fc1/fraction_ever_flipped", "imp/flips/fc1/mean_flips"]
PER_STEP = ["train/loss", "train/accuracy", "validation/loss", "validation/accuracy",
            "sparsity/weights_remaining", "sparsity/fc1/weights_remaining", "sparsity/fc1/mask_changes",
            "flips/fc1/flip_rate", "flips/fc1/fraction_flipped", "flips/fc1/mean_flips"]
ONE_PASS = ["one_pass/test_accuracy", "one_pass/best_val_accuracy", "one_pass/early_stop_iteration",
            "one_pass/weights_remaining"]


def _config(data_dir, output_dir, **overrides):
    settings = dict(output_dir=str(output_dir), data_dir=data_dir, rounds=ROUNDS, iterations=ITERATIONS,
                    batch_size=20, validation_examples=100, evaluations_per_round=EVALUATIONS, verbose=0)
    settings.update(overrides)
    return imp.ImpConfig(**settings)


@pytest.fixture(scope="module")
def served(tiny_fashion, tmp_path_factory):
    """(base URL of a TensorBoard over both runs, parent folder, IMP summary)."""
    parent = tmp_path_factory.mktemp("tensorboard_runs")
    summary = imp.run(_config(tiny_fashion, parent / "flips", criterion="sign_flip"))
    imp.run(_config(tiny_fashion, parent / "one", mode="one_pass", prune_updates=2))
    board = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", f"--logdir={parent}", "--port=0", "--host=127.0.0.1",
         "--load_fast=false", "--reload_interval=1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=processes.REPOSITORY)
    try:
        url = None
        for line in board.stdout:  # "TensorBoard 2.21.0 at http://127.0.0.1:PORT/ (Press CTRL+C to quit)"
            found = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
            if found:
                url = found.group(1)
                break
        assert url, "TensorBoard did not start"
        deadline = time.time() + 60
        while len(_get(url, "data/runs")) < 6 and time.time() < deadline:  # its first load runs in the background
            time.sleep(0.5)
        time.sleep(1.5)  # one more reload: every file of every run read
        yield url, parent, summary
    finally:
        board.kill()
        board.wait()


def _get(url, path, body=None):
    request = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _scalars(url, run, tag):
    points = _get(url, f"data/plugin/scalars/scalars?run={urllib.parse.quote(run)}&tag={urllib.parse.quote(tag)}")
    return [(step, value) for _, step, value in points]


def test_one_tensorboard_run_per_round_plus_one_for_the_rounds(served):
    url, _, _ = served
    runs = set(_get(url, "data/runs"))
    # Was 3 runs a round (train/, validation/, sparsity/) plus imp/: 34 for 10 rounds.
    assert runs == {"flips/tensorboard/imp", *(f"flips/tensorboard/round_{r}" for r in range(ROUNDS + 1)), "one/tensorboard/one_pass", "one/tensorboard/round_0"}


def test_every_documented_chart_has_its_data_on_its_own_x_axis(served):
    url, _, summary = served
    tags = _get(url, "data/plugin/scalars/tags")
    for tag in PER_ROUND:  # x = round
        assert [step for step, _ in _scalars(url, "flips/tensorboard/imp", tag)] == list(range(ROUNDS + 1)), tag
    interval = ITERATIONS // EVALUATIONS
    for r in range(ROUNDS + 1):
        for tag in PER_STEP:
            assert tag in tags[f"flips/tensorboard/round_{r}"], (r, tag)
        # Training and validation curves at x = iteration of the round (Keras's own are at x = "epoch").
        for tag in ("train/loss", "validation/accuracy"):
            steps = [step for step, _ in _scalars(url, f"flips/tensorboard/round_{r}", tag)]
            assert steps == list(range(interval, ITERATIONS + 1, interval)), (r, tag)
    best = max(value for _, value in _scalars(url, "flips/tensorboard/round_1", "validation/accuracy"))
    assert best == pytest.approx(summary["rounds"][1]["best_val_accuracy"], abs=1e-6)
    histograms = _get(url, "data/plugin/histograms/tags")
    assert "weights/fc1/surviving" in histograms["flips/tensorboard/round_1"]
    for tag in ONE_PASS:
        assert tag in tags["one/tensorboard/one_pass"], tag
    assert not [tag for tag in tags["one/tensorboard/one_pass"] if tag.startswith("imp/")]  # one pass is not IMP


def test_per_round_and_per_step_views_never_share_a_tag(served):
    url, _, _ = served
    tags = _get(url, "data/plugin/scalars/tags")
    per_round = set(tags["flips/tensorboard/imp"]) | set(tags["one/tensorboard/one_pass"])
    per_step = set().union(*(tags[run] for run in tags if "/round_" in run))
    assert per_round and per_step and not per_round & per_step  # else one chart mixes x = round and x = step


def test_the_prune_that_starts_a_round_shows_as_mask_changes(served):
    url, _, summary = served
    assert _scalars(url, "flips/tensorboard/round_0", "sparsity/fc1/mask_changes")[0][1] == 0  # round 0 trains dense
    for r in range(1, ROUNDS + 1):
        points = _scalars(url, f"flips/tensorboard/round_{r}", "sparsity/fc1/mask_changes")
        step, changed = points[0]
        kept_before = summary["rounds"][r - 1]["layers"]["fc1"]
        kept_now = summary["rounds"][r]["layers"]["fc1"]
        size = 784 * 300
        assert step == 0 and changed == pytest.approx(round((kept_before - kept_now) * size), abs=1)
        assert all(value == 0 for _, value in points[1:])  # masks are fixed within an IMP round


def test_hparams_columns_sessions_and_status(served):
    url, parent, _ = served
    experiment = _get(url, "data/plugin/hparams/experiment", {"experimentName": ""})
    infos = {info["name"]: info for info in experiment["hparamInfos"]}
    assert "criterion" in infos and "rewind_step" in infos
    assert not {"output_dir", "verbose", "data_dir", "backup_seconds"} & set(infos)  # not hyperparameters
    # No "None": unset values are left out, so numeric columns stay numeric (range filters work).
    for info in infos.values():
        assert "None" not in info.get("domainDiscrete", []), info["name"]
    # The dashboard shows the first 5 columns by default, those that differ between runs first.
    shown = sorted(experiment["hparamInfos"], key=lambda info: not info["differs"])[:5]
    assert "criterion" in {info["name"] for info in shown}
    groups = _get(url, "data/plugin/hparams/session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 10, "colParams": [],
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})
    names = {group["name"]: group for group in groups["sessionGroups"]}
    # Named by run folder, not by a hash of the config; finished runs say so.
    assert set(names) == {os.path.normpath(parent / "flips"), os.path.normpath(parent / "one")}
    for group in names.values():
        assert [session["status"] for session in group["sessions"]] == ["STATUS_SUCCESS"]
    metrics = {value["name"]["tag"] for value in names[os.path.normpath(parent / "flips")]["metricValues"]}
    assert "imp/test_accuracy" in metrics


def test_readme_documents_each_chart_checked_here():
    readme = open(os.path.join(processes.REPOSITORY, "README.md")).read()
    section = readme.split("## Seeing what happened: TensorBoard", 1)[1].split("\n## ", 1)[0]
    for tag in PER_ROUND + PER_STEP + ONE_PASS + ["weights/fc1/surviving"]:
        documented = re.sub(r"/fc1/", "/<layer>/", tag)
        assert documented in section, documented
