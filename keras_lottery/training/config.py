"""Settings shared by every experiment (IMP, early bird, ...): `TrainingConfig`.

`TrainingConfig` holds what any training run needs — data, model, optimizer,
seed, output folder — with the defaults of its model's registry entry
(`models/registry.py`); experiment configs extend it with their own fields.
"""

import dataclasses
import math

from keras_lottery import models
from keras_lottery.foundations.validation import check_int
from keras_lottery.training.progress import check_verbose

OPTIMIZERS = ("adam", "sgd", "momentum")


@dataclasses.dataclass
class TrainingConfig:
    """Data, model and optimizer settings. `None` means the model's LTH default."""

    output_dir: str = "runs/run"
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    model: str = "lenet_300_100"
    batch_size: int | None = None
    optimizer: str | None = None
    learning_rate: float | None = None
    seed: int = 0
    train_examples: int | None = None  # train on a subset, for quick runs
    validation_examples: int = 5000  # held out from train, as in the LTH paper
    # Progress lines while training, logged (never printed; see `progress.Progress`): 0 none, 1 a line
    # per evaluation ("pruning round 2 of 5: iteration 300 of 2000 (evaluation 3 of 20), validation accuracy
    # 0.9712"), 2 the same with losses and seconds. Keras's own display is always off. It changes no
    # result, so a run folder resumes under another value.
    verbose: int = 1

    def resolved(self):
        """A copy with the model's defaults filled in and the shared fields validated.

        Subclasses extend this with their own fields (call super().resolved() first).

        Raises:
          ValueError: naming the bad field and what it accepts.
        """
        spec = models.get(self.model)
        config = dataclasses.replace(self)
        # Only None means "the model's default": a 0 given by the user is refused below, never replaced.
        if config.batch_size is None:
            config.batch_size = spec.batch_size
        if config.optimizer is None:
            config.optimizer = spec.optimizer
        if config.learning_rate is None:
            config.learning_rate = spec.learning_rate
        check_int(config.batch_size, "batch_size", 1)
        check_int(config.seed, "seed", 0)
        check_int(config.validation_examples, "validation_examples", 1)
        check_verbose(config.verbose)
        if config.train_examples is not None:
            check_int(config.train_examples, "train_examples", 1)
        if config.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {config.optimizer!r}.")
        if isinstance(config.learning_rate, bool) or not isinstance(config.learning_rate, (int, float)) or not (
                0 < config.learning_rate < math.inf):
            raise ValueError(f"learning_rate must be a number > 0; got {config.learning_rate!r}.")
        return config


def check_batch_size(batch_size, train_examples):
    """Refuses a batch larger than the training set, which would repeat examples within each step.

    Raises:
      ValueError: naming both numbers and the fix.
    """
    if batch_size > train_examples:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {train_examples} training examples: every step would "
            f"repeat examples. Use --batch_size <= {train_examples}, or train on more examples."
        )
