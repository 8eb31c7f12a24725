"""Prune on flip: a weight goes as soon as its sign flips, and training goes on.

    schedule = keras_lottery.sparsity.schedules.OnFlip(0.9, begin_step=1000, frequency=100, updates=40)
    model = keras_lottery.prune_low_sign_flip(dense, pruning_schedule=schedule, criterion="hybrid")
    model.fit(..., callbacks=[keras_lottery.UpdateMasks()])
    on_flip.history(model)  # what each check pruned, per layer

Our research idea's own schedule (the project's "sign-flip pruning" idea): a weight whose sign changes relative to its reference (the initialization, or
the rewind step's weights) is a candidate to prune, and it is pruned when that is seen,
not at a round's end; nothing is rewound. There is no paper or official code for it:
FlipOut (Apostol, Stol and Forre 2020) is the nearest published method: it prunes a set
fraction at fixed intervals, ranking by |w|^p / (flips + 1) (our 'hybrid' criterion),
instead of pruning what flipped.

At each check of an `OnFlip` schedule (`UpdateMasks` calls `prune`), per layer:

* a weight is *hit* if it survives and changed sign at least `min_flips` times since
  the reference (`PruneLowSignFlip.flip_counts`, exact, the last update included);
* the layer keeps `max(target keep, active - hits)` weights, where `target keep` is
  `masks.keep_count(size, target_sparsity)`: every hit goes unless that would take the
  layer beyond its target (the cap), so a layer never ends sparser than the other
  one-pass runs and IMP at the same rounds;
* the mask is `masks.compute` of scores in which every hit ranks below every other
  weight, hits among themselves by the layer's criterion ('sign_flip': weights flipped
  now first, more flips first, then smaller |w|; 'hybrid': smaller |w| / (1 + flips)^alpha
  first): the package's counts and tie rule, and masks only shrink;
* with `floor='gradual'` a check keeps at most `masks.keep_count(size, s)`, `s` the
  sparsity of the cubic `schedules.Gradual` schedule of the same begin, frequency,
  updates and target at that step (what a gradual one-pass run keeps there): when the
  hits leave the layer above that count, the criterion's lowest scores go too, so the
  run is gradual magnitude pruning in which flipped weights go first; when the hits are
  more than the floor asks for, only hits go (capped at the target as always);
* at the last check, with `fill` (the default), the layer keeps exactly `target keep`:
  the hits go first, then the criterion's lowest scores, so that the run ends at the same
  weights remaining as the gradual one-pass runs and IMP — the comparison at equal
  sparsity needs it. That the flips alone rarely reach the target is itself a result:
  `history` says how many weights each check pruned for flips and how many the fill added.

With `strategy='global'` the same holds for the layers together (one target, one
ranking; flip state of all layers side by side).

Choices that are ours (no paper fixes them): a weight counts as flipped by its number of
sign changes, not by its sign now differing from the reference (a weight that flipped and
flipped back counts, with `min_flips=1`: it crossed zero); checks are every `frequency`
steps rather than every step (a check costs a pass over the weights on the host); the
fill happens at the last check rather than when flips stop; and the gradual floor exists
because flips alone were measured to prune only 38-42% of what the target needs at 10% to
0.5% weights remaining (LeNet-300-100 on Fashion-MNIST, `bench.sign_flip`, bench/RESULTS.md),
which makes the last check a large one-shot prune at 70% of training: without the floor the
run collapses at 1% weights remaining and below. The floor's filled weights count as `filled` in the record.

The record of each check (weights pruned for flips, filled by the criterion, kept after)
lives in the wrapper's `on_flip_log` variable, so a mid-round backup keeps it and a resumed
run records what an uninterrupted one does.
"""

import numpy as np

from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity import pruning
from keras_lottery.sparsity import schedules
from keras_lottery.sparsity import sign_flip
from keras_lottery.sparsity import wrappers


