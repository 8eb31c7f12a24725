"""Mixed bfloat16: layers compute in bfloat16, variables and logits stay float32, the policy is restored."""

import pytest

import keras_lottery as kl
from keras_lottery import data
from keras_lottery.experiments import imp
from keras_lottery.sparsity import wrappers
from keras_lottery.training import precision

keras = kl.keras


def test_a_model_built_under_the_policy_computes_in_bfloat16_with_float32_logits(tiny_fashion):
    config = imp.ImpConfig(data_dir=tiny_fashion, iterations=20, batch_size=20, validation_examples=100,
                           mixed_precision="mixed_bfloat16").resolved()
    splits = data.load("fashion_mnist", tiny_fashion, validation_examples=100)
    model = imp.build_model(config, splits, 20)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the build
    kernels = [layer for layer in model.layers if hasattr(layer, "layer")]
    assert kernels and all(layer.layer.compute_dtype == "bfloat16" for layer in kernels)
    assert all(weight.dtype == "float32" for _, _, weight, _ in wrappers.pruning_entries(model))
    assert model.layers[-1].name == "logits" and model(splits.test_x[:2]).dtype == "float32"


def test_imp_runs_in_mixed_bfloat16_and_learns(tiny_fashion, tmp_path):
    summary = imp.run(imp.ImpConfig(output_dir=str(tmp_path), data_dir=tiny_fashion, rounds=1, iterations=60,
                                    batch_size=20, validation_examples=100, evaluations_per_round=2, verbose=0,
                                    mixed_precision="mixed_bfloat16"))
    assert summary["rounds"][1]["weights_remaining"] < 1 and summary["rounds"][0]["test_accuracy"] > 0.3
    assert keras.mixed_precision.global_policy().name == "float32"


def test_float16_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="needs loss scaling.*use mixed_bfloat16"):
        precision.check("mixed_float16")
    with pytest.raises(ValueError, match="mixed_precision must be unset"):
        imp.ImpConfig(mixed_precision="fp8").resolved()
