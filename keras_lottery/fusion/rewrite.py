"""Where a layer's units go, and the one edit that removes or merges them.

A producer is a Dense or Conv2D layer whose output units (filters) fusion may remove.
`reach(graph, name)` follows its output through the layers that keep the channel axis
(BatchNormalization, activations, Dropout, pooling, Flatten, Reshape, Concatenate) to
the Dense/Conv2D layers that read it, and says whether its units may change at all.
`transform_units` is the only edit: the producer keeps units `kept`; every consumer's
input rows become `transfer @ rows` (a selection, or a merge that adds a removed
unit's rows onto a kept one with a scale), and a removed unit that outputs a constant
has that constant times its rows folded into the consumer's bias.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from keras_lottery import compat
from keras_lottery.fusion.graph import FusionError, positions

keras = compat.keras

PRODUCERS = ("Dense", "Conv2D")
ELEMENTWISE = ("BatchNormalization", "Activation", "ReLU", "LeakyReLU", "Dropout", "SpatialDropout2D")
POOLING = ("MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D")
CHANNEL_KEEPING = (*ELEMENTWISE, *POOLING, "Flatten", "Reshape", "Concatenate")
GROUPS = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
SUPPORTED = (*PRODUCERS, *CHANNEL_KEEPING)
HOMOGENEOUS_ACTIVATIONS = ("relu", "linear", None)
SUPPORTED_MESSAGE = (
    "Fusion supports, between Dense/Conv2D layers: " + ", ".join(CHANNEL_KEEPING)
    + " (channels last; Reshape only where the last axis is kept); units feeding "
    + "/".join(GROUPS) + " are left alone."
)


@dataclasses.dataclass
class Consumer:
    """A Dense/Conv2D layer that reads a producer's units, and the layers in between.

    Attributes:
      name: the consumer layer.
      path: (layer name, offset) for each layer between; offset is where the
        producer's channels start in that layer's input (Concatenate shifts them).
      offset: where the producer's channels start in the consumer's input channels.
      positions: spatial positions a Flatten on the way folded into the consumer's rows.
    """

    name: str
    path: list
    offset: int
    positions: int


@dataclasses.dataclass
class Reach:
    """Where a producer's units go: consumers, or why the units must stay."""

    consumers: list
    fixed: str | None = None
    homogeneous: bool = True  # every layer on the way commutes with a positive per-unit scale


def activation_name(config):
    activation = config.get("activation")
    return activation if isinstance(activation, str) or activation is None else "custom"


def _homogeneous(node):
    if node.kind == "BatchNormalization":
        return False
    if node.kind == "Activation":
        return activation_name(node.config) in HOMOGENEOUS_ACTIVATIONS
    if node.kind == "ReLU":
        return node.config.get("max_value") is None and not node.config.get("threshold")
    return True


def _channels_last(node):
    if node.config.get("data_format", "channels_last") not in (None, "channels_last"):
        return False
    if node.kind == "BatchNormalization":
        axis = node.config["axis"]
        axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
        return axis in (-1, len(node.input_shape) - 1)
    if node.kind == "Concatenate":
        return node.config["axis"] in (-1, len(node.output_shape) - 1)
    if node.kind == "Reshape":  # the original shapes: fusion narrows both alike
        return node.output_shape[-1] == node.input_shape[-1]
    if node.kind == "Conv2D":
        return node.config.get("groups", 1) == 1
    return True


def supported(node):
    return node.kind in SUPPORTED and _channels_last(node)


def _reaches_producer(graph, name, seen=None):
    seen = set() if seen is None else seen
    for consumer in graph.consumers(name):
        if consumer not in seen:
            seen.add(consumer)
            if graph.nodes[consumer].kind in PRODUCERS or _reaches_producer(graph, consumer, seen):
                return True
    return False


