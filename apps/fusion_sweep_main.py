r"""The neuron-fusion sweep over finished runs: each ticket fused by each method and width, and its report.

    python -m apps.fusion_sweep_main --runs bench/out/imp_reproduction --output_dir fusion \
        --methods exact,l1,data_free,data_aware --fractions 0,0.25,0.5,0.75 --fine_tune_iterations 300

`--runs` takes run folders (the --output_dir of any flow) or folders that hold them at any
depth; several may follow one --runs, or repeat it. Every chosen round (IMP: --rounds, the
other kinds their one model) is rebuilt, fused by each method at each fraction of units
removed, scored on the run's test set, fine-tuned on its training split and scored again
(`keras_lottery.experiments.fusion_sweep`). Results: <output_dir>/fusion_sweep.json (per
run and round; rerunning the same command resumes it), fusion_sweep_report.md (a table per
run method) and two PNGs per run method (accuracy vs units removed, vs multiply-adds).
"""

from absl import app
from absl import flags
from absl import logging

from apps import app_errors
from keras_lottery.experiments import fusion_sweep
from keras_lottery.report import fusion_sweep as fusion_sweep_report

FLAGS = flags.FLAGS

flags.DEFINE_multi_string(
    "runs", [], "Run folders, or folders holding run folders (searched recursively); several may follow one --runs."
)
flags.DEFINE_string("output_dir", None, "Folder for fusion_sweep.json, fusion_sweep_report.md and the plots.")
flags.DEFINE_list("methods", list(fusion_sweep.FUSION_METHODS),
                  f"Comma-separated fusion methods, of {', '.join(fusion_sweep.FUSION_METHODS)} ('exact': the exact "
                  "pass alone).")
flags.DEFINE_list("fractions", [f"{value:g}" for value in fusion_sweep.DEFAULT_FRACTIONS],
                  "Comma-separated fractions of units removed from each layer fusion may narrow, each in [0, 1) "
                  "(0: the exact pass).")
flags.DEFINE_integer("fine_tune_iterations", 300, "Training iterations after fusion (0: no fine-tune).", lower_bound=0)
flags.DEFINE_float("fine_tune_learning_rate", None,
                   "The fine-tune's constant learning rate; default: the rate the run's schedule ended at.")
flags.DEFINE_integer("calibration_examples", 2000, "Training examples data_aware refits on.", lower_bound=1)
flags.DEFINE_integer("test_examples", None, "The first test examples scored; default: the whole test set.",
                     lower_bound=1)
flags.DEFINE_string("rounds", "all", "'all', or comma-separated IMP rounds to fuse (e.g. 0,5,10).")
flags.DEFINE_integer("seed", 0, "Seed of the fine-tune's batch order.", lower_bound=0)
flags.DEFINE_string("data_dir", None, "Where the runs' datasets are, if not where the runs read them.")
flags.mark_flag_as_required("output_dir")
flags.register_validator("methods", lambda names: bool(names) and all(n in fusion_sweep.FUSION_METHODS for n in names),
                         f"--methods takes a comma-separated list of {', '.join(fusion_sweep.FUSION_METHODS)}.")


def _is_fraction(text):
    try:
        return 0 <= float(text) < 1
    except ValueError:
        return False


flags.register_validator("fractions", lambda values: bool(values) and all(map(_is_fraction, values)),
                         "--fractions takes a comma-separated list of numbers in [0, 1), e.g. 0,0.25,0.5.")


def main(argv):
    # `--runs A B`: absl takes A as the flag's value and leaves B as a positional argument.
    folders = [*FLAGS.runs, *argv[1:]]
    config = fusion_sweep.FusionSweepConfig(
        runs=folders, output_dir=FLAGS.output_dir, methods=FLAGS.methods,
        fractions=[float(value) for value in FLAGS.fractions], fine_tune_iterations=FLAGS.fine_tune_iterations,
        fine_tune_learning_rate=FLAGS.fine_tune_learning_rate, calibration_examples=FLAGS.calibration_examples,
        test_examples=FLAGS.test_examples, rounds=FLAGS.rounds, data_dir=FLAGS.data_dir, seed=FLAGS.seed)
    results = fusion_sweep.run(config)
    written = fusion_sweep_report.write_report(results, FLAGS.output_dir)
    logging.info("fusion sweep of %s: %d rounds in %s/%s, report %s, %d plots", ", ".join(folders),
                 len(results["entries"]), FLAGS.output_dir, fusion_sweep.FUSION_SWEEP_FILE, written["markdown"],
                 len(written["plots"]))


if __name__ == "__main__":
    app.run(app_errors.one_line_errors(main))
