"""OpenLTH's CIFAR networks in tf_keras: the CIFAR ResNets and the BatchNorm VGGs.

Architectures and initialization follow OpenLTH (facebookresearch/open_lth,
`models/cifar_resnet.py`, `models/cifar_vgg.py`) with its default hyperparameters
(`model_init='kaiming_normal'`, `batchnorm_init='uniform'`):

* Conv and Dense kernels: PyTorch's `kaiming_normal_` (fan_in, gain sqrt(2), a plain
  normal, not truncated): std sqrt(2 / fan_in).
* Biases: OpenLTH's initializers touch only the kernels, so biases keep PyTorch's
  default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with the kernel's fan_in. That is what is
  drawn here. The ResNets' convs have no bias (as OpenLTH); the VGGs' convs and both
  families' output layers have one.
* BatchNorm: gamma ~ U[0, 1), beta = 0 (OpenLTH's 'uniform' BN initializer); moving
  mean 0 and variance 1 (PyTorch's and Keras's default). Epsilon 1e-5 and a
  running-average momentum of 0.9 in Keras terms: PyTorch's default momentum=0.1
  weighs the new batch by 0.1, which is Keras's momentum=0.9 (Keras's default 0.99
  would average over ten times as many batches).

Every network outputs logits; the final Dense layer is named "output".
`registry.py` names them and carries OpenLTH's training recipes.
"""

import math

from keras_lottery import compat

keras = compat.keras

# The VGG layer plans of OpenLTH's cifar_vgg: filters of each 3x3 conv, "M" a 2x2 max pool.
# Standard VGG's fifth pool is not there: the head's 2x2 average pool takes its place.
VGG_PLANS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512),
}

BN_MOMENTUM = 0.9  # PyTorch's default momentum=0.1, in Keras's convention (see the module docstring)
BN_EPSILON = 1e-5  # PyTorch's default


def kaiming_normal():
    """PyTorch's `kaiming_normal_` default (fan_in, gain sqrt(2)), untruncated: std sqrt(2 / fan_in).

    A fresh initializer per layer, so that no two layers share one object.
    """
    return keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")


