"""The notebooks run top to bottom (on tiny data), so they cannot rot; their README says what they hold."""

import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

import keras_lottery as kl

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "notebooks")
NAMES = ("quickstart", "lottery_ticket")


def _code(name):
    notebook = nbformat.read(os.path.join(NOTEBOOKS, f"{name}.ipynb"), as_version=4)
    return "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")


@pytest.fixture(scope="module")
def executed(tiny_fashion, tmp_path_factory):
    """name -> (executed notebook, its folder); each notebook runs once, all in one kernel (TensorFlow starts once)."""
    done, owner = {}, []

    def execute(name):
        if name in done:
            return done[name]
        folder = tmp_path_factory.mktemp(name)
        settings = {
            "KERAS_LOTTERY_DATA_DIR": tiny_fashion,
            "KERAS_LOTTERY_TRAIN_EXAMPLES": "200",
            "KERAS_LOTTERY_ITERATIONS": "40",
            "KERAS_LOTTERY_ROUNDS": "1",
            "KERAS_LOTTERY_OUTPUT_DIR": str(folder / "runs"),
        }
        notebook = nbformat.read(os.path.join(NOTEBOOKS, f"{name}.ipynb"), as_version=4)
        # In the shared kernel, each notebook starts from an empty namespace (names another notebook
        # defined would hide a NameError), in its own folder, with its settings in the environment.
        notebook.cells.insert(0, nbformat.v4.new_code_cell(
            f"%reset -f\nimport os\nos.environ.update({settings!r})\nos.chdir({str(folder)!r})\ndel os"))
        client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(folder)}})
        if owner:
            client.km, client.kc = owner[0].km, owner[0].kc
        else:
            client.shutdown_kernel = "immediate"  # at the module's end: nothing is left to wait for
            owner.append(client)
        client.execute(cleanup_kc=False)
        done[name] = notebook, folder
        return done[name]

    yield execute
    if owner:
        owner[0]._cleanup_kernel()  # shuts down the kernel the client started


def _outputs(cell):
    return cell.get("outputs", []) if cell.cell_type == "code" else []


def _printed(notebook):
    return "".join(output.get("text", "") for cell in notebook.cells for output in _outputs(cell)
                   if output.get("output_type") == "stream")


@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name, executed):
    notebook, folder = executed(name)
    outputs = [output for cell in notebook.cells for output in _outputs(cell)]
    assert not [output for output in outputs if output.get("output_type") == "error"]
    assert os.path.isdir(folder / "runs")


@pytest.mark.parametrize("name", NAMES)
def test_notebook_shows_every_figure_it_draws(name, executed):
    """In Jupyter a figure shows only as an image/png output of its cell (a non-GUI backend shows none)."""
    notebook, _ = executed(name)
    drawn = 0
    for cell in notebook.cells:
        figures = len(re.findall(r"\bplt\.(?:subplots|figure)\(", cell.source)) if cell.cell_type == "code" else 0
        images = sum("image/png" in output.get("data", {}) for output in _outputs(cell))
        assert images >= figures, f"a cell draws {figures} figure(s) and shows {images}:\n{cell.source}"
        drawn += figures
    assert drawn > 0  # the notebook draws something: the check above is not vacuous


def test_quickstart_prints_the_flips_before_the_prune_and_what_was_removed(executed):
    printed = _printed(executed("quickstart")[0])
    before = {name: float(share) for name, share in
              re.findall(r"^\s+(\w+): ([\d.]+)% of weights changed sign at least once", printed, re.M)}
    assert set(before) == {"fc1", "fc2", "output"}, printed
    assert before["fc1"] > 0, printed  # small weights change sign while the network trains densely
    removed = re.findall(r"^\s+(\w+): removed ([\d,]+) of ([\d,]+) weights.*\n"
                         r"\s+had flipped: ([\d.]+)% of the removed, ([\d.]+)% of the kept", printed, re.M)
    assert [row[0] for row in removed] == ["fc1", "fc2", "output"], printed
    for _, count, total, removed_flipped, kept_flipped in removed:
        assert int(count.replace(",", "")) == pytest.approx(0.8 * int(total.replace(",", "")), abs=1)
    _, _, _, removed_flipped, kept_flipped = removed[0]
    # The hybrid criterion ranks by |w| / (1 + flips): among fc1's removed weights, more had flipped.
    assert float(removed_flipped) > float(kept_flipped), printed


def _readme_bullets():
    """notebook name -> the text of its bullet in notebooks/README.md."""
    with open(os.path.join(NOTEBOOKS, "README.md")) as file:
        text = file.read()
    bullets = re.findall(r"^\* `(\w+)\.ipynb`:(.*?)(?=^\* |^\s*$)", text, re.M | re.S)
    return text, dict(bullets)


def test_readme_bullets_name_what_each_notebook_calls():
    _, bullets = _readme_bullets()
    assert sorted(bullets) == sorted(NAMES)
    for name, bullet in bullets.items():
        code = _code(name)
        named = re.findall(r"`([^`]+)`", bullet)
        # What the README names is in the notebook ...
        assert [span for span in named if span not in code] == [], name
        # ... and each keras_lottery feature the notebook uses is named (`keras` is the Keras package, not one).
        used = set(re.findall(r"\bkl\.(\w+)", code)) | {
            imported for line in re.findall(r"^from keras_lottery import (.+)$", code, re.M)
            for imported in re.split(r",\s*", line)}
        features = sorted((used & set(kl.__all__)) - {"keras"})
        assert features, name
        heads = {re.split(r"[.(]", span)[0] for span in named}
        assert [feature for feature in features if feature not in heads] == [], name


def test_readme_calls_nothing_to_come():
    text, _ = _readme_bullets()
    future = r"to come|when [^.]* lands|join[s]? it when|not yet|coming soon|will be added"
    # Every feature the package exports exists today: a sentence that promises one misleads.
    assert re.findall(rf"[^.]*\b(?:{future})\b[^.]*", text, re.I) == []
