"""The merge pass (opt-in): narrow each layer further than the exact pass can.

Three methods, all choosing which units go and then compensating the consumers:

* 'l1': remove the units with the smallest L1 norm of incoming weights; nothing is
  compensated (the plain pruning baseline of Neuron Merging's table).
* 'data_free' (Kim et al., NeurIPS 2020, "Neuron Merging"): the same units go, and each
  is merged into the kept unit with the most similar [incoming weights; bias]
  (cosine >= `similarity_threshold`), its outgoing weights added there scaled by
  ||v_removed|| / ||v_kept||. Exact for positive-scale duplicates; needs layers on the
  way that commute with a positive scale (ReLU, linear, pooling, Flatten).
* 'data_aware': the units whose activation on the calibration data times outgoing
  weight norm is smallest go, and each consumer is refit by ridge least squares so
  that, on the calibration data, it reproduces the input model's pre-activations
  from the kept units' activations (this also corrects the error of earlier layers).

A budget is a fraction of each layer's units (of the input model) to remove, and/or a
tolerance: the largest relative error ||y_fused - y|| / ||y|| of each consumer's
pre-activation on the calibration data; with a tolerance, the most units that stay
within it are removed (at most the fraction, if one is given).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from keras_lottery import compat
from keras_lottery.fusion import exact
from keras_lottery.fusion import rewrite
from keras_lottery.fusion.graph import FusionError

keras = compat.keras
METHODS = ("l1", "data_free", "data_aware")
MAX_ROWS = 20_000  # calibration rows (examples x positions) a least-squares fit uses
# Above this many consumer features the greedy elimination (a features^2 downdate per unit)
# takes minutes; units are then ranked once by activation x outgoing weight norm instead.
MAX_GREEDY_FEATURES = 3_000


@dataclasses.dataclass
class MergeBudget:
    """How far the merge pass narrows each layer.

    Attributes:
      fraction: fraction of each layer's units (counted in the input model) removed in
        total, exact-pass removals included; a float for every layer or a dict
        {layer name: fraction}. None: only the tolerance decides.
      method: 'l1', 'data_free' or 'data_aware' (see the module docstring).
      tolerance: largest relative error of each consumer's pre-activation on the
        calibration data; needs calibration data.
      similarity_threshold: 'data_free' merges a removed unit only into a kept unit
        with at least this cosine similarity.
      ridge: 'data_aware' ridge strength, relative to the mean feature energy.
    """

    fraction: float | dict | None = None
    method: str = "data_free"
    tolerance: float | None = None
    similarity_threshold: float = 0.0
    ridge: float = 1e-3

    def check(self, calibration_data):
        """Raises ValueError for a budget that cannot be used, before any work."""
        if self.method not in METHODS:
            raise ValueError(f"merge method must be one of {METHODS}; got {self.method!r}.")
        fractions = self.fraction.values() if isinstance(self.fraction, dict) else [self.fraction]
        for fraction in fractions:
            if fraction is not None and not (isinstance(fraction, (int, float)) and 0 <= fraction < 1):
                raise ValueError(f"merge fraction must be in [0, 1) (the share of units removed); got {fraction!r}.")
        if self.fraction is None and self.tolerance is None:
            raise ValueError("A MergeBudget needs a fraction of units to remove, a tolerance, or both.")
        if self.tolerance is not None and not (isinstance(self.tolerance, (int, float)) and self.tolerance > 0):
            raise ValueError(f"merge tolerance must be a positive number; got {self.tolerance!r}.")
        if (self.method == "data_aware" or self.tolerance is not None) and calibration_data is None:
            raise ValueError(
                f"merge method {self.method!r} with tolerance {self.tolerance!r} needs calibration_data: pass "
                "fuse_neurons(..., calibration_data=x) with a few hundred to a few thousand training inputs."
            )
        if not -1 <= self.similarity_threshold <= 1:
            raise ValueError(f"similarity_threshold is a cosine in [-1, 1]; got {self.similarity_threshold!r}.")

    def fraction_for(self, name):
        if isinstance(self.fraction, dict):
            return self.fraction.get(name)
        return self.fraction


def _kept_channels(consumer, channels, kept, total):
    """Indices of a consumer's input channels that stay, per position."""
    return np.concatenate([np.arange(consumer.offset), consumer.offset + np.asarray(kept, np.int64),
                           np.arange(consumer.offset + channels, total)])


