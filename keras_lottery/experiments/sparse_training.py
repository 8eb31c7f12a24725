"""One sparse training run by a method of the literature, as a resumable run folder.

    summary = sparse_training.run(SparseConfig(method="snip", sparsity=0.9, output_dir="runs/snip_90"))

The run is IMP's training round (`rounds.train_round`: evaluations, mid-round backups, a
SIGKILL resumes bit for bit, TensorBoard) around a network whose mask the method chooses
(`sparse_config.py` lists them). What differs between methods is only:

1. **the wrapper**: our magnitude wrapper for every method whose mask is set from outside,
   the learned wrappers of `methods.learned_sparsity` / `methods.supermasks` otherwise;
2. **the mask before training**: random, SNIP, GraSP or SynFlow scores (`methods.pruning_at_init`),
   a finished run's ticket, all through `masks.compute`; then the `control`, if any;
3. **one callback**: SET/SNFS/RigL's `MaskUpdateCallback`, or the learned methods' fixing of
   the mask at `learn_until` (`FixLearnedMask`: `finalize` of the method's scores, again through
   `masks.compute`).

Every run records what a fair comparison needs (`record`): the weights remaining counted
against the full-width dense network's kernels (so the small dense network is counted too),
training iterations, training and inference FLOPs (dense-equivalent multiply-adds,
`sparsity.flops`, RigL's counting), and for the learned methods the density they reached on
their own rule before the mask was fixed at the target.

Results: the same run folder as IMP (`summary.json` with one record, "round" 0,
`round_0/masks.npz` and `final_weights.npz`, TensorBoard runs `round_0` and `sparse`), so
`report_main` and `load_run_model` read it; rerunning a finished run returns its summary.
"""

import dataclasses
import logging

import numpy as np

from keras_lottery import compat
from keras_lottery import models
from keras_lottery import training
from keras_lottery.experiments import rounds
from keras_lottery.experiments import run_folder
from keras_lottery.experiments.sparse_config import AT_INIT, DYNAMIC, LEARNED, config_defaults
from keras_lottery.foundations import tensorboard
from keras_lottery.methods import distributions
from keras_lottery.methods import learned_sparsity
from keras_lottery.methods import mask_updaters
from keras_lottery.methods import pruning_at_init
from keras_lottery.methods import supermasks
from keras_lottery.sparsity import callbacks
from keras_lottery.sparsity import controls
from keras_lottery.sparsity import flops
from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity import schedules
from keras_lottery.sparsity import summaries
from keras_lottery.sparsity import wrappers

keras = compat.keras

_LOG = logging.getLogger(__name__)
RUN = "sparse"  # the TensorBoard run of the record


def prunable_layers(config, dense):
    """Names of the layers the method may sparsify: every layer with a kernel but `layers_to_ignore`."""
    names = list(schedules.lth_prune_rates(dense.layers))
    ignored = rounds.ignored_layers(config, names)
    return [name for name in names if name not in ignored]


def kernel_count(model, names=None):
    """Kernel weights of the layers `names` (default: every layer with a kernel) of a plain model."""
    names = set(schedules.lth_prune_rates(model.layers)) if names is None else set(names)
    return int(sum(np.size(layer.kernel) for layer in model.layers if layer.name in names))


LEARNED_WRAPPERS = {"l0": (learned_sparsity.prune_low_l0, learned_sparsity),
                    "variational_dropout": (learned_sparsity.prune_low_variational_dropout, learned_sparsity),
                    "supermask": (supermasks.prune_low_supermask, supermasks),
                    "edge_popup": (supermasks.prune_low_edge_popup, supermasks)}


def fixed_batch(config, splits, size):
    """One seeded batch of `size` training examples (no augmentation), the same on every run of `config`."""
    x, y = next(iter(splits.train_batches(size, config.seed * 1000 + 999, augment=False)))
    return x.numpy(), y.numpy()