def reach(graph, name):
    """Follows producer `name`'s output to the Dense/Conv2D layers that read it.

    Raises:
      FusionError: a layer fusion cannot rewrite lies between `name` and a Dense/Conv2D.
    """
    result = Reach([])
    stack = [(name, [], 0, 1)]
    while stack:
        current, path, offset, flattened = stack.pop()
        if current in graph.outputs:
            result.fixed = result.fixed or f"its output is a model output (through {current!r})"
        for consumer_name in graph.consumers(current):
            node = graph.nodes[consumer_name]
            occurrences = [i for i, inbound in enumerate(node.inbound) if inbound == current]
            if node.kind in GROUPS:
                result.fixed = result.fixed or f"it feeds {node.kind} {consumer_name!r} (members keep their indices)"
            elif not supported(node):
                if _reaches_producer(graph, consumer_name):
                    raise FusionError(
                        f"Layer {consumer_name!r} ({node.kind}) lies between {name!r} and a later Dense/Conv2D "
                        f"layer, and fusion cannot rewrite it. {SUPPORTED_MESSAGE} Remove or replace the layer, "
                        "or fuse a model without it."
                    )
                result.fixed = result.fixed or f"it feeds {node.kind} {consumer_name!r}, which fusion does not rewrite"
            elif node.kind in PRODUCERS:
                result.consumers.append(Consumer(consumer_name, path, offset, flattened))
            elif node.kind == "Concatenate":
                if flattened > 1:
                    result.fixed = result.fixed or f"Concatenate {consumer_name!r} joins flattened maps"
                for index in occurrences:
                    shift = sum(graph.channels(inbound) for inbound in node.inbound[:index])
                    stack.append((consumer_name, [*path, (consumer_name, offset + shift)], offset + shift, flattened))
            else:
                result.homogeneous = result.homogeneous and _homogeneous(node)
                scale = positions(node) if node.kind == "Flatten" else 1
                stack.append((consumer_name, [*path, (consumer_name, offset)], offset, flattened * scale))
    return result


def _batch_norm(node, values, offset):
    """BatchNormalization at inference on per-channel `values` (the segment at `offset`)."""
    config = node.config
    weights = list(node.weights)
    gamma = weights.pop(0) if config.get("scale", True) else None
    beta = weights.pop(0) if config.get("center", True) else None
    mean, variance = weights
    segment = slice(offset, offset + len(values))
    result = (values - mean[segment]) / np.sqrt(variance[segment] + config["epsilon"])
    if gamma is not None:
        result = result * gamma[segment]
    return result + beta[segment] if beta is not None else result


def apply_layer(node, values, offset=0):
    """What an elementwise layer outputs for per-channel constant inputs `values`."""
    if node.kind == "BatchNormalization":
        return _batch_norm(node, values, offset)
    if node.kind in ("Activation", "ReLU", "LeakyReLU"):
        layer = node.layer_class.from_config(node.config)
        return layer(tf.constant(values[None], tf.float32)).numpy()[0]
    return values  # Dropout at inference, pooling, Flatten, Reshape, Concatenate keep a constant map


def unit_constants(graph, name, units):
    """What producer `name`'s units output when their incoming weights are all zero: act(bias)."""
    node = graph.nodes[name]
    bias = bias_of(node)[units]
    activation = keras.activations.get(node.config.get("activation"))
    return activation(tf.constant(bias, tf.float32)).numpy()


def constants_at(graph, consumer, values):
    """Propagates per-unit constants along a consumer's path."""
    for layer_name, offset in consumer.path:
        values = apply_layer(graph.nodes[layer_name], values, offset)
    return values


def consumer_rows(graph, consumer, channels):
    """The consumer's kernel as (positions, input channels, ...) and the producer's segment of it."""
    kernel = graph.nodes[consumer.name].weights[0]
    if kernel.ndim == 4:  # Conv2D: (height, width, in, out) -> (height * width, in, out)
        shaped = kernel.reshape(-1, kernel.shape[2], kernel.shape[3])
    else:
        shaped = kernel.reshape(consumer.positions, -1, kernel.shape[-1])
    return shaped, shaped[:, consumer.offset:consumer.offset + channels, :]


