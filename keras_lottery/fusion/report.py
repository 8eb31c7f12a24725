"""What fusion did: units, parameters and multiply-adds per layer, and the output difference."""

import dataclasses

import numpy as np

from keras_lottery import compat
from keras_lottery.compat import keras3_conversion
from keras_lottery.sparsity import wrappers

keras = compat.keras
NOTES_ATTRIBUTE = "_keras_lottery_fusion_notes"
_PRODUCERS = ("Dense", "Conv2D")  # the layers whose units fusion removes


def multiply_adds(layer):
    """Dense multiply-adds of one example through a Dense or Conv2D layer (0 for other layers).

    A pruning wrapper counts as the layer it wraps (pruned weights count too: dense cost).
    """
    inner = getattr(layer, "layer", layer)  # the wrapper knows the shapes: the inner layer was not called alone
    kind = type(inner).__name__
    if kind == "Dense":
        return int(np.prod(layer.input_shape[1:], dtype=np.int64)) * inner.units
    if kind == "Conv2D":
        height, width = inner.kernel_size
        input_channels = layer.input_shape[-1] // inner.groups
        return int(np.prod(layer.output_shape[1:-1], dtype=np.int64)) * height * width * input_channels * inner.filters
    return 0


def model_multiply_adds(model):
    """Dense multiply-adds of one example's forward pass through a model's Dense/Conv2D layers."""
    return sum(multiply_adds(layer) for layer in model.layers)


def _units(layer):
    return getattr(layer, "units", None) or getattr(layer, "filters", None)


def widths(model):
    """Units (Dense) and filters (Conv2D) per layer, {name: count}, in layer order."""
    return {layer.name: _units(layer) for layer in model.layers if type(layer).__name__ in _PRODUCERS}


def model_outputs(model, data):
    outputs = model.predict(data, batch_size=256, verbose=0)
    return [np.asarray(output) for output in (outputs if isinstance(outputs, list) else [outputs])]


def max_output_difference(first, second, data):
    """The largest absolute difference between two models' outputs on `data`."""
    return max(float(np.max(np.abs(a - b))) for a, b in zip(model_outputs(first, data), model_outputs(second, data)))


@dataclasses.dataclass
class FusionReport:
    """Per-layer units, parameters and multiply-adds before and after fusion.

    Attributes:
      layers: one dict per Dense/Conv2D/BatchNormalization layer of the input model.
      params_before, params_after: all parameters of each model.
      multiply_adds_before, multiply_adds_after: Dense/Conv2D multiply-adds per example.
      max_output_difference: the largest output difference on the sample data (None without).
      notes: what fusion folded, merged or left alone, and why.
    """

    layers: list
    params_before: int
    params_after: int
    multiply_adds_before: int
    multiply_adds_after: int
    max_output_difference: float | None
    notes: list

    @property
    def multiply_adds_ratio(self):
        return self.multiply_adds_after / max(self.multiply_adds_before, 1)

    @property
    def units_removed(self):
        """Units and filters fewer in the fused model, summed over the Dense/Conv2D layers that got narrower.

        Counted on the fused widths, after any `width_multiple` padding. 0 means fusion
        removed nothing: every such layer has its width or more.
        """
        return sum(max(0, row["units_before"] - (row["units_after"] or 0))
                   for row in self.layers if row["kind"] in _PRODUCERS)

    def as_dict(self):
        return {**dataclasses.asdict(self), "multiply_adds_ratio": self.multiply_adds_ratio,
                "units_removed": self.units_removed}

    def to_markdown(self):
        """The report as a Markdown table plus totals and notes."""
        lines = ["| layer | units | params | multiply-adds |", "|---|---|---|---|"]
        for row in self.layers:
            lines.append(f"| {row['name']} ({row['kind']}) | {row['units_before']} → {row['units_after']} | "
                         f"{row['params_before']:,} → {row['params_after']:,} | "
                         f"{row['multiply_adds_before']:,} → {row['multiply_adds_after']:,} |")
        lines.append(f"| **total** | | {self.params_before:,} → {self.params_after:,} | "
                     f"{self.multiply_adds_before:,} → {self.multiply_adds_after:,} "
                     f"({self.multiply_adds_ratio:.3f}x) |")
        if self.max_output_difference is not None:
            lines.append(f"\nMax output difference on the sample data: {self.max_output_difference:.3g}")
        if not self.units_removed:
            lines.append("\nFusion removed no unit: no Dense/Conv2D layer is narrower than before.")
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)


def fusion_report(original, fused, sample_data=None):
    """Compares a model with its fused version, layer by layer (matched by name).

    Args:
      original: the model before fusion (wrapped or plain; a Keras 3 model is
        converted with `keras3_conversion.to_tf_keras`).
      fused: the model `fuse_neurons` returned.
      sample_data: inputs on which to measure the largest output difference, or None.

    Returns:
      A `FusionReport`.

    Raises:
      TypeError: a model that is not a tf_keras Sequential/functional model (nor a
        Keras 3 one that can be converted).
    """
    original = keras3_conversion.to_tf_keras(original, "The original model")
    fused = keras3_conversion.to_tf_keras(fused, "The fused model")
    compat.check_model(original, "The original model")
    compat.check_model(fused, "The fused model")
    if wrappers.prunable_wrappers(original):
        original = wrappers.strip_pruning(original)
    fused_layers = {layer.name: layer for layer in fused.layers}
    rows = []
    for layer in original.layers:
        kind = type(layer).__name__
        if kind not in (*_PRODUCERS, "BatchNormalization"):
            continue
        after = fused_layers.get(layer.name)
        rows.append({
            "name": layer.name, "kind": kind,
            "units_before": _units(layer), "units_after": _units(after) if after is not None else None,
            "params_before": layer.count_params(), "params_after": after.count_params() if after is not None else 0,
            "multiply_adds_before": multiply_adds(layer),
            "multiply_adds_after": multiply_adds(after) if after is not None else 0,
        })
    difference = max_output_difference(original, fused, sample_data) if sample_data is not None else None
    return FusionReport(rows, original.count_params(), fused.count_params(),
                        model_multiply_adds(original), model_multiply_adds(fused), difference,
                        list(getattr(fused, NOTES_ATTRIBUTE, [])))
