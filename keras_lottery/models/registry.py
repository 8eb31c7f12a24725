"""Model registry: the LTH paper's networks and their training settings.

Each entry builds an uncompiled tf_keras model that outputs logits, with Glorot
normal initialization as in Frankle & Carbin (2019), Table 1, and carries the
paper's settings (optimizer, learning rate, batch size, iterations, per-round rates).
"""

import dataclasses

from keras_lottery import compat

keras = compat.keras


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """An architecture and the LTH paper's settings for it."""

    build: callable
    optimizer: str
    learning_rate: float
    batch_size: int
    iterations: int
    dense_rate: float = 0.2
    conv_rate: float = 0.1


def _dense(units, name, activation="relu"):
    return keras.layers.Dense(units, activation=activation, kernel_initializer="glorot_normal", name=name)


def lenet_300_100(input_shape, num_classes):
    """LeNet-300-100: 784-300-100-10 fully connected, ReLU."""
    return keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=input_shape),
            keras.layers.Flatten(name="flatten"),
            _dense(300, "fc1"),
            _dense(100, "fc2"),
            _dense(num_classes, "output", activation=None),
        ],
        name="lenet_300_100",
    )


def _conv_net(filters_per_block, name, batch_norm=False):
    def build(input_shape, num_classes):
        layers = [keras.layers.InputLayer(input_shape=input_shape)]
        for block, filters in enumerate(filters_per_block, start=1):
            for index in (1, 2):
                # With BatchNorm: conv (no bias: BN's beta is the bias) -> BN -> ReLU, as in VGG/ResNet,
                # so that |gamma| scores each filter (the early-bird 'bn_gamma' criterion).
                layers.append(
                    keras.layers.Conv2D(
                        filters, 3, padding="same", activation=None if batch_norm else "relu",
                        use_bias=not batch_norm, kernel_initializer="glorot_normal", name=f"conv{block}_{index}",
                    )
                )
                if batch_norm:
                    layers.append(keras.layers.BatchNormalization(name=f"bn{block}_{index}"))
                    layers.append(keras.layers.ReLU(name=f"relu{block}_{index}"))
            layers.append(keras.layers.MaxPooling2D(2, name=f"pool{block}"))
        layers += [
            keras.layers.Flatten(name="flatten"),
            _dense(256, "fc1"),
            _dense(256, "fc2"),
            _dense(num_classes, "output", activation=None),
        ]
        return keras.Sequential(layers, name=name)

    build.__doc__ = (f"{name}: {len(filters_per_block) * 2} 3x3 conv layers ({filters_per_block})"
                     + (", each followed by BatchNorm and ReLU" if batch_norm else "") + ", fc 256-256.")
    return build


MODELS = {
    "lenet_300_100": ModelSpec(lenet_300_100, "adam", 1.2e-3, 60, 50_000),
    "conv2": ModelSpec(_conv_net((64,), "conv2"), "adam", 2e-4, 60, 20_000),
    "conv4": ModelSpec(_conv_net((64, 128), "conv4"), "adam", 3e-4, 60, 25_000),
    "conv6": ModelSpec(_conv_net((64, 128, 256), "conv6"), "adam", 3e-4, 60, 30_000, conv_rate=0.15),
    # Not in the LTH paper: Conv-2/Conv-4 with BatchNorm after each conv, for channel tickets on |gamma|
    # (early-bird, You et al. 2020). Same optimizer settings as their plain versions.
    "conv2_bn": ModelSpec(_conv_net((64,), "conv2_bn", batch_norm=True), "adam", 2e-4, 60, 20_000),
    "conv4_bn": ModelSpec(_conv_net((64, 128), "conv4_bn", batch_norm=True), "adam", 3e-4, 60, 25_000),
}


def build(name, input_shape, num_classes, seed):
    """The registered model `name`, its weights drawn from `seed`."""
    spec = get(name)
    keras.utils.set_random_seed(seed)
    return spec.build(input_shape, num_classes)


def get(name):
    """The `ModelSpec` registered as `name`.

    Raises:
      ValueError: unknown model; the message lists the known ones.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}.")
    return MODELS[name]
