r"""Finished runs under distribution shift: test accuracy on corrupted test sets, and its report.

    python -m apps.shift_main --runs bench/out/imp_reproduction bench/out/imp_reinit \
        --output_dir shift --corruptions gaussian_noise,rotation --severities 0,1,3,5
    python -m apps.shift_main --runs runs/resnet20 --output_dir shift_resnet --levels 0,4,8 --test_examples 2000

`--runs` takes run folders (the --output_dir of any flow) or folders that hold them at any
depth; several may follow one --runs, or repeat it. Every finished round is rebuilt and
scored on its run's test set under each corruption and severity
(`keras_lottery.experiments.shift`). Results: <output_dir>/shift.json (per run and round;
rerunning the same command resumes it), shift_report.md (a table per corruption) and a PNG
per dataset/model (relative accuracy vs severity).
"""

from absl import app
from absl import flags
from absl import logging

from apps import app_errors
from keras_lottery.data import corruptions
from keras_lottery.experiments import shift
from keras_lottery.report import shift as shift_report

FLAGS = flags.FLAGS

flags.DEFINE_multi_string(
    "runs", [], "Run folders, or folders holding run folders (searched recursively); several may follow one --runs."
)
flags.DEFINE_string("output_dir", None, "Folder for shift.json, shift_report.md and the plots.")
flags.DEFINE_list("corruptions", list(corruptions.CORRUPTIONS),
                  f"Comma-separated corruptions, of {', '.join(corruptions.CORRUPTIONS)}.")
flags.DEFINE_list("severities", [str(severity) for severity in shift.DEFAULT_SEVERITIES],
                  "Comma-separated severities 0..5 (0 = the clean test set, needed for relative accuracy).")
flags.DEFINE_integer("seed", 0, "Seed of the corruptions' random draws (noise, angles).", lower_bound=0)
flags.DEFINE_integer("test_examples", None, "Score on the first this many test examples (default: all).",
                     lower_bound=1)
flags.DEFINE_string("levels", "all", "'all', or comma-separated IMP rounds to evaluate, e.g. 0,4,8 (a run may lack "
                                     "some; runs of one round are evaluated whatever it).")
flags.DEFINE_string("data_dir", None, "Where the runs' datasets are, if not where the runs read them.")
flags.mark_flag_as_required("output_dir")
flags.register_validator("corruptions", lambda names: bool(names) and all(n in corruptions.CORRUPTIONS for n in names),
                         f"--corruptions takes a comma-separated list of {', '.join(corruptions.CORRUPTIONS)}.")
flags.register_validator("severities", lambda values: bool(values) and all(v in {str(s) for s in corruptions.SEVERITIES}
                                                                          for v in values),
                         "--severities takes a comma-separated list of integers 0..5.")


def main(argv):
    # `--runs A B`: absl takes A as the flag's value and leaves B as a positional argument.
    folders = [*FLAGS.runs, *argv[1:]]
    results = shift.evaluate(folders, FLAGS.output_dir, FLAGS.corruptions, [int(v) for v in FLAGS.severities],
                             FLAGS.seed, FLAGS.data_dir, FLAGS.test_examples, FLAGS.levels)
    written = shift_report.write_report(results, FLAGS.output_dir)
    logging.info("shift of %s: %d rounds in %s/%s, report %s, %d plots", ", ".join(folders), len(results["entries"]),
                 FLAGS.output_dir, shift.SHIFT_FILE, written["markdown"], len(written["plots"]))


if __name__ == "__main__":
    app.run(app_errors.one_line_errors(main))
