"""Neuron fusion: rewrite a pruned model into a smaller dense one, verified.

    fused = keras_lottery.fuse_neurons(pruned_model)                       # exact pass only
    fused = keras_lottery.fuse_neurons(model, merge=MergeBudget(0.5, "data_aware"),
                                       calibration_data=x_train[:2000])    # narrower, on data
    print(keras_lottery.fusion_report(pruned_model, fused, x_test[:500]).to_markdown())

A mask alone makes a model neither smaller nor faster; removing whole units does.
The exact pass (always on) folds BatchNormalization into the Dense/Conv2D before it,
then removes units with all-zero outgoing weights, removes units with all-zero
incoming weights after folding their constant output into the next layer's bias, and
merges positive-scale duplicates; it is checked to leave outputs unchanged. The merge
pass (opt-in, `merge=MergeBudget(...)`) removes more units and compensates the next
layer, data-free (Neuron Merging) or on calibration data (least-squares refit).
"""

import dataclasses

import numpy as np

from keras_lottery import compat
from keras_lottery.fusion import exact
from keras_lottery.fusion import merge as merge_lib
from keras_lottery.fusion import rewrite
from keras_lottery.fusion.graph import FusionError, Graph
from keras_lottery.fusion.merge import METHODS, MergeBudget
from keras_lottery.fusion.structured import removable_unit_layers, remove_units
from keras_lottery.fusion.report import NOTES_ATTRIBUTE, FusionReport, fusion_report, max_output_difference, model_outputs

keras = compat.keras
EXACT_TOLERANCE = 1e-4  # relative to the largest output: float32 rounding, far below any real change

__all__ = ["FineTune", "FusionError", "FusionReport", "METHODS", "MergeBudget", "fuse_neurons", "fusion_report", "removable_unit_layers",
           "remove_units"]


@dataclasses.dataclass
class FineTune:
    """An optional short fine-tune of the fused model (after a merge pass).

    Attributes:
      x, y: training inputs and integer labels.
      epochs: passes over (x, y).
      batch_size: examples per step.
      learning_rate: Adam's learning rate.
      from_logits: True if the model outputs logits (keras_lottery's registry models do).
    """

    x: object
    y: object
    epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 1e-4
    from_logits: bool = True

    def run(self, model):
        model.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=self.from_logits),
                      metrics=["accuracy"])
        model.fit(self.x, self.y, epochs=self.epochs, batch_size=self.batch_size, verbose=0)


def _random_inputs(model, count=16):
    """Seeded random inputs of the model's input shape(s), for the exact pass's check."""
    rng = np.random.default_rng(0)
    shapes = [tuple(tensor.shape[1:]) for tensor in model.inputs]
    inputs = [rng.normal(size=(count, *shape)).astype(np.float32) for shape in shapes]
    return inputs if len(inputs) > 1 else inputs[0]


def _check_exact(source, fused, data):
    reference = max(float(np.max(np.abs(output))) for output in model_outputs(source, data))
    difference = max_output_difference(source, fused, data)
    if difference > EXACT_TOLERANCE * max(reference, 1.0):
        raise FusionError(
            f"The exact pass changed the model's outputs by {difference:.3g} (allowed {EXACT_TOLERANCE:g} x "
            f"{max(reference, 1.0):.3g}). This is a bug in keras_lottery's fusion; please report it with the model."
        )
    return difference


def _pad_widths(graph, width_multiple):
    for name, node in list(graph.nodes.items()):
        width = node.weights[0].shape[-1] if node.kind in rewrite.PRODUCERS else 0
        if width % width_multiple and rewrite.reach(graph, name).fixed is None:
            rewrite.pad_units(graph, name, width_multiple * -(-width // width_multiple))
            graph.notes.append(f"{name!r} padded from {width} to a multiple of {width_multiple} units with zero units")


def fuse_neurons(model, merge=None, calibration_data=None, fine_tune=None, sample_data=None, width_multiple=None):
    """Returns a new, narrower tf_keras model computing the same function as `model`.

    `model` is left untouched. Units (Dense) and filters (Conv2D) are removed or
    merged, and the layers they feed compensated; layer names are kept, so a fused
    layer is found under its old name. Supported between Dense/Conv2D layers:
    BatchNormalization, Activation, ReLU, LeakyReLU, Dropout, SpatialDropout2D,
    Max/Average pooling, global pooling, Flatten, Reshape keeping the last axis and
    Concatenate (channels last). Units feeding Add/Multiply/... layers, the model's
    outputs, or a layer after the last Dense/Conv2D fusion does not know are left alone.

    Args:
      model: a tf_keras Sequential or functional model, pruned (wrapped) or stripped;
        a Keras 3 one is converted first (see `keras3_conversion.to_tf_keras`, which warns).
      merge: a `MergeBudget` for the opt-in merge pass, or None for the exact pass only.
      calibration_data: inputs for the 'data_aware' merge and for tolerance budgets.
      fine_tune: a `FineTune` to train the fused model briefly, or None.
      sample_data: inputs on which the exact pass is checked; default: the
        calibration data, else 16 seeded random inputs.
      width_multiple: if set (e.g. 16), every layer fusion may change ends with a
        width that is a multiple of it: merges keep that many units, other layers get
        zero units added (exact). TFLite's default CPU kernels (XNNPACK) run a fully
        connected layer about 2x slower per unit at some other widths
        (bench/RESULTS.md, "Neuron fusion exported to TFLite").

    Returns:
      The fused tf_keras model (uncompiled unless fine-tuned).

    Raises:
      TypeError: a Keras 3 model that cannot be converted, a subclassed model, or a
        merge/fine_tune of the wrong type.
      ValueError: a merge budget that cannot be used (e.g. data_aware without data).
      FusionError: a layer fusion cannot rewrite between Dense/Conv2D layers, a
        nested or shared layer, or (a bug) an exact pass that changed the outputs.
    """
    if merge is not None and not isinstance(merge, MergeBudget):
        raise TypeError(f"merge must be a keras_lottery.fusion.MergeBudget or None; got {type(merge).__name__}.")
    if fine_tune is not None and not isinstance(fine_tune, FineTune):
        raise TypeError(f"fine_tune must be a keras_lottery.fusion.FineTune or None; got {type(fine_tune).__name__}.")
    if merge is not None:
        merge.check(calibration_data)
    if width_multiple is not None and not (isinstance(width_multiple, int) and width_multiple >= 1):
        raise ValueError(f"width_multiple must be a positive integer such as 16, or None; got {width_multiple!r}.")
    graph = Graph(model)
    for name, node in graph.nodes.items():  # every unsupported layer is named before any work
        if node.kind in rewrite.PRODUCERS:
            fixed = rewrite.reach(graph, name).fixed
            if fixed:
                graph.notes.append(f"{name!r} keeps its units: {fixed}")
    if merge is not None:
        merge_lib.check_layers(graph, merge)
    if sample_data is None:
        sample_data = calibration_data if calibration_data is not None else _random_inputs(graph.source)
    rewrite.fold_batch_norms(graph)
    exact.exact_pass(graph)
    if merge is not None:
        _check_exact(graph.source, graph.to_model(), sample_data)
        merge_lib.merge_pass(graph, merge, calibration_data, width_multiple)
        exact.exact_pass(graph)
    if width_multiple:
        _pad_widths(graph, width_multiple)
    fused = graph.to_model()
    if merge is None:  # every step was exact, padding included: the whole rewrite is checked
        _check_exact(graph.source, fused, sample_data)
    setattr(fused, NOTES_ATTRIBUTE, list(graph.notes))
    if fine_tune is not None:
        fine_tune.run(fused)
    return fused
