"""The fair comparison: every (method, sparsity, seed) of a grid as its own resumable run folder.

    config = CompareConfig(methods=("imp", "snip", "rigl"), sparsities=(0.8, 0.9), seeds=(0, 1, 2),
                           settings={"model": "lenet_300_100", "iterations": 2000}, output_dir="runs/compare")
    compare.run(config)                    # runs (or resumes) every cell
    report.compare.write(config)           # the report of the cells finished so far

A method of the grid is a name, optionally with a control (`<name>/<control>`):

* 'imp': iterative magnitude pruning with rewinding to initialization (`imp.run`), ranked
  globally, `imp_rounds` rounds at the rate that lands exactly on the cell's sparsity;
* 'magnitude': gradual magnitude pruning during one training (Zhu & Gupta's schedule,
  `one_pass.run` with the magnitude criterion), the baseline of Gale et al.;
* every method of `sparse_config.METHODS` ('dense', 'random', 'snip', 'grasp', 'synflow',
  'set', 'snfs', 'rigl', 'l0', 'variational_dropout', 'supermask', 'edge_popup',
  'small_dense'; `sparse_training.run`);
* `imp/<control>`: the IMP cell's ticket (same sparsity and seed) trained once more with a
  control: 'layer_shuffle' (Frankle et al. 2021) or 'reinit'. 'scratch_e' is `imp/reinit`
  (Liu et al.'s Scratch-E: the pruned architecture from scratch, same iterations) and
  'scratch_b' the same at the dense run's training FLOPs (Scratch-B, at most
  `max_budget_factor` x the iterations);
* `<snip|grasp|synflow|random>/<control>`: the pruning-at-init sanity checks.

Equal iterations (`budget='iterations'`): every cell's *final* training is `iterations`
steps; IMP's earlier rounds are counted in its total iterations and training FLOPs, which
the report shows. `budget='flops'`: every sparse cell trains as long as the dense network's
training FLOPs allow (capped), RigL's extended-training comparison.

Cells are independent run folders `cells/<method>/sparsity_<s>/seed_<n>`: run them in any
order, in several processes, on several machines that share the folder (each cell holds
its own lock; a ticket cell first finishes or waits for its IMP cell). `distributed.py`
hands them out with keras-tuner's grid oracle.
"""

import dataclasses
import logging
import os
import shlex
import time

from keras_lottery.experiments import imp
from keras_lottery.experiments import run_folder
from keras_lottery.experiments import sparse_config
from keras_lottery.experiments import sparse_training
from keras_lottery.foundations.validation import check_int
from keras_lottery.sparsity import masks as masks_lib

_LOG = logging.getLogger(__name__)

FLOWS = ("imp", "magnitude")  # the grid's names for the IMP and one-pass flows
TICKET_CONTROLS = ("layer_shuffle", "reinit")
ALIASES = {"scratch_e": "imp/reinit", "scratch_b": "imp/reinit"}  # scratch_b also trains at the FLOPs budget
DEFAULT_METHODS = ("dense", "imp", "magnitude", "random", "snip", "grasp", "synflow", "set", "snfs", "rigl", "l0",
                   "variational_dropout", "supermask", "edge_popup", "small_dense", "scratch_e", "scratch_b",
                   "imp/layer_shuffle", "snip/layer_shuffle", "grasp/layer_shuffle", "synflow/layer_shuffle")
CELLS = "cells"
WAIT_SECONDS = 5.0  # how often a ticket cell looks again at an IMP cell another process is running