def target_sparsity(config, model):
    """(sparsity, strategy) for `masks.compute`: the config's one value ranked globally, or per-layer values."""
    if config.distribution == "global":
        return config.sparsity, "global"
    return distributions.distribute(model, config.distribution, config.sparsity), "layerwise"


def is_learning(model):
    """True while some learned wrapper of `model` still learns its mask (its `learning` variable is 1)."""
    return any(float(wrapper.learning.numpy()) > 0.5 for wrapper in wrappers.prunable_wrappers(model)
               if hasattr(wrapper, "learning"))


def wrap(config, dense, names, splits):
    """The wrapped model of `config.method`, masks all ones (the method sets them).

    Raises:
      ValueError: `layers_to_ignore` with a learned method (their wrappers take every Dense
        and Conv2D layer).
    """
    if config.method in LEARNED:
        ignored = [name for name in schedules.lth_prune_rates(dense.layers) if name not in names]
        wrap_function, _ = LEARNED_WRAPPERS[config.method]
        kwargs = {"seed": config.seed}
        if config.method in ("l0", "variational_dropout"):
            kwargs["layers_to_ignore"] = tuple(ignored)
            if config.penalty is not None:
                kwargs["coefficient"] = config.penalty / splits.train_size
        elif ignored:
            raise ValueError(f"method {config.method!r} learns the mask of every Dense and Conv2D layer: "
                             f"layers_to_ignore={config.layers_to_ignore!r} is not supported with it; pass "
                             "--layers_to_ignore='' (VGG leaves its output layer dense by default).")
        if config.method in ("supermask", "edge_popup"):
            kwargs["weights"] = config.supermask_weights
        if config.method == "edge_popup":
            kwargs["sparsity"] = config.sparsity if config.distribution == "global" else distributions.distribute(
                {name: dense.get_layer(name).kernel.shape for name in names}, config.distribution, config.sparsity)
        model = wrap_function(dense, **kwargs)
    else:
        model = wrappers.prune_low_magnitude(dense, pruning_schedule={name: schedules.OneShot(0.0) for name in names})
    wrappers.manage_masks(model)  # the method sets the masks; no schedule of the wrappers acts
    return model


def initial_masks(config, model, splits):
    """Assigns the masks the method starts training with, then applies the control.

    Deterministic in the config (seeded), so a resumed run computes the same before its backup
    is restored over them.
    """
    if config.method in AT_INIT + DYNAMIC:
        sparsity, strategy = target_sparsity(config, model)
        method = "random" if config.method in DYNAMIC else config.method
        batch = fixed_batch(config, splits, config.scoring_examples) if method in pruning_at_init.NEEDS_DATA else None
        pruning_at_init.prune_at_init(model, method, sparsity, data=batch, strategy=strategy,
                                      rng=np.random.default_rng([config.seed, 1]))
    elif config.method == "ticket":
        source = run_folder.RunFolder(config.masks_from)
        last = len(source.load_summary()["rounds"]) - 1
        wrappers.set_masks(model, source.load_masks(last))
    seed = int(np.random.SeedSequence([config.seed, 2]).generate_state(1)[0])
    if config.control == "layer_shuffle":
        controls.random_prune(model, seed)
    elif config.control == "reinit":
        controls.random_reinit(model, seed)


