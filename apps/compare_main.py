r"""Compare the pruning literature's methods fairly: a grid of methods x sparsities x seeds, one command.

    python -m apps.compare_main --dataset=fashion_mnist --model=lenet_300_100 --iterations=2000 \
        --methods=imp,snip,grasp,synflow,set,rigl,random --sparsities=0.8,0.9,0.95,0.98 --seeds=0,1,2 \
        --output_dir=runs/compare

Every (method, sparsity, seed) is its own resumable run folder under
<output_dir>/cells/ (rerunning the command resumes the grid, a killed cell at its last
evaluation); then <output_dir>/report/report.md (mean ± std and n per method and sparsity,
the budgets in iterations and FLOPs, the command of every cell), report.json and the plots
accuracy_vs_sparsity.png and accuracy_vs_training_flops.png. Methods and what
`imp/layer_shuffle`, `scratch_e`, `scratch_b` mean: keras_lottery/experiments/compare.py.
--budget=iterations (default) trains every final training the same iterations;
--budget=flops trains each sparse cell up to the dense training FLOPs.

On several machines sharing the folder: run the same command with KERASTUNER_TUNER_ID=chief
on one and tuner0, tuner1, ... on the others, KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT
set to the chief's address (keras-tuner's grid oracle hands out the cells;
keras_lottery/experiments/grid_search.py). --report_only writes the report of the cells
finished so far.
"""

import os

from absl import app
from absl import flags
from absl import logging

from apps import app_errors
from apps import method_flags
from apps import training_flags
from keras_lottery.experiments import compare
from keras_lottery.report import compare as compare_report

FLAGS = flags.FLAGS
_DEFAULTS = compare.CompareConfig()
training_flags.define(compare.sparse_config.SparseConfig(output_dir=_DEFAULTS.output_dir), verbose=0)
flags.adopt_module_key_flags(training_flags)
method_flags.define()
flags.adopt_module_key_flags(method_flags)
flags.DEFINE_list("methods", list(_DEFAULTS.methods), "Grid methods (name or name/control; see above).")
flags.DEFINE_list("sparsities", [f"{s:g}" for s in _DEFAULTS.sparsities], "Sparsities of the sparse cells, in (0, 1).")
flags.DEFINE_list("seeds", [str(s) for s in _DEFAULTS.seeds], "Seeds: every cell runs once per seed.")
flags.DEFINE_integer("imp_rounds", _DEFAULTS.imp_rounds, "IMP cells: pruning rounds to the cell's sparsity.")
flags.DEFINE_boolean("report_only", False, "Write the report of the finished cells; run nothing.")


def _numbers(values, parse, name):
    try:
        return tuple(parse(value) for value in values)
    except ValueError:
        raise app.UsageError(f"--{name} must be comma-separated numbers; got {','.join(values)!r}.") from None


def config_from_flags():
    """The `CompareConfig` the flags describe."""
    if FLAGS["seed"].present:
        raise app.UsageError("--seed sets one run's seed; a grid runs every cell once per seed of --seeds.")
    settings = {**training_flags.values(), **method_flags.values()}
    for name in ("output_dir", "seed"):
        settings.pop(name)
    budget = settings.pop("budget")
    settings = {name: value for name, value in settings.items() if value is not None}
    return compare.CompareConfig(output_dir=FLAGS.output_dir, methods=tuple(FLAGS.methods),
                                 sparsities=_numbers(FLAGS.sparsities, float, "sparsities"),
                                 seeds=_numbers(FLAGS.seeds, int, "seeds"), budget=budget,
                                 imp_rounds=FLAGS.imp_rounds, settings=settings)


def log_cell(cell, summary):
    record = summary["rounds"][-1]
    logging.info("%s: test accuracy %.4f, %.2f%% weights remaining, %d iterations", cell.label,
                 record["test_accuracy"], 100 * record["weights_remaining"], record["iterations"])


def main(argv):
    del argv
    config = training_flags.resolved(config_from_flags())
    grid = compare.cells(config)
    if not FLAGS.report_only:
        logging.info("grid of %d cells (%d methods, %d sparsities, %d seeds) on %s / %s, budget %s, in %s", len(grid),
                     len(config.methods), len(config.sparsities), len(config.seeds),
                     config.settings.get("dataset", "fashion_mnist"), config.settings.get("model", "lenet_300_100"),
                     config.budget, config.output_dir)
        if os.environ.get("KERASTUNER_TUNER_ID"):
            from keras_lottery.experiments import grid_search  # noqa: PLC0415  (keras-tuner only when distributed)

            tuner = grid_search.GridTuner(config, on_cell_end=log_cell)
            tuner.search()
            if os.environ["KERASTUNER_TUNER_ID"] != "chief":
                logging.info("worker %s: no cell left", os.environ["KERASTUNER_TUNER_ID"])
                return
        else:
            compare.run(config, on_cell_end=log_cell)
    written = compare_report.write(config)
    finished, total = written["cells"]
    logging.info("report of %d of %d cells: %s (table, commands), %s (numbers), plots %s", finished, total,
                 written["markdown"], written["json"], ", ".join(written["plots"]))


if __name__ == "__main__":
    app.run(app_errors.one_line_errors(main))
