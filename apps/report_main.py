r"""A report over many runs: test accuracy vs weights remaining per method, seeds aggregated.

    python -m apps.report_main --runs bench/out/imp_reproduction bench/out/early_bird \
        --output_dir report

`--runs` takes run folders (the --output_dir of apps.imp_main or apps.early_bird_main)
or folders that hold them at any depth; several may follow one --runs, or repeat it.
Runs are grouped by dataset and model (never mixed), then by method; the seeds of a
method are aggregated. Results: <output_dir>/report.md (a table per dataset/model:
weights remaining, compression, theoretical speedup, accuracy mean ± std), report.json
(the same numbers), and per dataset/model the PNG plots the Markdown links to.
"""

from absl import app
from absl import flags
from absl import logging

from apps import app_errors
from keras_lottery import report

FLAGS = flags.FLAGS

flags.DEFINE_multi_string(
    "runs", [], "Run folders, or folders holding run folders (searched recursively); several may follow one --runs."
)
flags.DEFINE_string("output_dir", None, "Folder for report.md, report.json and the plots.")
flags.mark_flag_as_required("output_dir")


def main(argv):
    # `--runs A B`: absl takes A as the flag's value and leaves B as a positional argument.
    folders = [*FLAGS.runs, *argv[1:]]
    try:
        written = report.write_report(folders, FLAGS.output_dir)
    except report.ReportError as error:
        raise app.UsageError(str(error)) from error
    logging.info("report of %s: %s (table), %s (numbers), %d plots in %s", ", ".join(folders), written["markdown"],
                 written["json"], len(written["plots"]), FLAGS.output_dir)


if __name__ == "__main__":
    app.run(app_errors.one_line_errors(main, "error: interrupted; rerun the same command"))
