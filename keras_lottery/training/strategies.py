"""Distribution strategies by name, as TF Model Garden's `--distribution_strategy` flag names them.

    strategy = strategies.get("mirrored")
    with strategy.scope():
        model = ...  # built and compiled in the scope; `model.fit` then splits each batch across replicas

Names: 'default' (TensorFlow's default strategy: one device, no distribution), 'one_device'
(the first GPU, else the CPU), 'mirrored' (synchronous data parallelism over every GPU, or over
every logical CPU device where there is no GPU: that is how the tests run two replicas on one
machine, after `split_cpu(2)`), 'multi_worker_mirrored' (the same across the machines that
`TF_CONFIG` names) and 'tpu' (the TPU that `tpu_address`, else the `TPU_NAME` environment
variable, names; else the local one, as on a TPU VM).

With several replicas each computes the gradient of its share of the batch and the shares are
summed: in float that is another order of additions than one device summing the whole batch,
so weights drift from a one-device run by rounding (about 1e-7 relative per step), and a mask
entry whose weight sits at the threshold can differ after many steps. Everything Python
computes from the weights (masks, flips, rewinds) is computed once, in the cross-replica
context, from the one value all replicas share.
"""

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")


def check_name(name):
    """Refuses an unknown strategy name.

    Raises:
      ValueError: naming the known ones.
    """
    if name not in STRATEGIES:
        raise ValueError(f"distribution_strategy must be one of {STRATEGIES}; got {name!r}.")


def split_cpu(devices):
    """Splits the CPU into `devices` logical devices (for 'mirrored' on a machine without GPU).

    Must run before TensorFlow initializes its devices (before the first op).

    Raises:
      ValueError: `devices` < 1, or TensorFlow is already initialized with another number.
    """
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(f"cpu_devices must be an integer >= 1; got {devices!r}.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    except RuntimeError as error:  # already initialized
        existing = len(tf.config.list_logical_devices("CPU"))
        if existing != devices:
            raise ValueError(
                f"cannot split the CPU into {devices} devices: TensorFlow already runs with {existing}. Split it "
                "before anything else uses TensorFlow (the apps do it first, from --cpu_devices)."
            ) from error


_CREATED = {}  # name -> strategy: one per process, as TensorFlow's collectives and TPU system allow


def get(name="default", tpu_address=None):
    """The `tf.distribute.Strategy` called `name` (see the module docstring), made once per process.

    'multi_worker_mirrored' must be made before TensorFlow runs any op: the apps call this
    first thing (`training_flags.set_up_devices`), and the flows get the same object back.

    Args:
      name: one of `STRATEGIES`.
      tpu_address: the TPU's address for 'tpu' (None: `TPU_NAME`, else the local TPU).

    Returns:
      A strategy; enter its `scope()` to build and compile the model.

    Raises:
      ValueError: unknown name, 'multi_worker_mirrored' without a valid `TF_CONFIG`, or no TPU.
    """
    check_name(name)
    if name == "default":
        return tf.distribute.get_strategy()
    if name not in _CREATED:
        _CREATED[name] = _create(name, tpu_address)
    return _CREATED[name]


def _create(name, tpu_address):
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy([device.name for device in gpus])
        # CPU devices: through one device, not collective ops, whose launches the replicas order
        # differently once synchronized BatchNorm adds its own (the run fails with "Shape mismatch
        # in the collective instance"); measured here with ResNet-20 on 2 CPU devices.
        return tf.distribute.MirroredStrategy([device.name for device in tf.config.list_logical_devices("CPU")],
                                              cross_device_ops=tf.distribute.ReductionToOneDevice())
    if name == "multi_worker_mirrored":
        _check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address or os.environ.get("TPU_NAME", ""))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise ValueError(f"distribution_strategy='tpu' found no TPU ({error}). Run on a TPU machine, or pick "
                         f"another of {STRATEGIES}.") from error
    return tf.distribute.TPUStrategy(resolver)


def _check_tf_config():
    """Refuses 'multi_worker_mirrored' without a `TF_CONFIG` naming the cluster and this worker."""
    text = os.environ.get("TF_CONFIG")
    fix = ('set TF_CONFIG to e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
           '"task": {"type": "worker", "index": 0}} on each worker')
    if not text:
        raise ValueError(f"distribution_strategy='multi_worker_mirrored' needs the cluster in TF_CONFIG: {fix}.")
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        index = config["task"]["index"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"TF_CONFIG is not a cluster description ({error!r}): {fix}.") from error
    if not isinstance(index, int) or not 0 <= index < len(workers):
        raise ValueError(f"TF_CONFIG's task index {index!r} is not among its {len(workers)} workers: {fix}.")


def is_chief(strategy):
    """True on the worker that writes the run folder: every process but multi-worker's non-chiefs.

    TF_CONFIG's worker 0 is the chief when the cluster has no 'chief' task (as Keras's
    multi-worker tutorial sets it up).
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())