def bias_of(node):
    """A Dense/Conv2D layer's bias, zeros if it has none."""
    if node.config.get("use_bias", True):
        return node.weights[1]
    return np.zeros(node.weights[0].shape[-1], node.weights[0].dtype)


def _set_consumer(node, kernel, bias):
    has_bias = node.config.get("use_bias", True)
    if not has_bias and not np.any(bias):
        node.weights = [kernel]
        return
    node.config["use_bias"] = True  # a folded constant needs a bias to go into
    node.weights = [kernel, np.asarray(bias, kernel.dtype)]


def _follow_channels(graph, reshape):
    """A Reshape that keeps the last axis takes the (new) channel count of its input."""
    reshape.config["target_shape"] = [*reshape.config["target_shape"][:-1], graph.channels(reshape.inbound[0])]


def _slice_path(graph, path, kept, channels):
    for layer_name, offset in path.items():
        node = graph.nodes[layer_name]
        if node.kind == "BatchNormalization" and node.weights:
            rows = np.concatenate([np.arange(offset), offset + kept, np.arange(offset + channels, len(node.weights[0]))])
            node.weights = [weight[rows] for weight in node.weights]
        elif node.kind == "Reshape":
            _follow_channels(graph, node)


def transformed_consumer(graph, consumer, channels, transfer, folded):
    """A consumer's kernel and bias once its rows for the producer become `transfer @ rows`.

    Args:
      graph: the Graph.
      consumer: a `Consumer` of the producer.
      channels: the producer's current number of units.
      transfer: (kept units, channels) matrix.
      folded: (channels,) constants, as they arrive at the consumer, of removed units.
    """
    node = graph.nodes[consumer.name]
    shaped, segment = consumer_rows(graph, consumer, channels)
    new_segment = np.einsum("kc,pco->pko", transfer, segment)
    bias = bias_of(node) + np.einsum("c,pco->o", folded, segment)
    rebuilt = np.concatenate([shaped[:, :consumer.offset], new_segment, shaped[:, consumer.offset + channels:]], 1)
    old_kernel = node.weights[0]
    if old_kernel.ndim == 4:
        rebuilt = rebuilt.reshape(*old_kernel.shape[:2], -1, old_kernel.shape[3])
    else:
        rebuilt = rebuilt.reshape(-1, old_kernel.shape[-1])
    return rebuilt.astype(old_kernel.dtype), bias


def transform_units(graph, name, kept, transfer=None, constants=None, consumer_weights=None, found=None, fold=True):
    """Keeps units `kept` of producer `name` and rewrites everything downstream.

    Args:
      graph: the Graph being fused.
      name: the producer (Dense or Conv2D).
      kept: indices of the units that stay, in the order they will have.
      transfer: (len(kept), units) matrix; consumer rows become `transfer @ rows`.
        Default: the selection of `kept` (removed units are dropped).
      constants: (units,) values a removed unit outputs (act(bias) for a unit with
        all-zero incoming weights) that go into the consumers' biases; 0 elsewhere.
      consumer_weights: consumer name -> (kernel, bias) refit on data, used as they are.
      found: the producer's `reach`, if already computed.
      fold: False drops removed units altogether (structured pruning), instead of
        folding what they output at each consumer into its bias (a unit's 0 is not 0
        after a BatchNormalization on the way).
    """
    node = graph.nodes[name]
    channels = node.weights[0].shape[-1]
    kept = np.asarray(kept, np.int64)
    found = found or reach(graph, name)
    if transfer is None:
        transfer = np.eye(channels, dtype=np.float64)[kept]
    constants = np.zeros(channels) if constants is None else np.asarray(constants, np.float64)
    node.weights = [node.weights[0][..., kept], *(weight[kept] for weight in node.weights[1:])]
    node.config["units" if node.kind == "Dense" else "filters"] = len(kept)
    graph.unit_index[name] = graph.unit_index[name][kept]
    for consumer in found.consumers:
        consumer_node = graph.nodes[consumer.name]
        if consumer_weights and consumer.name in consumer_weights:
            kernel, bias = consumer_weights[consumer.name]
            _set_consumer(consumer_node, kernel.astype(np.float32), bias)
        else:
            folded = constants_at(graph, consumer, constants) if fold else np.zeros(channels)
            kernel, bias = transformed_consumer(graph, consumer, channels, transfer, folded)
            _set_consumer(consumer_node, kernel, bias)
    # Layers on the way (shared by consumers behind one BatchNormalization) are sliced once each.
    _slice_path(graph, dict(entry for consumer in found.consumers for entry in consumer.path), kept, channels)


