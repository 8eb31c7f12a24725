r"""Prepares TFDS's CIFAR-10 (or CIFAR-100) offline, from CIFAR's own binary files.

    python -m apps.prepare_data_main --dataset=cifar10 \
        --manual_dir=<folder with cifar-10-binary.tar.gz or cifar-10-batches-bin/> \
        --data_dir=<TFDS data_dir>

Download `cifar-10-binary.tar.gz` (the binary version) from
https://www.cs.toronto.edu/~kriz/cifar.html on any machine and copy it over. TFDS's own
builder writes the dataset, as it would after a download; then train with the same
`--dataset` and `--data_dir`. A dataset already prepared there is kept as it is.
"""

from absl import app
from absl import flags
from absl import logging

from apps import app_errors
from keras_lottery import data

FLAGS = flags.FLAGS

flags.DEFINE_string("dataset", "cifar10", f"Dataset to prepare: {', '.join(data.OFFLINE_DATASETS)}.")
flags.DEFINE_string("manual_dir", None,
                    "Folder holding CIFAR's binary archive (cifar-10-binary.tar.gz, cifar-100-binary.tar.gz) or the "
                    "folder it extracts to (cifar-10-batches-bin/, cifar-100-binary/).")
flags.DEFINE_string("data_dir", None, "TFDS data_dir to prepare the dataset in (default: TFDS's, ~/tensorflow_datasets).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.info("preparing %s in %s from %s", FLAGS.dataset, FLAGS.data_dir or "the default TFDS data_dir",
                 FLAGS.manual_dir)
    prepared = data.prepare_offline(FLAGS.dataset, FLAGS.data_dir, FLAGS.manual_dir)
    data_dir = f" --data_dir={FLAGS.data_dir}" if FLAGS.data_dir else ""
    logging.info("done: %s is prepared in %s; train with --dataset=%s%s", FLAGS.dataset, prepared, FLAGS.dataset,
                 data_dir)


if __name__ == "__main__":
    app.run(app_errors.one_line_errors(main))
