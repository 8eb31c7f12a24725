"""The multi-run report: methods side by side, seeds aggregated (`report_main`).

* `aggregate`: find run folders, group them by (dataset, model) and method, aggregate
  seeds, count theoretical speedups, `write_report`.
* `render`: the PNG plots and the Markdown table.
* `compare`: the comparison grid's report (`compare_main`).
* `shift`: the distribution-shift report of `experiments.shift.evaluate` (`shift_main`;
  `from keras_lottery.report import shift`).
* `instability`: the instability report of `experiments.instability.run` (`instability_main`).
* `fusion_sweep`: the neuron-fusion sweep's tables and plots of `experiments.fusion_sweep.run`
  (`fusion_sweep_main`; `from keras_lottery.report import fusion_sweep`).
"""

from keras_lottery.report.aggregate import (  # noqa: F401
    DATASET_INPUTS,
    KINDS,
    PLOT_TITLES,
    Point,
    ReportError,
    Run,
    aggregate,
    find_runs,
    group_runs,
    layer_flops,
    theoretical_speedup,
    write_report,
)