def pad_units(graph, name, width):
    """Adds zero units to producer `name` until it has `width`; outputs stay exactly the same.

    A zero unit has zero incoming weights, zero bias and zero outgoing weights, so it
    adds nothing downstream. Worth it where a runtime is faster at some widths
    (XNNPACK's fully connected kernel at multiples of 16).
    """
    node = graph.nodes[name]
    channels = node.weights[0].shape[-1]
    extra = width - channels
    if extra <= 0:
        return
    found = reach(graph, name)
    node.weights = [np.concatenate([weight, np.zeros((*weight.shape[:-1], extra), weight.dtype)], -1)
                    for weight in node.weights]
    node.config["units" if node.kind == "Dense" else "filters"] = width
    graph.unit_index[name] = np.concatenate([graph.unit_index[name], np.full(extra, -1)])
    for consumer in found.consumers:
        consumer_node = graph.nodes[consumer.name]
        shaped, _ = consumer_rows(graph, consumer, channels)
        end = consumer.offset + channels
        zeros = np.zeros((shaped.shape[0], extra, shaped.shape[2]), shaped.dtype)
        rebuilt = np.concatenate([shaped[:, :end], zeros, shaped[:, end:]], 1)
        old_kernel = consumer_node.weights[0]
        shape = (*old_kernel.shape[:2], -1, old_kernel.shape[3]) if old_kernel.ndim == 4 else (-1, old_kernel.shape[-1])
        consumer_node.weights = [rebuilt.reshape(shape), *consumer_node.weights[1:]]
    for layer_name, offset in dict(entry for consumer in found.consumers for entry in consumer.path).items():
        path_node = graph.nodes[layer_name]
        if path_node.kind == "BatchNormalization" and path_node.weights:
            neutral = _neutral_batch_norm(path_node, extra)
            path_node.weights = [np.insert(weight, offset + channels, value, 0)
                                 for weight, value in zip(path_node.weights, neutral)]
        elif path_node.kind == "Reshape":
            _follow_channels(graph, path_node)


def _neutral_batch_norm(node, extra):
    """Per-weight fill values (gamma 1, beta 0, mean 0, variance 1) for `extra` new channels."""
    values = ([np.ones(extra)] if node.config.get("scale", True) else []) + (
        [np.zeros(extra)] if node.config.get("center", True) else [])
    return [*values, np.zeros(extra), np.ones(extra)]


def fold_batch_norms(graph):
    """Folds each BatchNormalization that directly follows a linear Dense/Conv2D into it.

    Returns:
      The names of the folded BatchNormalization layers.
    """
    folded = []
    for name, node in list(graph.nodes.items()):
        if node.kind != "BatchNormalization" or len(node.inbound) != 1 or not _channels_last(node):
            continue
        producer = graph.nodes[node.inbound[0]]
        if (producer.kind not in PRODUCERS or activation_name(producer.config) not in ("linear", None)
                or graph.consumers(producer.name) != [name] or producer.name in graph.outputs):
            continue
        channels = producer.weights[0].shape[-1]
        scale = _batch_norm(node, np.ones(channels), 0) - _batch_norm(node, np.zeros(channels), 0)
        shift = _batch_norm(node, np.zeros(channels), 0)
        kernel = producer.weights[0] * scale
        bias = bias_of(producer)
        producer.config["use_bias"] = True
        producer.weights = [kernel.astype(np.float32), (bias * scale + shift).astype(np.float32)]
        graph.remove(name)
        graph.notes.append(f"BatchNormalization {name!r} folded into {producer.name!r}")
        folded.append(name)
    return folded
