"""Writing TensorBoard events: scalars in one event, and HParams sessions that say how they ended.

Shared by the pruning summaries (`sparsity.summaries`), the training curves
(`training.summaries`) and the experiment flows, so that each TensorBoard run has one
writer and the HParams dashboard gets the same columns from every flow.
"""

import numpy as np
import tensorflow as tf
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import summary as hparams_summary
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.util import tensor_util

# Settings that say where or how loudly a run works, not what it computes: as HParams columns
# they differ between any two runs and take the dashboard's few default columns (it shows the
# first 5, those that differ between runs first).
NOT_HYPERPARAMETERS = ("output_dir", "data_dir", "verbose", "backup_seconds")

STATUSES = {"success": api_pb2.STATUS_SUCCESS, "failure": api_pb2.STATUS_FAILURE,
            "running": api_pb2.STATUS_RUNNING}


def writer_for(log_dir_or_writer):
    """(writer, whether the caller created it): a `tf.summary` writer for a folder, or the writer given.

    Two writers on one folder make two event files that TensorBoard reads one after the
    other (a live view can miss points of the older one), so callbacks that log into one
    run share its writer.
    """
    if isinstance(log_dir_or_writer, tf.summary.SummaryWriter):
        return log_dir_or_writer, False
    return tf.summary.create_file_writer(str(log_dir_or_writer)), True


def write_scalars(scalars, step):
    """Writes several scalars at one step to the default summary writer, as one event.

    What `tf.summary.scalar` writes for each (the same tag, scalar plugin metadata and
    float32 value, so TensorBoard shows the same charts), in one summary op instead of
    one op each: ~0.4 ms per scalar saved at every log.

    Args:
      scalars: dict tag -> number.
      step: the step of the event.
    """
    if not scalars:
        return
    summary = summary_pb2.Summary()
    metadata = scalar_metadata.create_summary_metadata(display_name=None, description=None)
    for tag, value in scalars.items():
        summary.value.add(tag=tag, metadata=metadata, tensor=tensor_util.make_tensor_proto(np.float32(value)))
    tf.summary.experimental.write_raw_pb(tf.constant(summary.SerializeToString()), step=step)


def hparams_values(config):
    """The HParams columns of a config: unset (None) values and `NOT_HYPERPARAMETERS` left out.

    An unset value written as the string "None" turns a numeric column into text (its
    range filter is gone); left out, the run shows an empty cell. Values that are not
    bool, int, float or str are written as their string.
    """
    return {key: value if isinstance(value, (bool, int, float, str)) else str(value)
            for key, value in config.items() if value is not None and key not in NOT_HYPERPARAMETERS}


def start_hparams_session(log_dir, config, trial_id):
    """Writes a run's config as an HParams session named `trial_id` (e.g. the run folder's name).

    Args:
      log_dir: the TensorBoard run whose scalars are the session's metrics.
      config: dict of settings (see `hparams_values`).
      trial_id: the session's name in the dashboard (TensorBoard's default is a hash).
    """
    from tensorboard.plugins.hparams import api as hparams_api  # imported here: only this needs it

    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default(step=0):
        hparams_api.hparams(hparams_values(config), trial_id=str(trial_id))
    writer.close()


def end_hparams_session(log_dir, status="success"):
    """Writes the end of a run's HParams session: without it the dashboard says "Unknown".

    Args:
      log_dir: the run's `start_hparams_session` folder.
      status: 'success', 'failure' or 'running'.

    Raises:
      ValueError: an unknown status.
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {sorted(STATUSES)}; got {status!r}.")
    summary = hparams_summary.session_end_pb(STATUSES[status])
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default(step=0):
        tf.summary.experimental.write_raw_pb(tf.constant(summary.SerializeToString()), step=0)
    writer.close()
