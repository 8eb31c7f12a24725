"""A model as an editable graph of layer configs and numpy weights.

Fusion edits weights and a few config fields (a Dense layer's `units`, a Conv2D's
`filters`, a Reshape's last dimension), and removes BatchNormalization layers it
folds away. Everything else about the model is kept: the new model is rebuilt with
Keras's own `from_config` from the edited config, so layers fusion never touches
(custom ones included) come back as they were.
"""

import copy
import dataclasses

import numpy as np

from keras_lottery import compat
from keras_lottery.compat import keras3_conversion
from keras_lottery.sparsity import wrappers

keras = compat.keras


class FusionError(ValueError):
    """A model fusion cannot rewrite, or a rewrite that failed its numerical check."""


@dataclasses.dataclass
class Node:
    """One layer: its class, config, weights, the layers it reads from, its original shapes."""

    name: str
    layer_class: type
    config: dict
    weights: list
    inbound: list
    input_shape: tuple
    output_shape: tuple

    @property
    def kind(self):
        return self.layer_class.__name__


def _shape(shape):
    return tuple(shape) if shape is not None else None


class Graph:
    """The layers of a Sequential or functional tf_keras model, in topological order.

    Attributes:
      nodes: name -> Node, in the model's layer order (topological).
      outputs: names of the layers whose outputs are model outputs.
      notes: what fusion did or left alone and why, for the report.
    """

    def __init__(self, model):
        """Reads `model` (a tf_keras Sequential or functional model, wrapped or not).

        A Keras 3 Sequential or functional model is converted to tf_keras first (see
        `keras3_conversion.to_tf_keras`, which warns).

        Raises:
          TypeError: not a tf_keras Sequential/functional model, or a Keras 3 model
            that cannot be converted.
          FusionError: a nested model or a layer used more than once.
        """
        model = keras3_conversion.to_tf_keras(model, "The model to fuse")
        compat.check_model(model, "The model to fuse")
        if not model.built:
            raise FusionError("The model to fuse is not built; call it on data or give it an input shape first.")
        if wrappers.prunable_wrappers(model):
            model = wrappers.strip_pruning(model)
        self.source = model  # the plain model read (the input itself when it was not wrapped)
        self.sequential = isinstance(model, keras.Sequential)
        self.config = copy.deepcopy(model.get_config())
        self.custom_objects = {type(layer).__name__: type(layer) for layer in model.layers}
        self.notes = []
        self.nodes = {}
        previous = None
        for layer_config in self.config["layers"]:
            name = layer_config["config"]["name"]
            layer_class = self.custom_objects.get(layer_config["class_name"], keras.layers.InputLayer)
            if issubclass(layer_class, keras.Model):
                raise FusionError(
                    f"Layer {name!r} is a nested model ({layer_config['class_name']}); fusion needs a flat model. "
                    "Rebuild it with the inner model's layers called directly."
                )
            if self.sequential:
                inbound = [previous] if previous else []
            else:
                if len(layer_config["inbound_nodes"]) > 1:
                    raise FusionError(
                        f"Layer {name!r} is called {len(layer_config['inbound_nodes'])} times (a shared layer); "
                        "fusion needs each layer called once. Give each call its own layer."
                    )
                inbound = [entry[0] for node in layer_config["inbound_nodes"] for entry in node]
            self.nodes[name] = self._node(model, name, layer_class, layer_config, inbound)
            previous = name
        # Which of the input model's units each producer's current units are (fusion keeps order).
        self.unit_index = {name: np.arange(node.weights[0].shape[-1]) for name, node in self.nodes.items()
                           if node.kind in ("Dense", "Conv2D")}
        self.original_units = {name: len(index) for name, index in self.unit_index.items()}
        self.outputs = [previous] if self.sequential else [entry[0] for entry in self.config["output_layers"]]

    def _node(self, model, name, layer_class, layer_config, inbound):
        if layer_class is keras.layers.InputLayer:
            shape = layer_config["config"]["batch_input_shape"]
            return Node(name, layer_class, layer_config["config"], [], [], _shape(shape), _shape(shape))
        layer = model.get_layer(name)
        return Node(name, layer_class, layer_config["config"], [w.copy() for w in layer.get_weights()], inbound,
                    _shape(layer.input_shape), _shape(layer.output_shape))

    def consumers(self, name):
        """Names of the layers that read `name`'s output."""
        return [other.name for other in self.nodes.values() if name in other.inbound]

    def channels(self, name):
        """The current size of the last axis of `name`'s output."""
        node = self.nodes[name]
        if node.kind in ("Dense", "Conv2D"):
            return node.weights[0].shape[-1]
        if node.kind == "Concatenate":
            return sum(self.channels(inbound) for inbound in node.inbound)
        if not node.inbound or node.kind in ("Flatten", "Reshape") or len(node.inbound) > 1:
            return node.output_shape[-1]
        return self.channels(node.inbound[0])

    def remove(self, name):
        """Removes a one-input layer, its consumers reading its input instead."""
        node = self.nodes.pop(name)
        (source,) = node.inbound
        for other in self.nodes.values():
            other.inbound = [source if inbound == name else inbound for inbound in other.inbound]
        self.outputs = [source if output == name else output for output in self.outputs]
        self.config["layers"] = [entry for entry in self.config["layers"] if entry["config"]["name"] != name]
        if self.sequential:
            return
        for entry in self.config["layers"]:
            for call in entry["inbound_nodes"]:
                for tensor in call:
                    if tensor[0] == name:
                        tensor[0] = source
        for tensor in self.config["output_layers"]:
            if tensor[0] == name:
                tensor[0] = source

    def to_model(self):
        """A new tf_keras model: the edited config rebuilt by Keras, the edited weights set."""
        for entry in self.config["layers"]:
            node = self.nodes[entry["config"]["name"]]
            entry["config"] = node.config
            entry.pop("build_config", None)  # the input shape it records may have narrowed; calling builds
        config = copy.deepcopy(self.config)
        builder = keras.Sequential if self.sequential else keras.Model
        model = builder.from_config(config, custom_objects=self.custom_objects)
        for node in self.nodes.values():
            if node.weights:
                model.get_layer(node.name).set_weights(node.weights)
        return model


def positions(node):
    """How many spatial positions a Flatten folds into its output (channels last)."""
    return int(np.prod(node.input_shape[1:-1], dtype=np.int64))
