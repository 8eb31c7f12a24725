"""Model registry: each network by name, with the settings it is trained with.

Each entry builds an uncompiled tf_keras model that outputs logits and carries its
recipe (optimizer, learning rate, batch size, iterations, per-round prune rates);
`TrainingConfig` fills its `None` fields from the entry of its `model`.
"""

import dataclasses

from keras_lottery import compat
from keras_lottery.models import cifar, lth

keras = compat.keras


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """An architecture and its full training recipe (the LTH paper's, or OpenLTH's for CIFAR nets).

    Lengths are given as iterations or as OpenLTH's strings ("160ep", "500it"); `TrainingConfig`
    and `ImpConfig` take every field here as their default when the user leaves theirs unset.
    """

    build: callable
    optimizer: str  # 'adam', 'sgd' or 'momentum' (SGD with momentum 0.9, the LTH paper's name)
    learning_rate: float
    batch_size: int
    iterations: int | None  # training iterations per round; None when `epochs` gives the length
    dense_rate: float = 0.2  # layerwise per-round rates (LTH); the output layer at half rate
    conv_rate: float = 0.1
    epochs: float | None = None  # the length in epochs instead (OpenLTH's "160ep")
    momentum: float = 0.0  # SGD's momentum ('sgd' only)
    nesterov: bool = False
    weight_decay: float = 0.0
    weight_decay_mode: str = "l2"  # 'l2': added to the gradient, as PyTorch's SGD (OpenLTH); 'decoupled'
    lr_schedule: str = "constant"  # 'constant', 'step' (x lr_gamma at each milestone) or 'cosine'
    lr_milestones: str = ""  # comma-separated lengths, e.g. "80ep,120ep"
    lr_gamma: float = 0.1
    warmup: str = ""  # linear warmup length from 0, e.g. "5ep" or "500it"; "" none
    strategy: str = "layerwise"  # how IMP ranks weights: 'layerwise' (LTH) or 'global' (OpenLTH's CIFAR nets)
    layers_to_ignore: tuple = ()  # layers global pruning leaves dense (VGG's output layer, as OpenLTH)


# OpenLTH's CIFAR-10 recipe, the same in `default_hparams` of its models/cifar_resnet.py and
# models/cifar_vgg.py: SGD lr 0.1, momentum 0.9 (not Nesterov), batch 128, 160 epochs, lr x0.1 at
# epochs 80 and 120, no warmup, weight decay 1e-4 added to the gradient (PyTorch SGD's
# `weight_decay`); IMP prunes 20% per round with all layers ranked together ('sparse_global').
_OPENLTH_CIFAR = dict(
    optimizer="sgd", learning_rate=0.1, batch_size=128, iterations=None, epochs=160, momentum=0.9, nesterov=False,
    weight_decay=1e-4, weight_decay_mode="l2", lr_schedule="step", lr_milestones="80ep,120ep", lr_gamma=0.1,
    warmup="", strategy="global",
)

MODELS = {
    "lenet_300_100": ModelSpec(lth.lenet_300_100, "adam", 1.2e-3, 60, 50_000),
    "conv2": ModelSpec(lth.conv_net((64,), "conv2"), "adam", 2e-4, 60, 20_000),
    "conv4": ModelSpec(lth.conv_net((64, 128), "conv4"), "adam", 3e-4, 60, 25_000),
    "conv6": ModelSpec(lth.conv_net((64, 128, 256), "conv6"), "adam", 3e-4, 60, 30_000, conv_rate=0.15),
    # Not in the LTH paper: Conv-2/Conv-4 with BatchNorm after each conv, for channel tickets on |gamma|
    # (early-bird, You et al. 2020). Same optimizer settings as their plain versions.
    "conv2_bn": ModelSpec(lth.conv_net((64,), "conv2_bn", batch_norm=True), "adam", 2e-4, 60, 20_000),
    "conv4_bn": ModelSpec(lth.conv_net((64, 128), "conv4_bn", batch_norm=True), "adam", 3e-4, 60, 25_000),
    # OpenLTH's CIFAR ResNets (cifar_resnet_<depth>[_<width>]), cifar_resnet.default_hparams for all
    # of them (OpenLTH has one per family): global pruning over every conv, the shortcuts and the output layer.
    **{f"resnet{depth}": ModelSpec(cifar.resnet(depth), **_OPENLTH_CIFAR) for depth in (20, 32, 44, 56, 110)},
    **{f"resnet20_w{width}": ModelSpec(cifar.resnet(20, width), **_OPENLTH_CIFAR) for width in (32, 64)},
    # OpenLTH's batchnorm_init='fixed' (gamma = 1): channel rankings by |gamma| then come from training alone.
    **{f"resnet{depth}_fixed_bn": ModelSpec(cifar.resnet(depth, batchnorm_init="fixed"), **_OPENLTH_CIFAR)
       for depth in (20, 56)},
    # OpenLTH's CIFAR VGGs (cifar_vgg_<depth>), cifar_vgg.default_hparams: the same recipe, and the
    # output layer stays dense (pruning_layers_to_ignore='fc.weight').
    **{f"vgg{depth}": ModelSpec(cifar.vgg(depth), **_OPENLTH_CIFAR, layers_to_ignore=("output",))
       for depth in (11, 13, 16, 19)},
}


def build(name, input_shape, num_classes, seed, synchronized_batch_norm=False):
    """The registered model `name`, its weights drawn from `seed`.

    Under a mixed dtype policy (`training.precision.policy`) the logits are cast to float32
    by a last layer, "logits".

    Args:
      name: a registered model.
      input_shape: (H, W, C) of one example.
      num_classes: the logits' size.
      seed: seeds Keras's global generators, then the weights are drawn.
      synchronized_batch_norm: BatchNorm over the whole batch of every replica (Keras's
        `synchronized=True`), for a distribution strategy with several replicas: by default
        each replica normalizes by its own share of the batch, which is another computation
        than one device's (ResNet-20 with 2 replicas of 8 examples: 5% of the masks differed
        after 16 steps). The same initial weights either way; one device has no use for it
        (the synchronized layer cannot use the fused kernel).
    """
    spec = get(name)
    keras.utils.set_random_seed(seed)
    model = spec.build(input_shape, num_classes)
    if keras.mixed_precision.global_policy().compute_dtype != "float32":
        # Under a mixed policy the logits are cast to float32 (Keras's mixed-precision guide): the loss and
        # the checks are then computed in float32.
        model = keras.Model(model.inputs, keras.layers.Activation("linear", dtype="float32", name="logits")(
            model.outputs[0]), name=model.name)
    return _synchronize_batch_norm(model) if synchronized_batch_norm else model


@keras.utils.register_keras_serializable("keras_lottery")
class SynchronizedBatchNormalization(keras.layers.BatchNormalization):
    """`BatchNormalization(synchronized=True)` that stays synchronized when cloned.

    Keras leaves `synchronized` out of the layer's config, so every copy made from it
    (tfmot's wrapping clones the model) normalizes per replica again: this class keeps it.
    """

    def __init__(self, **kwargs):
        kwargs.pop("synchronized", None)
        super().__init__(synchronized=True, **kwargs)


def _synchronize_batch_norm(model):
    """A copy of `model` whose BatchNormalization layers synchronize their statistics across replicas."""
    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            return SynchronizedBatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def get(name):
    """The `ModelSpec` registered as `name`.

    Raises:
      ValueError: unknown model; the message lists the known ones.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}.")
    return MODELS[name]
