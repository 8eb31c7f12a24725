r"""Instability analysis (linear mode connectivity) of finished IMP runs, and its report.

    python -m apps.instability_main --runs runs/lenet_s0 runs/lenet_s1 --output_dir instability \
        --levels 0,3,6 --rewind_iterations 0,25,100,500,2000

`--runs` takes IMP run folders (the --output_dir of apps.imp_main) or folders that hold
them at any depth; several may follow one --runs, or repeat it. For each level and rewind
iteration k, two copies of the dense round 0 replayed to k (masked by the level's masks)
train to the end with different data orders, and the test error along the line between
them gives the error barrier (`keras_lottery.experiments.instability`); `--masks=imp,random`
adds the random-pruning control (as many weights per layer, at random positions). Results:
<output_dir>/instability.json (rerunning the same command resumes it),
instability_report.md (barrier tables) and the PNG plots.
"""

from absl import app
from absl import flags
from absl import logging

from apps import app_errors
from keras_lottery.experiments import instability
from keras_lottery.report import instability as instability_report

FLAGS = flags.FLAGS

flags.DEFINE_multi_string(
    "runs", [], "IMP run folders, or folders holding them (searched recursively); several may follow one --runs."
)
flags.DEFINE_string("output_dir", None, "Folder for instability.json, the copies' weights, the report and the plots.")
flags.DEFINE_string("levels", "all", "'all' (every finished round) or comma-separated IMP rounds, e.g. 0,3,6.")
flags.DEFINE_string("rewind_iterations", instability.DEFAULT_REWIND_ITERATIONS,
                    "Comma-separated iterations k of the dense training the copies start from.")
flags.DEFINE_integer("interpolation_points", 30, "Evenly spaced alphas in [0, 1], both ends included (the paper: 30).")
flags.DEFINE_integer("test_examples", None, "Evaluate on the first this many test examples (default: all).")
flags.DEFINE_string("masks", "imp",
                    "'imp': each level's IMP masks; 'random': the random-pruning control, as many weights per layer "
                    "at random positions; 'imp,random': a cell of each.")
flags.DEFINE_string("data_dir", None, "Where the runs' datasets are, if not where the runs read them.")
flags.mark_flag_as_required("output_dir")


def _log_entry(kind, entry):
    where = f"k={entry['k']}" if kind == "cells" else "ticket to dense"
    logging.info("%s level %d (%.3g%% weights%s), %s: error barrier %.4f (%s), loss barrier %.4f", entry["run"],
                 entry["level"], 100 * entry["weights_remaining"],
                 ", random masks" if entry.get("masks") == "random" else "", where, entry["error_barrier"],
                 "stable" if entry["stable"] else "unstable", entry["loss_barrier"])


def main(argv):
    # `--runs A B`: absl takes A as the flag's value and leaves B as a positional argument.
    folders = [*FLAGS.runs, *argv[1:]]
    config = instability.InstabilityConfig(
        runs=folders, output_dir=FLAGS.output_dir, levels=FLAGS.levels, rewind_iterations=FLAGS.rewind_iterations,
        interpolation_points=FLAGS.interpolation_points, test_examples=FLAGS.test_examples, data_dir=FLAGS.data_dir,
        masks=FLAGS.masks, verbose=0)  # the app logs each cell itself
    results = instability.run(config, on_cell_end=_log_entry)
    written = instability_report.write_report(results, FLAGS.output_dir)
    logging.info("instability of %s: %d cells in %s/%s, report %s, plots %s", ", ".join(folders),
                 len(results["cells"]), FLAGS.output_dir, instability.INSTABILITY_FILE, written["markdown"],
                 ", ".join(written["plots"]))


if __name__ == "__main__":
    app.run(app_errors.one_line_errors(main))
