"""keras_lottery: lottery tickets for TensorFlow/Keras (Keras 2, via tf_keras), on tfmot.

Public API:

* `prune_low_magnitude`, `strip_pruning`, `prune`: wrap a model, compute masks, strip.
* `custom_objects`, `prune_scope`: load saved pruned models (H5, .keras, SavedModel).
* `prune_low_sign_flip`, `flip_statistics`: sign-flip / hybrid pruning, flip counts kept in the graph.
* `OneShot`, `Iterative`, `lth_prune_rates`: pruning schedules and LTH's per-layer rates.
* `UpdateMasks`, `RewindCallback`: Keras callbacks for schedules and rewinding.
* `controls`: random_reinit, random_prune, signed_constant.
* `imp`: the iterative magnitude pruning loop (`imp.ImpConfig`, `imp.run`).
* `EarlyBirdCallback`, `EarlyBirdSchedule`: early-bird tickets (`early_bird_flow.run` for the flow).
* `SparsitySummaries`, `write_hparams`: TensorBoard views of sparsity, flips, early-bird distance.
* `fuse_neurons`, `fusion_report`, `MergeBudget`: rewrite a pruned model into a smaller dense one.
* `remove_units`: a channel ticket as a narrower network to retrain (structured pruning).
* `export_tflite`: strip, fuse, convert to TFLite, verify in LiteRT, measure size and latency.
* `keras`: the Keras 2 package (`tf_keras`) every model must be built with.
* `to_tf_keras`: convert a Keras 3 Sequential/functional model to tf_keras, checked on
  random inputs (the functions that return a new model call it themselves, with a warning).
"""

from keras_lottery.compat import keras  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)
from keras_lottery import controls  # noqa: F401
from keras_lottery import imp  # noqa: F401
from keras_lottery import masks  # noqa: F401
from keras_lottery.callbacks import RewindCallback, UpdateMasks, reset_optimizer  # noqa: F401
from keras_lottery.early_bird import EarlyBirdCallback, EarlyBirdSchedule  # noqa: F401
from keras_lottery.sign_flip import PruneLowSignFlip, flip_counts, flip_statistics, prune_low_sign_flip  # noqa: F401
from keras_lottery.export import export_tflite  # noqa: F401
from keras_lottery.fusion import FineTune, MergeBudget, fuse_neurons, fusion_report, remove_units  # noqa: F401
from keras_lottery.keras3_conversion import Keras3ConversionError, Keras3ConversionWarning, to_tf_keras  # noqa: F401
from keras_lottery.pruning import prune  # noqa: F401
from keras_lottery.summaries import SparsitySummaries, write_hparams  # noqa: F401
from keras_lottery.schedules import Gradual, Iterative, OneShot, lth_prune_rates  # noqa: F401
from keras_lottery.wrappers import (  # noqa: F401
    PruneLowMagnitude,
    apply_masks,
    custom_objects,
    prune_scope,
    get_masks,
    prune_low_magnitude,
    set_masks,
    strip_pruning,
)

__version__ = "0.1.0"
