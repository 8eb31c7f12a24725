"""Mixed precision for the flows: `mixed_bfloat16`, Keras's policy, while a model is built.

    with precision.policy(config.mixed_precision):
        model = models.build(...)        # layers compute in bfloat16, variables stay float32

Variables (weights, masks, optimizer state) stay float32; layers compute in bfloat16, and
the registry adds a float32 cast of the logits (`models.build` does, under a mixed policy),
as Keras's mixed-precision guide advises, so the loss and the checks are in float32.
bfloat16 needs no loss scaling. `mixed_float16` does: Keras then wraps the optimizer in a
`LossScaleOptimizer`, whose scale IMP's optimizer reset between rounds would zero, so it is
refused until that is handled.
"""

import contextlib

from keras_lottery import compat

keras = compat.keras

POLICIES = ("mixed_bfloat16",)


def check(name):
    """Refuses a policy other than None (float32) or one of `POLICIES`.

    Raises:
      ValueError: naming the accepted values (and why not mixed_float16).
    """
    if name is None or name in POLICIES:
        return
    why = (" (it needs loss scaling, which the rounds' optimizer reset would undo; use mixed_bfloat16)"
           if name == "mixed_float16" else "")
    raise ValueError(f"mixed_precision must be unset (float32) or one of {POLICIES}; got {name!r}{why}.")


@contextlib.contextmanager
def policy(name):
    """Keras's global dtype policy is `name` (None: left as it is) inside the block, restored after."""
    check(name)
    if name is None:
        yield
        return
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