@dataclasses.dataclass
class CompareConfig:
    """A grid of methods x sparsities x seeds, and the settings every cell shares."""

    output_dir: str = "runs/compare"
    methods: tuple = DEFAULT_METHODS
    sparsities: tuple = (0.8, 0.9, 0.95, 0.98)
    seeds: tuple = (0, 1, 2)
    budget: str = "iterations"  # 'iterations' or 'flops' (see the module docstring)
    imp_rounds: int = 5  # IMP cells: rounds to the cell's sparsity (rate 1 - (1 - s) ** (1 / rounds))
    # `TrainingConfig` fields every cell gets (dataset, model, learning rate, iterations, ...), and
    # `SparseConfig` / `ImpConfig` fields they share (iterations, epochs, evaluations_per_round, ...).
    settings: dict = dataclasses.field(default_factory=dict)

    def resolved(self):
        """A copy with the methods, sparsities and seeds checked, every cell's config resolved.

        Raises:
          ValueError: an unknown method or control, a sparsity outside (0, 1), a bad seed, or a
            cell whose settings are refused (naming the cell).
        """
        config = dataclasses.replace(self, methods=tuple(self.methods), sparsities=tuple(self.sparsities),
                                     seeds=tuple(self.seeds), settings=dict(self.settings))
        if not config.methods or not config.sparsities or not config.seeds:
            raise ValueError("the grid needs at least one method, one sparsity and one seed.")
        for method in config.methods:
            parse_method(method)
        for sparsity in config.sparsities:
            masks_lib.check_sparsity(sparsity, "each of sparsities")
            if sparsity == 0:
                raise ValueError("sparsities are of the sparse cells, in (0, 1): the 'dense' method is the 0.")
        for seed in config.seeds:
            check_int(seed, "each of seeds", 0)
        if config.budget not in sparse_config.BUDGETS:
            raise ValueError(f"budget must be one of {sparse_config.BUDGETS}; got {config.budget!r}.")
        check_int(config.imp_rounds, "imp_rounds", 1)
        unknown = sorted(set(config.settings) - _SETTING_FIELDS)
        if unknown:
            raise ValueError(f"settings {unknown} are not fields every cell shares; the shared ones are "
                             f"{sorted(_SETTING_FIELDS)}.")
        for cell in cells(config):
            try:
                settings = cell_config(config, cell)
                # A ticket cell's source is an IMP cell of this grid, which may not have run yet.
                settings.resolved(**({"check_sources": False} if isinstance(settings, sparse_config.SparseConfig)
                                     else {}))
            except ValueError as error:
                raise ValueError(f"cell {cell.label}: {error}") from error
        return config


def _fields(config_class):
    return {field.name for field in dataclasses.fields(config_class)}


# What a grid may set for all its cells: the fields of either flow's config but those the grid sets
# per cell. Each cell takes the ones its flow has (the sparse methods' settings go to sparse cells).
_PER_CELL = {"output_dir", "seed", "method", "sparsity", "control", "masks_from", "budget", "rounds", "prune_rate",
             "strategy", "mode", "one_pass_iterations"}
_SETTING_FIELDS = (_fields(sparse_config.SparseConfig) | _fields(imp.ImpConfig)) - _PER_CELL


def parse_method(method):
    """(name, control) of a grid method such as 'snip/layer_shuffle'; aliases resolved.

    Raises:
      ValueError: an unknown name, or a control the method cannot take.
    """
    if not isinstance(method, str):
        raise ValueError(f"a grid method is a name such as 'rigl' or 'snip/layer_shuffle'; got {method!r}.")
    name, _, control = ALIASES.get(method, method).partition("/")
    known = FLOWS + tuple(m for m in sparse_config.METHODS if m != "ticket") + tuple(ALIASES)
    if name not in known:
        raise ValueError(f"unknown grid method {method!r}; the methods are {known}, optionally with "
                         f"/<control> ({TICKET_CONTROLS}) for imp, random, snip, grasp and synflow.")
    if control:
        allowed = ("imp",) + sparse_config.AT_INIT
        if name not in allowed or control not in TICKET_CONTROLS:
            raise ValueError(f"grid method {method!r}: a control is one of {TICKET_CONTROLS}, after one of {allowed}.")
    return name, control or "none"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    method: str  # as given in the grid ('snip/layer_shuffle', 'scratch_b', ...)
    sparsity: float  # 0 for 'dense'
    seed: int

    @property
    def label(self):
        return f"{self.method} at sparsity {self.sparsity:g}, seed {self.seed}"

    def folder(self, output_dir):
        name = self.method.replace("/", "+")
        return os.path.join(output_dir, CELLS, name, f"sparsity_{self.sparsity:g}", f"seed_{self.seed}")


def cells(config):
    """Every cell of the grid, IMP cells first (the ticket cells start from their masks); 'dense' once per seed."""
    result = []
    for method in config.methods:
        levels = (0.0,) if parse_method(method)[0] == "dense" else config.sparsities
        result += [Cell(method, sparsity, seed) for sparsity in levels for seed in config.seeds]
    return sorted(result, key=lambda cell: parse_method(cell.method)[0] != "imp" or "/" in cell.method
                  or cell.method in ALIASES)