class FixLearnedMask(keras.callbacks.Callback):
    """Fixes a learned method's mask at the target sparsity at optimizer step `step` (or at the end).

    `finalize` of the method's module turns its scores into masks with `masks.compute` and
    switches its wrappers to plain masked layers. Whether that happened is the wrappers' own
    `learning` variable, so a resumed run restored after the step does not fix it twice.
    """

    def __init__(self, module, sparsity, strategy, step):
        super().__init__()
        self.module, self.sparsity, self.strategy, self.step = module, sparsity, strategy, step
        self.density = None  # the method's own density just before its mask was fixed

    def _fix(self):
        if is_learning(self.model):
            self.density = self.module.expected_density(self.model)
            self.module.finalize(self.model, self.sparsity, self.strategy)

    def on_train_batch_end(self, batch, logs=None):
        if callbacks.optimizer_step(self.model) == self.step:
            self._fix()

    def on_train_end(self, logs=None):
        if callbacks.optimizer_step(self.model) >= self.step:
            self._fix()

    def backup_state(self):
        """The density recorded at the fix, for a mid-round backup (a run resumed after it keeps it)."""
        return {f"density/{name}": np.array(value) for name, value in (self.density or {}).items()}

    def restore_backup_state(self, arrays):
        """Restores what `backup_state` returned."""
        density = {key[len("density/"):]: float(value) for key, value in arrays.items() if key.startswith("density/")}
        self.density = density or None


def training_iterations(config, base, dense_flops, sparse_flops):
    """The run's iterations: `base`, or with budget 'flops' as many as the dense run's training FLOPs buy.

    Capped at `max_budget_factor * base` (98% sparse would otherwise train 50 times longer).
    """
    if config.budget == "iterations" or config.method in ("dense",) + LEARNED:
        return base  # the learned methods train dense weights (or all scores): no cheaper per step
    dense_step = flops.training_flops("dense", dense_flops, dense_flops, 1, 1)
    step = flops.training_flops(flops_method(config), dense_flops, sparse_flops, 1, 1,
                                update_frequency=config.update_frequency)
    return int(min(config.max_budget_factor * base, round(base * dense_step / step)))


def flops_method(config):
    """The method's name in `sparsity.flops`' table of training costs."""
    return "lottery" if config.method == "ticket" else config.method


def run(config, on_round_end=None):
    """Runs (or resumes) one sparse training and returns its summary.

    Args:
      config: a `SparseConfig`.
      on_round_end: optional callable(record) called once the run's record is saved.

    Raises:
      ValueError: a bad config, data, or output folder (another config, in use, not
        writable), all before any training.
    """
    config = config.resolved()
    folder = run_folder.RunFolder(config.output_dir)
    with folder.locked():
        return _run(config, folder, on_round_end)


