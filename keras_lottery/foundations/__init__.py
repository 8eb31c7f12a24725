"""Helpers every layer may use; imports nothing else of keras_lottery (nor TensorFlow).

* `validation`: argument checks with one wording (`check_int`).
* `files`: atomic writes (temporary file, fsync, rename) of JSON, text, bytes and .npz.
"""
