"""Flows over runs, each with one resumable folder per run.

* `imp_config`: `ImpConfig`, the settings of IMP and one-pass runs.
* `rounds`: one training round in a run folder (shared by IMP and one-pass).
* `imp`: iterative magnitude pruning with rewinding (`imp.run`); `one_pass`: prune while training.
* `early_bird_flow`: search, draw and retrain an early-bird ticket.
* `run_folder`: the folder's files (summary, masks, weights, snapshot); `round_backup`: mid-round resume.
* `run_models`: a finished run's ticket back as a tf_keras model.
* `tuning`: keras-tuner search over pruning settings.
* `shift`: finished runs scored on corrupted test sets (distribution shift), resumable.
* `instability` (settings in `instability_config`): linear mode connectivity of IMP runs' states at
  iterations k, resumable; `interpolation`: a model evaluated on the line between two weight settings.
* `fusion_sweep`: finished tickets fused by each method and width, before and after a fine-tune, resumable.
* `analysis_results`: the results file those analyses share (read, settings checked on resume).
"""