def torch_bias(fan_in):
    """PyTorch's default bias of a Conv2d/Linear layer with `fan_in` inputs per unit: U(-b, b), b = 1/sqrt(fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def _conv(x, filters, kernel_size, name, strides=1, use_bias=False):
    """A Conv2D with PyTorch's zero padding of (kernel_size - 1) / 2 on every side, as OpenLTH's convs.

    At stride 1 that is Keras's 'same'. At stride 2 'same' would pad only the bottom and
    right of an even-sized input, which shifts every output by one pixel against
    PyTorch's (and against the 1x1 shortcut, which samples the even positions): the
    padding is then an explicit ZeroPadding2D ("<name>_pad") and the conv 'valid'.
    """
    pad = (kernel_size - 1) // 2
    padding = "same"
    if strides != 1 and pad:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    fan_in = kernel_size * kernel_size * x.shape[-1]
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias,
        kernel_initializer=kaiming_normal(), bias_initializer=torch_bias(fan_in), name=name,
    )(x)


BATCHNORM_INITS = ("uniform", "fixed")  # OpenLTH's `batchnorm_init` choices: gamma ~ U[0, 1), or gamma = 1


def _batch_norm(x, name, init="uniform"):
    gamma = keras.initializers.RandomUniform(0.0, 1.0) if init == "uniform" else "ones"
    return keras.layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, beta_initializer="zeros", gamma_initializer=gamma, name=name,
    )(x)


def _output(x, num_classes):
    return keras.layers.Dense(
        num_classes, kernel_initializer=kaiming_normal(), bias_initializer=torch_bias(x.shape[-1]), name="output",
    )(x)


def _check_positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer; got {value!r}.")


def _residual_block(x, filters, strides, name, batchnorm_init):
    """conv3x3-BN-ReLU-conv3x3-BN plus the shortcut, then ReLU (OpenLTH's `Block`).

    The shortcut is the identity, or a 1x1 conv + BN where the shape changes (OpenLTH's
    projection shortcut; He et al.'s option B, not the parameter-free option A).
    """
    shortcut = x
    out = _conv(x, filters, 3, f"{name}_conv1", strides=strides)
    out = _batch_norm(out, f"{name}_bn1", batchnorm_init)
    out = keras.layers.ReLU(name=f"{name}_relu1")(out)
    out = _conv(out, filters, 3, f"{name}_conv2")
    out = _batch_norm(out, f"{name}_bn2", batchnorm_init)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv(x, filters, 1, f"{name}_shortcut_conv", strides=strides)
        shortcut = _batch_norm(shortcut, f"{name}_shortcut_bn", batchnorm_init)
    out = keras.layers.Add(name=f"{name}_add")([out, shortcut])
    return keras.layers.ReLU(name=f"{name}_relu")(out)


def resnet(depth, width=16, batchnorm_init="uniform"):
    """OpenLTH's CIFAR ResNet (`cifar_resnet_<depth>[_<width>]`, He et al. 2016, Section 4.2).

    A 3x3 conv of `width` filters + BN + ReLU ("stem_*"); three stages of n blocks with
    `width`, 2x and 4x filters, the first block of stages 2 and 3 at stride 2
    ("stage<s>_block<b>_*"); global average pooling ("pool"); Dense to the classes
    ("output", logits). 6n + 2 weight layers.

    Matches OpenLTH in layers, shortcut (1x1 conv + BN where the shape changes),
    padding and initialization (module docstring). Differences: the stem takes any
    number of input channels (OpenLTH's is fixed at 3), and BN's running averages use
    Keras's momentum 0.9 (PyTorch's 0.1, the same rule).

    Args:
      depth: number of weight layers, 6n + 2 with n >= 1 (20, 32, 44, 56, 110, ...).
      width: filters of the stem and the first stage (OpenLTH's W, default 16).
      batchnorm_init: OpenLTH's `batchnorm_init`: 'uniform' (its default, gamma ~ U[0, 1))
        or 'fixed' (gamma = 1). A ranking of channels by |gamma| (early-bird, network
        slimming) starts from the draw under 'uniform' and from a tie under 'fixed'.

    Returns:
      build(input_shape, num_classes) -> an uncompiled functional tf_keras model named
      "resnet<depth>" ("resnet<depth>_w<width>" for a width other than 16; "_fixed_bn"
      appended for batchnorm_init='fixed').

    Raises:
      ValueError: a depth that is not 6n + 2 with n >= 1, a width that is not a
        positive integer, or another batchnorm_init.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"ResNet depth {depth!r} is invalid: it must be 6n+2 with n >= 1 (e.g. 20, 32, 44, 56, 110).")
    _check_positive_int(width, "ResNet width")
    if batchnorm_init not in BATCHNORM_INITS:
        raise ValueError(f"batchnorm_init must be one of {BATCHNORM_INITS}; got {batchnorm_init!r}.")
    blocks_per_stage = (depth - 2) // 6
    name = (f"resnet{depth}" if width == 16 else f"resnet{depth}_w{width}") + (
        "_fixed_bn" if batchnorm_init == "fixed" else "")

    def build(input_shape, num_classes):
        inputs = keras.Input(shape=input_shape, name="image")
        x = _conv(inputs, width, 3, "stem_conv")
        x = _batch_norm(x, "stem_bn", batchnorm_init)
        x = keras.layers.ReLU(name="stem_relu")(x)
        for stage, filters in enumerate((width, 2 * width, 4 * width), start=1):
            for block in range(1, blocks_per_stage + 1):
                strides = 2 if stage > 1 and block == 1 else 1
                x = _residual_block(x, filters, strides, f"stage{stage}_block{block}", batchnorm_init)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        return keras.Model(inputs, _output(x, num_classes), name=name)

    build.__doc__ = (f"{name}: OpenLTH's cifar_resnet_{depth}_{width} ({blocks_per_stage} blocks per stage, "
                     f"batchnorm_init='{batchnorm_init}').")
    return build


def vgg(depth):
    """OpenLTH's CIFAR VGG with BatchNorm (`cifar_vgg_<depth>`).

    Each conv of the plan (`VGG_PLANS`) is a 3x3 conv with bias ("conv<g>_<i>") + BN +
    ReLU, groups <g> separated by 2x2 max pools ("pool<g>"); then OpenLTH's head: a 2x2
    average pool ("avg_pool", 2x2 -> 1x1 on 32x32 inputs), flatten, and one Dense to
    the classes ("output", logits): no hidden fully connected layers.

    Matches OpenLTH in layers, biases (its convs keep theirs, before BN) and
    initialization (module docstring). Differences: any number of input channels, and
    inputs larger than 32x32 give the Dense more inputs (OpenLTH's is fixed at 512).

    Args:
      depth: 11, 13, 16 or 19.

    Returns:
      build(input_shape, num_classes) -> an uncompiled functional tf_keras model named
      "vgg<depth>". build raises ValueError for inputs smaller than 32x32 (the last
      average pool would get less than 2x2).

    Raises:
      ValueError: another depth.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth not in VGG_PLANS:
        raise ValueError(f"VGG depth {depth!r} is invalid: choose one of {sorted(VGG_PLANS)}.")
    plan = VGG_PLANS[depth]
    name = f"vgg{depth}"
    pools = plan.count("M") + 1  # the head's average pool halves once more

    def build(input_shape, num_classes):
        if len(input_shape) != 3 or any(size is None or size < 2 ** pools for size in input_shape[:2]):
            raise ValueError(
                f"{name} takes images of at least {2 ** pools}x{2 ** pools} (height, width, channels): "
                f"its {pools} 2x2 poolings need it; got input_shape {tuple(input_shape)}."
            )
        inputs = keras.Input(shape=input_shape, name="image")
        x = inputs
        group, index = 1, 0
        for spec in plan:
            if spec == "M":
                x = keras.layers.MaxPooling2D(2, name=f"pool{group}")(x)
                group, index = group + 1, 0
                continue
            index += 1
            x = _conv(x, spec, 3, f"conv{group}_{index}", use_bias=True)
            x = _batch_norm(x, f"bn{group}_{index}")
            x = keras.layers.ReLU(name=f"relu{group}_{index}")(x)
        x = keras.layers.AveragePooling2D(2, name="avg_pool")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        return keras.Model(inputs, _output(x, num_classes), name=name)

    convs = len(plan) - plan.count("M")
    build.__doc__ = f"{name}: OpenLTH's cifar_vgg_{depth} ({convs} convs with BatchNorm, one Dense)."
    return build