class _Features:
    """A consumer's inputs on the calibration data (current model) and its target pre-activations.

    The target is what the consumer computes in `reference`, the model after the exact
    pass (equal to the input model's outputs), so the refit also corrects the error that
    merges of earlier layers left in this consumer's inputs.
    """

    def __init__(self, current, reference, consumer, flattened_positions, calibration_data):
        self.node = consumer
        reference_layer = reference.get_layer(consumer.name)
        self.x = self._rows(_layer_inputs(current, consumer.name, calibration_data))
        kernel, *bias = reference_layer.get_weights()
        x_reference = self._rows(_layer_inputs(reference, consumer.name, calibration_data))
        self.y = x_reference @ kernel.reshape(-1, kernel.shape[-1]).astype(np.float64) + (bias[0] if bias else 0.0)
        rows = np.random.default_rng(0).permutation(len(self.x))[:MAX_ROWS]
        self.x, self.y = self.x[rows], self.y[rows]
        # Rows are (position, channel) pairs: Conv2D patches, or a Flatten's positions for Dense.
        layer = current.get_layer(consumer.name)
        self.positions = int(np.prod(layer.kernel_size)) if consumer.kind == "Conv2D" else flattened_positions
        self.total = self.x.shape[1] // self.positions

    def _rows(self, inputs):
        """(rows, features): flattened Dense inputs, or Conv2D patches in the kernel's order."""
        if self.node.kind == "Conv2D":
            config = self.node.config
            size, strides, rates = config["kernel_size"], config["strides"], config["dilation_rate"]
            patches = tf.image.extract_patches(inputs, [1, *size, 1], [1, *strides, 1], [1, *rates, 1],
                                               config["padding"].upper())
            return patches.numpy().reshape(-1, patches.shape[-1]).astype(np.float64)
        return np.asarray(inputs, np.float64).reshape(-1, inputs.shape[-1])

    def select(self, consumer, channels, kept):
        channel_index = _kept_channels(consumer, channels, kept, self.total)
        rows = (np.arange(self.positions)[:, None] * self.total + channel_index[None]).reshape(-1)
        return self.x[:, rows]

    def error(self, x, kernel, bias):
        predicted = x @ kernel.reshape(x.shape[1], -1) + bias
        return float(np.linalg.norm(predicted - self.y) / max(np.linalg.norm(self.y), 1e-12))

    def refit(self, x, ridge):
        """Ridge least squares for the consumer's kernel rows and bias; returns (kernel, bias, error)."""
        design = np.concatenate([x, np.ones((len(x), 1))], 1)
        gram = design.T @ design
        penalty = ridge * np.trace(gram[:-1, :-1]) / max(x.shape[1], 1)
        gram[np.arange(x.shape[1]), np.arange(x.shape[1])] += penalty
        solution = np.linalg.solve(gram, design.T @ self.y)
        kernel, bias = solution[:-1], solution[-1]
        return kernel, bias, self.error(x, kernel, bias)


def _layer_inputs(model, name, data):
    probe = keras.Model(model.inputs, model.get_layer(name).input)
    return probe.predict(data, batch_size=256, verbose=0)


def _l1_order(node):
    return np.argsort(np.abs(node.weights[0]).reshape(-1, node.weights[0].shape[-1]).sum(0), kind="stable")


