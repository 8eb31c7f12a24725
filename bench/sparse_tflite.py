r"""Structured sparsity in TFLite: unstructured, block and 2:4 masks, dense file vs sparse encoding.

    python -m bench.sparse_tflite

LeNet-300-100 (Fashion-MNIST shape) is pruned with keras_lottery's mask computation —
unstructured at 50%, blocks of (1, 4) at 50%, 2:4 (50% by construction), and unstructured
at 90% — and each stripped model is converted twice, the plain float32 file and one with
TFLite's sparse tensor encoding (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`,
`export_tflite(..., sparse_encoding=True)`). Printed per file: raw and gzip size,
LiteRT `invoke()` latency at batch 1 (median of interleaved repeats, 1 thread) and the
largest output difference against Keras on 64 inputs. The weights are the initialization
pruned, not trained: sizes, speed and parity do not depend on the values.
"""

import argparse
import statistics
import tempfile

import numpy as np

import keras_lottery as kl
from keras_lottery import models
from keras_lottery.export import tflite

VARIANTS = {
    "unstructured 50%": dict(sparsity=0.5),
    "blocks (1, 4) 50%": dict(sparsity=0.5, block_size=(1, 4)),
    "2:4 (50%)": dict(sparsity=0.5, sparsity_m_by_n=(2, 4)),
    "unstructured 90%": dict(sparsity=0.9),
}


def pruned_lenet(sparsity, **pattern):
    model = kl.prune_low_magnitude(models.build("lenet_300_100", (28, 28, 1), 10, seed=0),
                                   pruning_schedule=kl.OneShot(0.0), **pattern)
    kl.prune(model, sparsity)
    return kl.strip_pruning(model)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved latency repeats")
    parser.add_argument("--latency_runs", type=int, default=300, help="invoke() calls per repeat")
    args = parser.parse_args()
    inputs = np.random.default_rng(0).random((64, 28, 28, 1), dtype=np.float32)
    files, parity = {}, {}
    for name, settings in VARIANTS.items():
        settings = dict(settings)
        model = pruned_lenet(settings.pop("sparsity"), **settings)
        reference = model.predict(inputs, verbose=0)
        for encoding in (False, True):
            content = tflite.convert(model, sparse_encoding=encoding)
            key = (name, encoding)
            files[key] = content
            parity[key] = float(np.max(np.abs(tflite.predict(content, inputs) - reference)))
    latencies = {key: [] for key in files}
    for _ in range(args.repeats):
        for key, content in files.items():
            latencies[key].append(tflite.measure_content(content, inputs[0], 1, args.latency_runs).latency_median_us)
    print("| mask | encoding | raw bytes | gzip bytes | latency (us, median) | vs dense file of the mask | "
          "max abs diff vs Keras |")
    print("|---|---|---|---|---|---|---|")
    for (name, encoding), content in files.items():
        measured = tflite.measure_content(content, inputs[0], 1, 10)
        dense = statistics.median(latencies[(name, False)])
        latency = statistics.median(latencies[(name, encoding)])
        print(f"| {name} | {'sparse' if encoding else 'dense'} | {measured.raw_bytes:,} | {measured.gzip_bytes:,} | "
              f"{latency:.1f} | size {measured.raw_bytes / len(files[(name, False)]):.3f}x, latency "
              f"{latency / dense:.3f}x | {parity[(name, encoding)]:.2e} |")
    print(f"Reproduce: python -m bench.sparse_tflite --repeats={args.repeats} --latency_runs={args.latency_runs}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
