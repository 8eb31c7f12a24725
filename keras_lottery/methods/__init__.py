"""Methods that choose or change masks before or during training, each on `sparsity/`'s one mask function.

* `pruning_at_init`: SNIP, GraSP and SynFlow scores at initialization, and `prune_at_init`, which
  turns them into masks with `masks.compute` (one-shot, or SynFlow's iterative exponential schedule).
* `distributions`: per-layer sparsities for a global target (uniform, Erdos-Renyi, ERK), exact to
  the weight, for the per-layer `sparsity` argument of `masks.compute`, `prune` and `prune_at_init`.

This room sits above `sparsity/` and below `experiments/`: it imports `foundations`, `compat` and
`sparsity` only.
"""
