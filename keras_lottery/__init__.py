"""keras_lottery: lottery tickets for TensorFlow/Keras (Keras 2, via tf_keras), on tfmot.

Public API:

* `prune_low_magnitude`, `strip_pruning`, `prune`: wrap a model, compute masks, strip.
* `PruneLowMagnitude` (the wrapper), `get_masks`, `set_masks`, `apply_masks`: masks in and out.
* `masks`: the one mask computation (`masks.compute`: scores -> masks, exact counts, one tie rule).
* `custom_objects`, `prune_scope`: load saved pruned models (H5, .keras, SavedModel).
* `prune_low_sign_flip`, `PruneLowSignFlip`, `flip_counts`, `flip_statistics`: sign-flip / hybrid
  pruning, flip counts kept in the graph.
* `OneShot`, `Iterative`, `Gradual`, `OnFlip`, `lth_prune_rates`: pruning schedules and LTH's per-layer
  rates (`OnFlip`: prune weights as their signs flip, `sparsity/on_flip.py`).
* `UpdateMasks`, `RewindCallback`, `reset_optimizer`: Keras callbacks for schedules and rewinding.
* `controls`: random_reinit, random_prune, signed_constant.
* `imp`: the iterative magnitude pruning loop (`imp.ImpConfig`, `imp.run`).
* `methods`: the pruning literature's methods on the same mask computation: `prune_at_init`
  (SNIP, GraSP, SynFlow), `methods.mask_updaters` (SET, SNFS, RigL), `methods.distributions`
  (uniform, Erdos-Renyi, ERK), `methods.learned_sparsity` (L0, variational dropout),
  `methods.supermasks` (supermask, edge-popup).
* `sparse_training` (`SparseConfig`, `sparse_training.run`): one resumable run of any of them;
  `compare` (`CompareConfig`, `compare.run`): the grid of methods x sparsities x seeds.
* `flops`: inference and training multiply-adds, RigL's counting.
* `EarlyBirdCallback`, `EarlyBirdSchedule`: early-bird tickets (`experiments.early_bird_flow.run`
  for the flow).
* `SparsitySummaries`, `write_hparams`: TensorBoard views of sparsity, flips, early-bird distance.
* `fuse_neurons`, `fusion_report`, `MergeBudget`, `FineTune`: rewrite a pruned model into a smaller
  dense one.
* `remove_units`: a channel ticket as a narrower network to retrain (structured pruning).
* `export_tflite`: strip, fuse, convert to TFLite, verify in LiteRT, measure size and latency.
* `keras`: the Keras 2 package (`tf_keras`) every model must be built with.
* `to_tf_keras`: convert a Keras 3 Sequential/functional model to tf_keras, checked on random
  inputs (the functions that return a new model call it themselves, with a warning); it raises
  `Keras3ConversionError` or warns with `Keras3ConversionWarning`.

The subpackages are the architecture (docs/architecture.md): `foundations` and `compat` at
the bottom, `sparsity` (the pruning core on tfmot), `data`, `models`, `training`, `fusion`,
`experiments` (IMP, one-pass, early-bird flows, run folders), `export`, `report`.
"""

import importlib as _importlib

# compat first: it sets TF_USE_LEGACY_KERAS before anything imports TensorFlow.
from keras_lottery.compat import keras  # noqa: I001
from keras_lottery.compat import Keras3ConversionError, Keras3ConversionWarning, to_tf_keras
from keras_lottery.experiments import imp
from keras_lottery.export import export_tflite
from keras_lottery.fusion import FineTune, MergeBudget, fuse_neurons, fusion_report, remove_units
from keras_lottery import methods  # noqa: F401  (registers its wrappers with Keras, so load_model finds them)
from keras_lottery.experiments import compare, sparse_training
from keras_lottery.experiments.compare import CompareConfig
from keras_lottery.experiments.sparse_config import SparseConfig
from keras_lottery.sparsity import flops
from keras_lottery.sparsity import controls
from keras_lottery.sparsity import masks
from keras_lottery.sparsity.callbacks import RewindCallback, UpdateMasks, reset_optimizer
from keras_lottery.sparsity.early_bird import EarlyBirdCallback, EarlyBirdSchedule
from keras_lottery.sparsity.pruning import prune
from keras_lottery.sparsity.schedules import Gradual, Iterative, OneShot, OnFlip, lth_prune_rates
from keras_lottery.sparsity.sign_flip import PruneLowSignFlip, flip_counts, flip_statistics, prune_low_sign_flip
from keras_lottery.sparsity.summaries import SparsitySummaries, write_hparams
from keras_lottery.sparsity.wrappers import (
    PruneLowMagnitude,
    apply_masks,
    custom_objects,
    get_masks,
    prune_low_magnitude,
    prune_scope,
    set_masks,
    strip_pruning,
)

__version__ = "0.1.0"

__all__ = [
    "CompareConfig",
    "EarlyBirdCallback",
    "EarlyBirdSchedule",
    "FineTune",
    "Gradual",
    "Iterative",
    "Keras3ConversionError",
    "Keras3ConversionWarning",
    "MergeBudget",
    "OnFlip",
    "OneShot",
    "PruneLowMagnitude",
    "PruneLowSignFlip",
    "RewindCallback",
    "SparsitySummaries",
    "UpdateMasks",
    "apply_masks",
    "compare",
    "controls",
    "custom_objects",
    "export_tflite",
    "flip_counts",
    "flip_statistics",
    "flops",
    "fuse_neurons",
    "fusion_report",
    "get_masks",
    "imp",
    "keras",
    "lth_prune_rates",
    "masks",
    "methods",
    "prune",
    "prune_low_magnitude",
    "prune_low_sign_flip",
    "prune_scope",
    "remove_units",
    "reset_optimizer",
    "set_masks",
    "SparseConfig",
    "sparse_training",
    "strip_pruning",
    "to_tf_keras",
    "write_hparams",
]

# Modules that lived at the top of the package before it was grouped into subpackages:
# `from keras_lottery import wrappers` and `kl.wrappers` still give the same
# module from its new home, so scripts written against the flat layout keep working.
_MOVED_MODULES = {
    "callbacks": "keras_lottery.sparsity.callbacks",
    "criteria": "keras_lottery.sparsity.criteria",
    "early_bird": "keras_lottery.sparsity.early_bird",
    "early_bird_flow": "keras_lottery.experiments.early_bird_flow",
    "keras3_conversion": "keras_lottery.compat.keras3_conversion",
    "one_pass": "keras_lottery.experiments.one_pass",
    "pruning": "keras_lottery.sparsity.pruning",
    "round_backup": "keras_lottery.experiments.round_backup",
    "run_models": "keras_lottery.experiments.run_models",
    "schedules": "keras_lottery.sparsity.schedules",
    "sign_flip": "keras_lottery.sparsity.sign_flip",
    "summaries": "keras_lottery.sparsity.summaries",
    "tflite": "keras_lottery.export.tflite",
    "tuning": "keras_lottery.experiments.tuning",
    "validation": "keras_lottery.foundations.validation",
    "wrappers": "keras_lottery.sparsity.wrappers",
}


def __getattr__(name):
    if name in _MOVED_MODULES:
        return _importlib.import_module(_MOVED_MODULES[name])
    raise AttributeError(f"module 'keras_lottery' has no attribute {name!r}")