def on_flip_entries(model, names=None):
    """(mask name, wrapper, weight, mask, index) of every weight an `OnFlip` schedule prunes.

    Args:
      model: a wrapped model.
      names: only these mask names (default: all with an `OnFlip` schedule).

    Raises:
      ValueError: an `OnFlip` layer that is not wrapped by `prune_low_sign_flip` (it has no
        flip counts) or has a block or m-by-n pattern (a check counts single weights).
    """
    entries = []
    indices = {}
    for name, wrapper, weight, mask in wrappers.pruning_entries(model):
        if not isinstance(wrapper.pruning_schedule, schedules.OnFlip) or (names is not None and name not in names):
            continue
        if not isinstance(wrapper, sign_flip.PruneLowSignFlip):
            raise ValueError(
                f"layer {wrapper.layer.name!r} has an OnFlip schedule, which prunes the weights whose signs flip, "
                "but its wrapper counts no flips: wrap the model with keras_lottery.prune_low_sign_flip(...) "
                "instead of prune_low_magnitude."
            )
        if wrappers.pattern_of(wrapper).structured:
            raise ValueError(
                f"layer {wrapper.layer.name!r} has an OnFlip schedule and a block or m-by-n pattern: a check prunes "
                "single weights as they flip. Use an unstructured mask (the default block_size=(1, 1))."
            )
        index = indices.get(id(wrapper), 0)
        indices[id(wrapper)] = index + 1
        entries.append((name, wrapper, weight, mask, index))
    return entries


def check_model(model):
    """Raises ValueError (see `on_flip_entries`) if some `OnFlip` layer cannot be checked; before training."""
    on_flip_entries(model)


def hits(model, names=None):
    """dict mask name -> True where a surviving weight changed sign at least `min_flips` times."""
    return {name: (mask.numpy() > 0.5) & (wrapper.flip_counts(weight) >= wrapper.pruning_schedule.min_flips)
            for name, wrapper, weight, mask, _ in on_flip_entries(model, names)}