def _run(config, folder, on_round_end):
    config_dict = dataclasses.asdict(config)
    summary = folder.load_checked(config_dict, config_defaults())
    if summary is not None and folder.verify_rounds(summary, snapshot=False):
        return summary
    folder.remove_leftovers(0)
    splits, data_record = rounds.load_data(config)
    base = rounds.iterations_per_round(config, splits)
    strategy = training.strategies.get(config.distribution_strategy)
    with strategy.scope(), training.precision.policy(config.mixed_precision):
        synchronized = strategy.num_replicas_in_sync > 1
        full = models.build(config.model, splits.input_shape, splits.num_classes, config.seed,
                            synchronized_batch_norm=synchronized)
        names = prunable_layers(config, full)
        full_kernels, dense_flops = kernel_count(full, names), flops.inference_flops(full)
        dense = full
        if config.method == "small_dense":
            dense, factor = models.small_dense(full, 1.0 - config.sparsity, config.seed)
            names = prunable_layers(config, dense)
        model = wrap(config, dense, names, splits)
        initial_masks(config, model, splits)
        sparse_flops = flops.inference_flops(model)
        total = training_iterations(config, base, dense_flops, sparse_flops)
        interval = rounds.evaluation_spacing(total, config.evaluations_per_round)
        total = interval * (total // interval)
        extra, act_at, fix = _method_callbacks(config, model, splits, total)
        rounds.compile_for_round(model, config, splits, total, training.steps_per_execution(interval, *act_at))
    summaries.write_hparams(folder.file("tensorboard", RUN), config_dict)
    label = f"{config.method} at {100 * config.sparsity:g}% sparsity"
    record = rounds.train_round(model, config, splits, 0, total, interval, folder, extra, data_record, label=label,
                                final_masks_at=fix.step if fix is not None and fix.step < total else 0)
    current = wrappers.get_masks(model)
    kept = int(sum(np.sum(mask) for mask in current.values()))
    final_flops = flops.inference_flops(model)
    record = {"round": 0, "weights_remaining": kept / full_kernels,
              "layers": masks_lib.weights_remaining(current)[1], **record,
              "method": config.method, "sparsity": config.sparsity, "kernel_weights": kept,
              "dense_kernel_weights": full_kernels, "inference_flops": int(final_flops),
              "dense_inference_flops": int(dense_flops),
              "training_flops": _training_flops(config, record["iterations"], dense_flops, sparse_flops, final_flops,
                                                fix)}
    if config.method == "small_dense":
        record["width_factor"] = float(factor)
    if fix is not None and fix.density is not None:
        record["learned_density"] = {name: float(value) for name, value in fix.density.items()}
    variables = callbacks.RewindCallback.rewindable_variables(model)
    folder.save_round(0, current, {f"{i:04d}": v.numpy() for i, v in enumerate(variables)})
    summary = {"config": config_dict, "mode": "sparse", "data": data_record, "iterations_per_round": int(total),
               "rounds": [record]}
    folder.save_summary(summary)
    folder.remove_backup(0)
    rounds.write_tensorboard_round(folder, record, run=RUN, step=record["iterations"])
    tensorboard.end_hparams_session(folder.file("tensorboard", RUN), "success")
    if on_round_end is not None:
        on_round_end(record)
    return summary


def _method_callbacks(config, model, splits, total):
    """(callbacks, steps where Python must act, the FixLearnedMask or None) of the method."""
    if config.method in DYNAMIC:
        updater = mask_updaters.get(config.method, total_steps=total, drop_fraction=config.drop_fraction,
                                    frequency=config.update_frequency, seed=config.seed)
        # RigL's gradients and SNFS's momenta on training batches of a seeded stream of their own (SNFS's
        # momentum over one fixed batch would rank as RigL's gradient does); a resumed run skips the batches
        # taken before its backup.
        def batches(skip):
            return splits.train_batches(config.batch_size, config.seed * 1000 + 998, skip_batches=skip,
                                        augment=config.augment)

        # SNFS takes the dense gradient at each step of its window before an update: Python acts every step.
        act_at = [1] if config.method == "snfs" else [config.update_frequency]
        return [mask_updaters.MaskUpdateCallback(updater, batches)], act_at, None
    if config.method in LEARNED:
        _, module = LEARNED_WRAPPERS[config.method]
        sparsity, strategy = target_sparsity(config, model)
        step = int(round(config.learn_until * total))
        fix = FixLearnedMask(module, sparsity, strategy, step)
        return [fix], [step if step < total else 0], fix
    return [], [], None


def _training_flops(config, iterations, dense_flops, sparse_flops, final_flops, fix):
    """Training multiply-adds of the run (RigL's counting), scoring passes of SNIP/GraSP/SynFlow included.

    A learned method pays its own rule until its mask is fixed (`fix.step`), with edge-popup's
    forward pass at the target's multiply-adds (its top-k mask) and the others' dense, then
    static sparse training at the final mask.
    """
    if config.method in LEARNED:
        learned = min(iterations, fix.step)
        during = final_flops if config.method == "edge_popup" else dense_flops
        total = flops.training_flops(config.method, dense_flops, during, learned, config.batch_size) if learned else 0
        if learned < iterations:
            total += flops.training_flops("static", dense_flops, final_flops, iterations - learned, config.batch_size)
        return int(total)
    total = flops.training_flops(flops_method(config), dense_flops, sparse_flops, iterations, config.batch_size,
                                 update_frequency=config.update_frequency)
    if config.method in pruning_at_init.METHODS and config.method in ("snip", "grasp", "synflow"):
        iterations_scored = pruning_at_init.DEFAULT_ITERATIONS.get(config.method, 1)
        total += flops.scoring_flops(config.method, dense_flops, config.scoring_examples, iterations_scored)
    return int(total)
