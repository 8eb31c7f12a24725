"""Models by name, each with its training recipe.

* `registry`: `ModelSpec`, `MODELS`, `build(name, ...)`, `get(name)`.
* `lth`: the LTH paper's networks (LeNet-300-100, Conv-2/4/6 and their BatchNorm variants).
* `cifar`: OpenLTH's CIFAR ResNets (`resnet(depth, width)`) and BatchNorm VGGs (`vgg(depth)`).
* `scaling`: width scaling (`scale_width`) and RigL's Small-Dense baseline (`small_dense`,
  `width_for_parameters`, `kernel_count`).
"""

from keras_lottery.models.cifar import resnet, vgg  # noqa: F401
from keras_lottery.models.lth import conv_net, lenet_300_100  # noqa: F401
from keras_lottery.models.registry import MODELS, ModelSpec, build, get  # noqa: F401
from keras_lottery.models.scaling import kernel_count, scale_width, small_dense, width_for_parameters  # noqa: F401
