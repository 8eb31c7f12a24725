"""The command-line apps: absl shells over one library call each (docs/architecture.md)."""

import os

# The apps show TensorFlow's warnings and errors, not its INFO lines (start-up noise such as
# "oneDNN custom operations are on"); set TF_CPP_MIN_LOG_LEVEL=0 to see those too. Here, because
# this runs before any app module imports TensorFlow (keras_lottery/compat/keras2.py).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
