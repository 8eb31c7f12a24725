r"""The comparison grid's cells handed out by keras-tuner's grid oracle, on one machine or many.

    tuner = grid_search.GridTuner(config)      # a `compare.CompareConfig`
    tuner.search()                             # every cell, once; resumable

Each keras-tuner trial is one cell of `compare.cells(config)` (the hyperparameter "cell",
its index, enumerated by `GridSearchOracle` in the grid's order, IMP cells first), run with
`compare.run_cell`: the cell's own run folder under `config.output_dir` holds its results,
so the trial's metrics are only what the oracle keeps (test accuracy, the objective it
needs; nothing is chosen by it). keras-tuner's folder is `<output_dir>/grid_search`.

Distributed, as `tuning.py`'s search (keras-tuner's chief/worker mode over gRPC): run the
same command on every machine with KERASTUNER_TUNER_ID ("chief" on one, tuner0, tuner1, ...
on the others), KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT; the chief serves the
oracle, each worker runs the cells it is given. With a shared folder a ticket cell whose IMP
cell another worker is running waits for it (the folder's lock); without one, a worker runs
that IMP cell itself, in its own copy.
"""

import logging

from keras_lottery import compat
from keras_lottery.experiments import compare

import keras_tuner  # after keras_lottery: compat sets TF_USE_LEGACY_KERAS before keras-tuner loads TensorFlow
from keras_tuner.engine import base_tuner

keras = compat.keras

_LOG = logging.getLogger(__name__)
OBJECTIVE = keras_tuner.Objective("test_accuracy", direction="max")
PROJECT = "grid_search"


class _CellSpace(keras_tuner.HyperModel):
    """The grid as one hyperparameter: the index of a cell."""

    def __init__(self, count):
        super().__init__()
        self.count = count

    def build(self, hp):
        return hp.Choice("cell", list(range(self.count)), ordered=True)


class GridTuner(base_tuner.BaseTuner):
    """A keras-tuner tuner whose trials are the cells of a comparison grid.

    Args:
      config: a `compare.CompareConfig`.
      overwrite: forget keras-tuner's record of an earlier search (the cells' run folders stay,
        so their finished runs are read back, not retrained).
      on_cell_end: optional callable(cell, summary) after each cell this process runs.

    Raises:
      ValueError: a bad grid (`CompareConfig.resolved`), before any training.
    """

    def __init__(self, config, overwrite=False, on_cell_end=None):
        self.config = config.resolved()
        self.cells = compare.cells(self.config)
        oracle = keras_tuner.oracles.GridSearchOracle(objective=OBJECTIVE, max_trials=len(self.cells))
        oracle.verbose = 0
        super().__init__(oracle, _CellSpace(len(self.cells)), directory=self.config.output_dir,
                         project_name=PROJECT, overwrite=overwrite)
        self._on_cell_end = on_cell_end

    def run_trial(self, trial):
        """Runs (or reads back) the trial's cell; returns its test accuracy for the oracle."""
        cell = self.cells[trial.hyperparameters.get("cell")]
        keras.backend.clear_session()  # the previous cell's graph state, as keras-tuner's Tuner frees it
        summary = compare.run_cell(self.config, cell, self._on_cell_end)
        return {"test_accuracy": float(summary["rounds"][-1]["test_accuracy"])}

    def load_model(self, trial):
        """Not available: a cell is a run folder, not one Keras model."""
        raise NotImplementedError("a grid cell is a run folder: read it with keras_lottery.load_run_model(folder).")