def imp_cell(cell):
    """The IMP cell a ticket cell takes its masks from."""
    return Cell("imp", cell.sparsity, cell.seed)


def cell_config(config, cell):
    """The flow's config of `cell` (an `ImpConfig` for 'imp' and 'magnitude', else a `SparseConfig`)."""
    name, control = parse_method(cell.method)
    output_dir = cell.folder(config.output_dir)
    flow_class = imp.ImpConfig if name in FLOWS and control == "none" else sparse_config.SparseConfig
    settings = {key: value for key, value in config.settings.items() if key in _fields(flow_class)}
    settings.update(seed=cell.seed, output_dir=output_dir)
    if name == "imp" and control == "none":
        rate = 1.0 - (1.0 - cell.sparsity) ** (1.0 / config.imp_rounds)
        return imp.ImpConfig(rounds=config.imp_rounds, prune_rate=rate, strategy="global", **settings)
    if name == "magnitude":
        # One pass ends at IMP's sparsity after `rounds` rounds: one round at the cell's sparsity as its rate.
        iterations = settings.pop("iterations", None)
        if iterations is None:
            raise ValueError("'magnitude' cells train one pass of --iterations steps: give iterations (not epochs).")
        return imp.ImpConfig(mode="one_pass", rounds=1, prune_rate=cell.sparsity, strategy="global",
                             one_pass_iterations=iterations, iterations=iterations, **settings)
    budget = "flops" if cell.method == "scratch_b" or (config.budget == "flops" and name != "dense") else "iterations"
    if name == "imp":
        return sparse_config.SparseConfig(method="ticket", sparsity=cell.sparsity, control=control, budget=budget,
                                          masks_from=imp_cell(cell).folder(config.output_dir), **settings)
    return sparse_config.SparseConfig(method=name, sparsity=cell.sparsity, control=control, budget=budget,
                                      **settings)


def flow_of(cell_settings):
    """The library call that runs a cell's config."""
    return sparse_training.run if isinstance(cell_settings, sparse_config.SparseConfig) else imp.run


def run_cell(config, cell, on_cell_end=None):
    """Runs (or resumes, or just reads) one cell; a ticket cell first makes sure its IMP cell is finished.

    Returns:
      The cell's summary.
    """
    if parse_method(cell.method)[0] == "imp" and cell.method != "imp":
        _finish_or_wait(config, imp_cell(cell))
    settings = cell_config(config, cell)
    summary = flow_of(settings)(settings)
    if on_cell_end is not None:
        on_cell_end(cell, summary)
    return summary


def _finish_or_wait(config, cell):
    """Runs `cell` to its end here, or, while another process holds its folder, waits for it."""
    while True:
        try:
            settings = cell_config(config, cell)
            return flow_of(settings)(settings)
        except run_folder.RunInUseError:
            _LOG.info("%s is running in another process: waiting for it.", cell.label)
            time.sleep(WAIT_SECONDS)


def run(config, on_cell_end=None):
    """Runs (or resumes) every cell of the grid; `report.compare.write(config)` then writes its report.

    Args:
      config: a `CompareConfig`.
      on_cell_end: optional callable(cell, summary) after each cell.

    Returns:
      dict cell -> its summary.

    Raises:
      ValueError: a bad grid or cell setting, before any training.
    """
    config = config.resolved()
    return {cell: run_cell(config, cell, on_cell_end) for cell in cells(config)}


def command(config, cell):
    """The command that runs `cell` on its own, with every setting that differs from the app's default."""
    settings = cell_config(config, cell)
    app = "apps.sparse_main" if isinstance(settings, sparse_config.SparseConfig) else "apps.imp_main"
    defaults = type(settings)()
    flags = []
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        always = field.name in ("output_dir", "method", "sparsity")  # what the command is about, said plainly
        if value is None or value == getattr(defaults, field.name) and not always:
            continue
        flags.append(f"--{field.name}={value}")
    return " ".join(["python", "-m", app] + [shlex.quote(flag) for flag in flags])
