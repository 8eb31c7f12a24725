"""Keras 2 and Keras 3: the bottom layer, which imports nothing else of keras_lottery.

* `keras2`: sets `TF_USE_LEGACY_KERAS` before TensorFlow loads, gives `keras` (tf_keras,
  the Keras 2 that tfmot needs) and the checks every public function runs first.
* `keras3_conversion`: `to_tf_keras`, a Keras 3 Sequential/functional model rebuilt in
  tf_keras and checked on random inputs.
"""

# keras2 must come first: it sets the environment variable before TensorFlow is imported.
from keras_lottery.compat.keras2 import KERAS3_MESSAGE, check_model, check_not_keras3, is_keras3_object, keras  # noqa: F401,I001
from keras_lottery.compat.keras3_conversion import Keras3ConversionError, Keras3ConversionWarning, to_tf_keras  # noqa: F401
