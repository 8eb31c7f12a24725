"""The notebooks run top to bottom (on tiny data), so they cannot rot."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "notebooks")


@pytest.fixture(scope="module")
def kernel():
    """One kernel for the module's notebooks, so that TensorFlow starts once: holds the client that started it."""
    owner = []
    yield owner
    if owner:
        owner[0]._cleanup_kernel()  # shuts down the kernel the client started


@pytest.mark.parametrize("name", ["quickstart", "lottery_ticket"])
def test_notebook_executes(name, tiny_fashion, tmp_path, kernel):
    settings = {
        "KERAS_LOTTERY_DATA_DIR": tiny_fashion,
        "KERAS_LOTTERY_TRAIN_EXAMPLES": "200",
        "KERAS_LOTTERY_ITERATIONS": "40",
        "KERAS_LOTTERY_ROUNDS": "1",
        "KERAS_LOTTERY_OUTPUT_DIR": str(tmp_path / "runs"),
    }
    notebook = nbformat.read(os.path.join(NOTEBOOKS, f"{name}.ipynb"), as_version=4)
    # In the shared kernel, each notebook starts from an empty namespace (names another notebook
    # defined would hide a NameError), in its own folder, with its settings in the environment.
    notebook.cells.insert(0, nbformat.v4.new_code_cell(
        f"%reset -f\nimport os\nos.environ.update({settings!r})\nos.chdir({str(tmp_path)!r})\ndel os"))
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    if kernel:
        client.km, client.kc = kernel[0].km, kernel[0].kc
    else:
        client.shutdown_kernel = "immediate"  # at the module's end: nothing is left to wait for
        kernel.append(client)
    client.execute(cleanup_kc=False)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output.get("output_type") == "error"]
    assert os.path.isdir(tmp_path / "runs")
