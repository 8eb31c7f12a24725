"""The pruning core on tfmot: scores -> masks -> wrappers. Knows nothing of run folders or datasets.

* `masks`: scores -> 0/1 masks at a sparsity, layerwise or global, one tie rule (pure NumPy).
* `criteria`: a layer's state -> one score per weight (magnitude, sign-flip, hybrid, random).
* `wrappers`: `PruneLowMagnitude` on tfmot's wrapper, `prune_low_magnitude`, `strip_pruning`,
  masks in and out of the wrappers' variables, saving and loading.
* `sign_flip`: `PruneLowSignFlip`, flip counts kept in the training graph.
* `pruning`: `prune`, the one path from a wrapped model's state to new masks.
* `schedules`: `OneShot`, `Iterative`, `Gradual`, `OnFlip` (tfmot `PruningSchedule`s), LTH's rates.
* `on_flip`: the checks of `OnFlip`: prune weights as their signs flip, capped at a target, then fill.
* `callbacks`: `UpdateMasks` (applies schedules), `RewindCallback` (rewinds tickets).
* `controls`: random reinit, random prune, signed constant, applied at a round's start.
* `early_bird`: early-bird detection (`EarlyBirdCallback`, `EarlyBirdSchedule`).
* `flops`: inference and training multiply-adds (RigL's Appendix H rules per method), scoring costs.
* `summaries`: TensorBoard views of sparsity, flips and early-bird distance; HParams.
* `mask_variables`: reading and writing the wrappers' masks (`get_masks`, `set_masks`, `apply_masks`).
* `tfmot_protocol`: how tfmot's `UpdatePruningStep` drives the wrappers; no silent dense training.
"""
