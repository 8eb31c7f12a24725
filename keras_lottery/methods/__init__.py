"""Methods that choose or change masks before or during training, each on `sparsity/`'s one mask function.

* `pruning_at_init`: SNIP, GraSP and SynFlow scores at initialization, and `prune_at_init`, which
  turns them into masks with `masks.compute` (one-shot, or SynFlow's iterative exponential schedule).
* `distributions`: per-layer sparsities for a global target (uniform, Erdos-Renyi, ERK), exact to
  the weight, for the per-layer `sparsity` argument of `masks.compute`, `prune` and `prune_at_init`.
* `mask_updaters`: dynamic sparse training. SET, SNFS and RigL drop the lowest-|w| active
  weights of each layer and regrow as many (at random, by dense-gradient momentum, by dense
  gradient), the count per layer fixed, on RigL's cosine schedule; `MaskUpdateCallback` runs
  one during `fit`, and `get(name, **kwargs)` builds one by name.
* `supermasks`: masks learned on frozen random weights: Zhou et al.'s Bernoulli supermask and
  Ramanujan et al.'s edge-popup (`prune_low_supermask`, `prune_low_edge_popup`); only the scores
  train, and `supermasks.finalize` turns them into masks with `masks.compute`.
* `learned_sparsity`: L0 regularization (hard-concrete gates) and sparse variational dropout as
  wrappers (`learned_wrappers`) that learn a score per weight during training;
  `learned_sparsity.finalize` turns the scores into masks with `masks.compute` and leaves plain
  masked layers.

This room sits above `sparsity/` and below `experiments/`: it imports `foundations`, `compat` and
`sparsity` only.
"""

from keras_lottery.methods import distributions  # noqa: F401
from keras_lottery.methods import learned_sparsity  # noqa: F401
from keras_lottery.methods import mask_updaters  # noqa: F401
from keras_lottery.methods import mask_update_callback  # noqa: F401
from keras_lottery.methods import pruning_at_init  # noqa: F401
from keras_lottery.methods import supermasks  # noqa: F401
from keras_lottery.methods.distributions import distribute, erdos_renyi, erk, uniform  # noqa: F401
from keras_lottery.methods.learned_sparsity import prune_low_l0, prune_low_variational_dropout  # noqa: F401
from keras_lottery.methods.pruning_at_init import prune_at_init  # noqa: F401
from keras_lottery.methods.supermasks import prune_low_edge_popup, prune_low_supermask  # noqa: F401
