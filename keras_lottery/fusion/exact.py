"""The exact pass: removals and merges that leave the model's outputs unchanged.

Per producer (Dense/Conv2D), repeated until nothing changes, because a removal can
make units upstream dead too:

* a unit whose outgoing weights are all zero in every consumer is removed;
* a unit whose incoming weights are all zero outputs the constant act(bias): it is
  removed and that constant times its outgoing weights goes into the consumers'
  biases. Into a 'same'-padded Conv2D that fold is not exact (zero padding makes the
  border sums differ), so such a unit stays unless its constant is 0;
* a unit whose [incoming weights; bias] is a positive multiple s of another's is
  merged into it (its outgoing weights, times s, added onto the other's). Exact only
  where every layer on the way commutes with a positive scale (ReLU, linear, pooling,
  Flatten), so it is skipped elsewhere.
"""

import numpy as np

from keras_lottery.fusion import rewrite

DUPLICATE_TOLERANCE = 1e-6


def incoming(node):
    """A producer's incoming weights and bias as one (fan-in + 1, units) matrix."""
    kernel = node.weights[0]
    return np.concatenate([kernel.reshape(-1, kernel.shape[-1]), rewrite.bias_of(node)[None]], 0).astype(np.float64)


def _dead_outgoing(graph, found, channels):
    dead = np.ones(channels, bool)
    for consumer in found.consumers:
        _, segment = rewrite.consumer_rows(graph, consumer, channels)
        dead &= ~np.any(segment != 0, axis=(0, 2))
    return dead


def positive_duplicates(vectors, candidates):
    """Groups units whose vectors are positive multiples of an earlier unit's.

    Args:
      vectors: (features, units) matrix, one column per unit.
      candidates: indices of the units that may be merged.

    Returns:
      unit -> (representative, scale) with vectors[:, unit] == scale * vectors[:, representative].
    """
    norms = np.linalg.norm(vectors, axis=0)
    merged = {}
    candidates = [unit for unit in candidates if norms[unit] > 0]
    if len(candidates) < 2:
        return merged
    unit_vectors = vectors[:, candidates] / norms[candidates]
    cosine = unit_vectors.T @ unit_vectors
    for i, unit in enumerate(candidates):
        if unit in merged:
            continue
        for j in np.nonzero(cosine[i, i + 1:] >= 1 - DUPLICATE_TOLERANCE)[0] + i + 1:
            other = candidates[j]
            scale = norms[other] / norms[unit]
            if other not in merged and np.allclose(vectors[:, other], scale * vectors[:, unit], rtol=1e-5,
                                                   atol=DUPLICATE_TOLERANCE * norms[other]):
                merged[other] = (unit, scale)
    return merged


def _exact_step(graph, name):
    """One exact removal/merge on producer `name`; returns the number of units it took."""
    node = graph.nodes[name]
    found = rewrite.reach(graph, name)
    if found.fixed is not None:
        return 0
    channels = node.weights[0].shape[-1]
    dead_out = _dead_outgoing(graph, found, channels)
    vectors = incoming(node)
    dead_in = ~np.any(vectors[:-1] != 0, axis=0) & ~dead_out
    constant_units = np.nonzero(dead_in)[0]
    constants = np.zeros(channels)
    if len(constant_units):
        constants[constant_units] = rewrite.unit_constants(graph, name, constant_units)
        for consumer in found.consumers:
            consumer_node = graph.nodes[consumer.name]
            if consumer_node.kind == "Conv2D" and consumer_node.config.get("padding") == "same":
                at_consumer = rewrite.constants_at(graph, consumer, constants)
                blocked = constant_units[at_consumer[constant_units] != 0]
                dead_in[blocked] = False
                constants[blocked] = 0
    removed = dead_out | dead_in
    transfer = np.eye(channels)
    if found.homogeneous and rewrite.activation_name(node.config) in rewrite.HOMOGENEOUS_ACTIVATIONS:
        for unit, (representative, scale) in positive_duplicates(vectors, np.nonzero(~removed)[0]).items():
            removed[unit] = True
            transfer[representative, unit] = scale
    if removed.all():  # a layer keeps one unit: Keras has no zero-width Dense/Conv2D
        removed[0], constants[0] = False, 0.0
    if not removed.any():
        return 0
    kept = np.nonzero(~removed)[0]
    rewrite.transform_units(graph, name, kept, transfer[kept], constants, found=found)
    return int(removed.sum())


def exact_pass(graph, max_sweeps=20):
    """Applies exact removals and merges until none is left; returns units removed per layer."""
    removed = {}
    for _ in range(max_sweeps):
        changed = 0
        for name in [name for name, node in graph.nodes.items() if node.kind in rewrite.PRODUCERS]:
            count = _exact_step(graph, name)
            if count:
                removed[name] = removed.get(name, 0) + count
                changed += count
        if not changed:
            break
    return removed
