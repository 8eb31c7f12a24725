"""The LTH paper's networks: LeNet-300-100 and Conv-2/4/6 (plus BatchNorm variants).

Glorot normal initialization as in Frankle & Carbin (2019), Table 1; every network
outputs logits. `registry.py` names them and carries their training settings.
"""

from keras_lottery import compat

keras = compat.keras


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


def conv_net(filters_per_block, name, batch_norm=False):
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
