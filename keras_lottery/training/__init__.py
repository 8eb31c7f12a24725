"""Training settings and compilation shared by every experiment.

* `config`: `TrainingConfig` (data, model, optimizer and recipe, seed, output folder), `OPTIMIZERS`,
  `WEIGHT_DECAY_MODES`, `LR_SCHEDULES`, `LEGACY_RECIPE`, `check_batch_size`.
* `compile`: `compile_with_recipe` (freeze, `make_optimizer`, compile: what the flows call),
  `compile_for_training` (an optimizer name or instance), `steps_per_execution`.
* `optimizers`: `make_optimizer` (OpenLTH's SGD/Adam, momentum, coupled or decoupled weight decay,
  on a `RecipeSchedule`), `CoupledL2SGD`, `CoupledL2Adam`, `schedule_of`.
* `lr_schedules`: `RecipeSchedule` (warmup, step decay at milestones, cosine, a start-step offset),
  `schedule_for`, `parse_length`, `to_iterations` ("80ep", "500it").
* `freezing`: `freeze` BatchNorm's gamma and beta or the output layer (OpenLTH's frozen options).
* `precision`: `policy`, mixed bfloat16 while a model is built (`--mixed_precision`).
* `strategies`: distribution strategies by TF Model Garden's names (`--distribution_strategy`).
* `divergence`: `StopOnDivergence`, `TrainingDivergedError` (a NaN loss stops the run unsaved).
* `evaluation`: `Evaluator`, `HeldOutChecks`: loss and accuracy on fixed arrays in one traced graph.
* `progress`: `Progress`, a line per evaluation ("round 2 of 5: iteration 300 of 2000 ..."), logged.
* `summaries`: `TrainingSummaries`: the train/validation curves on TensorBoard at x = iteration.
"""

from keras_lottery.training import freezing  # noqa: F401
from keras_lottery.training import precision  # noqa: F401
from keras_lottery.training import strategies  # noqa: F401
from keras_lottery.training.compile import compile_for_training, compile_with_recipe, steps_per_execution  # noqa: F401
from keras_lottery.training.config import (  # noqa: F401
    LEGACY_RECIPE, LR_SCHEDULES, OPTIMIZERS, RECIPE_FIELDS, WEIGHT_DECAY_MODES, TrainingConfig, check_batch_size,
)
from keras_lottery.training.divergence import StopOnDivergence, TrainingDivergedError  # noqa: F401
from keras_lottery.training.evaluation import Evaluator, HeldOutChecks  # noqa: F401
from keras_lottery.training.lr_schedules import RecipeSchedule, parse_length, schedule_for, to_iterations  # noqa: F401
from keras_lottery.training.optimizers import (  # noqa: F401
    CoupledL2Adam, CoupledL2SGD, make_optimizer, schedule_of, set_schedule_start,
)
from keras_lottery.training.progress import Progress, check_verbose  # noqa: F401
from keras_lottery.training.summaries import TrainingSummaries  # noqa: F401