def _similarity_transfer(node, kept, threshold):
    """Neuron Merging's compensation: each removed unit onto its most similar kept unit."""
    vectors = exact.incoming(node)
    channels = vectors.shape[1]
    transfer = np.eye(channels)[kept]
    removed = np.setdiff1d(np.arange(channels), kept)
    norms = np.linalg.norm(vectors, axis=0)
    safe = np.where(norms > 0, norms, 1.0)
    cosine = (vectors[:, removed] / safe[removed]).T @ (vectors[:, kept] / safe[kept])
    for row, unit in enumerate(removed):
        best = int(np.argmax(cosine[row]))
        if norms[unit] > 0 and norms[kept[best]] > 0 and cosine[row, best] >= max(threshold, 0.0):
            transfer[best, unit] = norms[unit] / norms[kept[best]]
    return transfer


class _Layer:
    """The merge candidates of one producer: for a number of units to remove, the edit and its error."""

    def __init__(self, graph, name, budget, features):
        self.graph, self.name, self.budget, self.features = graph, name, budget, features
        self.node = graph.nodes[name]
        self.found = rewrite.reach(graph, name)
        self.channels = self.node.weights[0].shape[-1]
        if budget.method == "data_aware":
            widest = max((self.features[consumer.name].x.shape[1] for consumer in self.found.consumers), default=0)
            self.order = self._data_order() if widest <= MAX_GREEDY_FEATURES else self._activation_order()
        else:
            self.order = _l1_order(self.node)

    def _activation_order(self):
        """Units by RMS activation on the calibration data x norm of outgoing weights, smallest first."""
        scores = np.zeros(self.channels)
        for consumer in self.found.consumers:
            features = self.features[consumer.name]
            activations = features.x.reshape(len(features.x), features.positions, features.total)
            activations = activations[:, :, consumer.offset:consumer.offset + self.channels]
            _, segment = rewrite.consumer_rows(self.graph, consumer, self.channels)
            scores += np.sqrt(np.mean(activations**2, axis=(0, 1))) * np.linalg.norm(segment, axis=(0, 2))
        return np.argsort(scores, kind="stable")

    def _data_order(self):
        """Units in the order a greedy backward elimination removes them (first removed first).

        Each step removes the unit whose removal least increases the consumers'
        least-squares residual: for a unit with features J (its rows at every position),
        the increase is tr(B_J' (G^-1)_JJ^-1 B_J), with G the ridge Gram matrix and B the
        fitted weights; G^-1 and B are then downdated without refitting.
        """
        states = []
        for consumer in self.found.consumers:
            features = self.features[consumer.name]
            design = np.concatenate([features.x, np.ones((len(features.x), 1))], 1)
            gram = design.T @ design
            width = features.x.shape[1]
            gram[np.arange(width), np.arange(width)] += self.budget.ridge * np.trace(gram[:-1, :-1]) / max(width, 1)
            inverse = np.linalg.inv(gram)
            groups = (np.arange(features.positions)[None, :] * features.total + consumer.offset
                      + np.arange(self.channels)[:, None])  # (channels, positions): each unit's feature columns
            states.append([inverse, inverse @ (design.T @ features.y), groups])
        alive, removed = list(range(self.channels)), []
        position = {}
        for state in states:
            position[id(state)] = np.arange(state[0].shape[0])  # current column of each original feature
        while len(alive) > 1:
            increase = np.zeros(len(alive))
            for state in states:
                inverse, weights, groups = state
                columns = position[id(state)][groups[alive]]  # (alive, positions)
                blocks = inverse[columns[:, :, None], columns[:, None, :]]
                solved = np.linalg.solve(blocks, weights[columns])
                increase += np.einsum("kpo,kpo->k", weights[columns], solved)
            unit = alive.pop(int(np.argmin(increase)))
            removed.append(unit)
            for state in states:
                inverse, weights, groups = state
                drop = position[id(state)][groups[unit]]
                keep = np.setdiff1d(np.arange(inverse.shape[0]), drop)
                correction = inverse[np.ix_(keep, drop)] @ np.linalg.inv(inverse[np.ix_(drop, drop)])
                state[0] = inverse[np.ix_(keep, keep)] - correction @ inverse[np.ix_(drop, keep)]
                state[1] = weights[keep] - correction @ weights[drop]
                mapping = np.full(len(position[id(state)]), -1)
                mapping[keep] = np.arange(len(keep))
                position[id(state)] = mapping[position[id(state)]]
        return np.array(removed + alive)

    def candidate(self, count):
        """(kept, transfer, consumer weights or None, worst consumer error or None) for removing `count` units."""
        kept = np.sort(self.order[count:])
        transfer = (_similarity_transfer(self.node, kept, self.budget.similarity_threshold)
                    if self.budget.method == "data_free" else np.eye(self.channels)[kept])
        if not self.features:
            return kept, transfer, None, None
        weights, errors = {}, []
        for consumer in self.found.consumers:
            features = self.features[consumer.name]
            x = features.select(consumer, self.channels, kept)
            if self.budget.method == "data_aware":
                kernel, bias, error = features.refit(x, self.budget.ridge)
                shape = list(self.graph.nodes[consumer.name].weights[0].shape)
                shape[-2] = -1
                weights[consumer.name] = (kernel.reshape(shape), bias)
            else:
                folded = np.zeros(self.channels)
                kernel, bias = rewrite.transformed_consumer(self.graph, consumer, self.channels, transfer, folded)
                error = features.error(x, kernel, bias)
            errors.append(error)
        return kept, transfer, weights or None, max(errors, default=0.0)

    def largest_count(self, limit, tolerance):
        """The most units (<= limit) whose removal stays within `tolerance` (bisection)."""
        low, high = 0, limit
        while low < high:
            middle = (low + high + 1) // 2
            if self.candidate(middle)[3] <= tolerance:
                low = middle
            else:
                high = middle - 1
        return low