def prune(model, step, names, strategy="layerwise", criterion=None, rng=None):
    """One check of the `OnFlip` schedules of the layers `names`, at `step`: prunes the hits, then fills.

    Args:
      model: a model wrapped by `prune_low_sign_flip` with `OnFlip` schedules.
      step: the training step of the check (one of the schedules' checks).
      names: the mask names to check (layers ranked together with 'global').
      strategy: 'layerwise' or 'global'.
      criterion: how hits are ordered and the fill ranks (None: each wrapper's own).
      rng: NumPy Generator for a random criterion.

    Returns:
      dict mask name -> {"pruned_for_flips": n, "filled": n, "kept": n} of this check (`filled`:
      pruned by the criterion, for the gradual floor or the last check's fill).

    Raises:
      ValueError: see `on_flip_entries`; a step that is no check of a layer's schedule;
        'global' over layers whose schedules differ.
    """
    entries = on_flip_entries(model, names)
    if not entries:
        return {}
    masks_lib.check_strategy(strategy)
    if strategy == "global" and len({str(w.pruning_schedule.get_config()) for _, w, _, _, _ in entries}) > 1:
        raise ValueError("strategy='global' ranks the layers together, so their OnFlip schedules must be equal; "
                         "give every layer the same schedule, or prune layerwise.")
    selected = [name for name, _, _, _, _ in entries]
    base = pruning.scores(model, criterion, rng, selected, strategy)
    previous = wrappers.get_masks(model)
    hit = hits(model, selected)
    alive = {name: previous[name] > 0.5 for name in selected}
    # Every hit below every other weight, in the criterion's order among the hits: shifting the hits
    # down by more than the scores' range keeps both orders (and the ties) as they were.
    values = np.concatenate([np.ravel(base[name]) for name in selected])
    offset = float(values.max() - values.min()) + 1.0 if values.size else 1.0
    scores = {name: np.where(hit[name], base[name] - offset, base[name]) for name in selected}

    def keep(size, active, hits_count, schedule):
        target = masks_lib.keep_count(size, schedule.target_sparsity)
        final = schedule.fill and step == schedule.end_step
        wanted = active - hits_count
        floor = schedule.floor_schedule()
        if floor is not None:  # at most the gradual count: the hits go first, the lowest scores fill up to it
            wanted = min(wanted, masks_lib.keep_count(size, floor.exact_sparsity(step)))
        return min(active, target if final else max(target, wanted))

    if strategy == "global":
        schedule = entries[0][1].pruning_schedule
        schedule.check_index(step)
        size = sum(np.size(scores[name]) for name in selected)
        kept = keep(size, sum(int(alive[n].sum()) for n in selected), sum(int(hit[n].sum()) for n in selected),
                    schedule)
        sparsity = masks_lib.sparsity_keeping(size, kept)
    else:
        sparsity = {}
        for name, wrapper, _, _, _ in entries:
            wrapper.pruning_schedule.check_index(step)
            sparsity[name] = masks_lib.sparsity_keeping(
                np.size(scores[name]), keep(np.size(scores[name]), int(alive[name].sum()), int(hit[name].sum()),
                                            wrapper.pruning_schedule))
    updated = masks_lib.compute(scores, sparsity, strategy, previous_masks={n: previous[n] for n in selected})
    record = {}
    for name, wrapper, _, _, index in entries:
        removed = alive[name] & (updated[name] < 0.5)
        record[name] = {"pruned_for_flips": int((removed & hit[name]).sum()),
                        "filled": int((removed & ~hit[name]).sum()), "kept": int(updated[name].sum())}
        row = wrapper.pruning_schedule.check_index(step)
        log = wrapper.on_flip_logs[index]
        value = log.numpy()
        value[row] = [record[name]["pruned_for_flips"], record[name]["filled"], record[name]["kept"]]
        log.assign(value)
    previous.update(updated)
    wrappers.set_masks(model, previous)
    return record


def history(model):
    """What the `OnFlip` checks done so far pruned, per layer (for a run's record).

    Returns:
      dict mask name -> {"checks": [{"iteration", "pruned_for_flips", "filled", "kept"}, ...]
      (the checks done, in order), "pruned_for_flips": the total, "filled": the total,
      "target_reached_iteration": the first check after which the layer kept its target
      count, `masks.keep_count(size, target_sparsity)` (with 'global': after which the
      global layers together kept theirs), or None if not yet}. Empty for a model without
      `OnFlip` schedules.
    """
    result, sizes, kept_by_check = {}, {}, {}
    entries = on_flip_entries(model)
    for name, wrapper, weight, _, index in entries:
        schedule = wrapper.pruning_schedule
        checks = []
        for row, (for_flips, filled, kept) in enumerate(wrapper.on_flip_logs[index].numpy().tolist()):
            if kept >= 0:
                checks.append({"iteration": schedule.begin_step + row * schedule.frequency,
                               "pruned_for_flips": for_flips, "filled": filled, "kept": kept})
        sizes[name] = int(np.size(weight))
        kept_by_check[name] = {check["iteration"]: check["kept"] for check in checks}
        result[name] = {"checks": checks, "pruned_for_flips": sum(c["pruned_for_flips"] for c in checks),
                        "filled": sum(c["filled"] for c in checks)}
    together = [name for name, wrapper, _, _, _ in entries if wrapper.strategy == "global"]
    for name, wrapper, _, _, _ in entries:
        group = together if name in together else [name]
        target = masks_lib.keep_count(sum(sizes[n] for n in group), wrapper.pruning_schedule.target_sparsity)
        iterations = sorted(set.intersection(*(set(kept_by_check[n]) for n in group)))
        result[name]["target_reached_iteration"] = next(
            (i for i in iterations if sum(kept_by_check[n][i] for n in group) <= target), None)
    return result
