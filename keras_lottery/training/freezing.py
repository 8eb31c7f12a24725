"""Frozen parameters, as OpenLTH's `batchnorm_frozen` and `output_frozen` model options.

    freezing.freeze(model, batch_norm=True)   # before compiling: BN's gamma and beta stay at their init

OpenLTH freezes a parameter by taking it out of training (`requires_grad = False`): a frozen
BatchNorm keeps normalizing by the batch's statistics in training and keeps updating its
moving averages; only its scale and offset stay where they were initialized. Keras's
`layer.trainable = False` would instead switch BatchNorm to inference mode (the moving
averages in training, and no updates), so BatchNorm's two variables are moved from the
layer's trainable weights to its non-trainable ones instead. A frozen output layer (a Dense,
which has no mode) is made non-trainable as a whole: kernel and bias, and, under a pruning
wrapper, its masks keep applying.
"""

from keras_lottery import compat

keras = compat.keras


def _layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def freeze(model, batch_norm=False, output=False, output_layer="output"):
    """Takes BatchNorm's gamma and beta, and/or the output layer, out of training, in place.

    Call it before the model is compiled (or before its first `fit` after compiling).

    Args:
      model: a tf_keras model, wrapped for pruning or not.
      batch_norm: freeze every BatchNormalization's gamma and beta (its statistics still update).
      output: freeze the layer named `output_layer` (kernel and bias).
      output_layer: the output layer's name (the registry's models call it "output").

    Returns:
      The variables frozen, by name.

    Raises:
      ValueError: `output` with no layer called `output_layer`.
    """
    frozen = []
    if batch_norm:
        for layer in _layers(model):
            if isinstance(layer, keras.layers.BatchNormalization):
                for variable in (layer.gamma, layer.beta):
                    if variable is not None and any(variable is v for v in layer._trainable_weights):
                        # The layer's own lists (tf_keras keeps them per layer): it stays trainable, in training
                        # mode, while these two leave `model.trainable_variables`.
                        layer._trainable_weights.remove(variable)  # pylint: disable=protected-access
                        layer._non_trainable_weights.append(variable)  # pylint: disable=protected-access
                        frozen.append(variable.name)
    if output:
        matches = [layer for layer in _layers(model)
                   if layer.name == output_layer or getattr(getattr(layer, "layer", None), "name", None) == output_layer]
        if not matches:
            raise ValueError(f"freeze_output: {model.name} has no layer called {output_layer!r} to freeze; its layers "
                             f"are {[layer.name for layer in model.layers]}.")
        for layer in matches:
            frozen.extend(variable.name for variable in layer.trainable_weights)
            layer.trainable = False
    return frozen
