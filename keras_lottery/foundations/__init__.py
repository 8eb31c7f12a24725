"""Helpers every layer may use; imports nothing else of keras_lottery.

* `validation`: argument checks with one wording (`check_int`).
* `files`: atomic writes (temporary file, fsync, rename) of JSON, text, bytes and .npz.
* `tensorboard`: TensorBoard events (scalars in one event, HParams sessions with their
  status); the only one that imports TensorFlow.
"""