def check_layers(graph, budget):
    """Raises FusionError before work if the method cannot serve a layer it would narrow."""
    if budget.method != "data_free":
        return
    for name, node in graph.nodes.items():
        if node.kind not in rewrite.PRODUCERS or (not budget.fraction_for(name) and budget.tolerance is None):
            continue
        found = rewrite.reach(graph, name)
        if found.fixed is None and not (found.homogeneous and rewrite.activation_name(node.config)
                                        in rewrite.HOMOGENEOUS_ACTIVATIONS):
            raise FusionError(
                f"The data_free merge needs ReLU or linear activations (and no BatchNormalization) between "
                f"{name!r} and the layers it feeds, so that merged units scale exactly. Use method='data_aware' "
                "(with calibration data) or 'l1' for this model."
            )


def merge_pass(graph, budget, calibration_data, width_multiple=None):
    """Narrows each producer within `budget`; returns units removed per layer.

    With `width_multiple`, each layer keeps a multiple of it (removing fewer units).
    """
    removed = {}
    reference = graph.to_model() if calibration_data is not None else None
    for name in [name for name, node in graph.nodes.items() if node.kind in rewrite.PRODUCERS]:
        fraction = budget.fraction_for(name)
        found = rewrite.reach(graph, name)
        if found.fixed is not None or (fraction is None and budget.tolerance is None) or not found.consumers:
            continue
        channels = graph.nodes[name].weights[0].shape[-1]
        already = graph.original_units[name] - channels
        limit = channels - 1
        if fraction is not None:
            limit = min(limit, max(0, int(round(fraction * graph.original_units[name])) - already))
        if width_multiple:
            limit = max(0, channels - width_multiple * -(-(channels - limit) // width_multiple))
        if limit == 0:
            continue
        features = {}
        if calibration_data is not None:
            current = graph.to_model()
            features = {consumer.name: _Features(current, reference, graph.nodes[consumer.name], consumer.positions,
                                                 calibration_data)
                        for consumer in found.consumers}
        layer = _Layer(graph, name, budget, features)
        count = layer.largest_count(limit, budget.tolerance) if budget.tolerance is not None else limit
        if count == 0:
            continue
        kept, transfer, weights, error = layer.candidate(count)
        rewrite.transform_units(graph, name, kept, transfer, consumer_weights=weights, found=layer.found)
        removed[name] = count
        measured = f", relative error of the next layer's pre-activation {error:.4f}" if error is not None else ""
        graph.notes.append(f"{name!r}: the {budget.method} merge removed {count} units{measured}")
    return removed
