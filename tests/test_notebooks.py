"""The notebooks run top to bottom (on tiny data), so they cannot rot."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "notebooks")


@pytest.mark.parametrize("name", ["quickstart", "lottery_ticket"])
def test_notebook_executes(name, tiny_fashion, tmp_path, monkeypatch):
    settings = {
        "KERAS_LOTTERY_DATA_DIR": tiny_fashion,
        "KERAS_LOTTERY_TRAIN_EXAMPLES": "200",
        "KERAS_LOTTERY_ITERATIONS": "40",
        "KERAS_LOTTERY_ROUNDS": "2",
        "KERAS_LOTTERY_OUTPUT_DIR": str(tmp_path / "runs"),
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)  # the kernel inherits the environment
    notebook = nbformat.read(os.path.join(NOTEBOOKS, f"{name}.ipynb"), as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output.get("output_type") == "error"]
    assert os.path.isdir(tmp_path / "runs")
