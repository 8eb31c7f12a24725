"""Tests of `TrainingConfig`'s recipe fields: filled from the model's entry, each bad value refused."""

import dataclasses

import pytest

from keras_lottery import models
from keras_lottery import training
from keras_lottery.models import registry

NEUTRAL = dict(momentum=0.0, nesterov=False, weight_decay=0.0, weight_decay_mode="l2", lr_schedule="constant",
               lr_milestones="", lr_gamma=0.1, warmup="")


@pytest.fixture
def sgd_model(monkeypatch):
    """A registry entry with OpenLTH's CIFAR recipe (SGD, momentum, decay, step schedule, warmup)."""
    spec = registry.ModelSpec(models.lenet_300_100, "sgd", 0.1, 128, None, epochs=160, momentum=0.9,
                              weight_decay=1e-4, lr_schedule="step", lr_milestones="80ep,120ep", warmup="5ep")
    monkeypatch.setitem(registry.MODELS, "openlth_like", spec)
    return "openlth_like"


LTH_MODELS = ("lenet_300_100", "conv2", "conv4", "conv6", "conv2_bn", "conv4_bn")


@pytest.mark.parametrize("name", LTH_MODELS)
def test_the_lth_models_resolve_as_before_with_the_neutral_recipe(name):
    spec = registry.MODELS[name]
    config = dataclasses.asdict(training.TrainingConfig(model=name).resolved())
    before = dict(output_dir="runs/run", dataset="fashion_mnist", data_dir=None, model=name, batch_size=spec.batch_size,
                  optimizer="adam", learning_rate=spec.learning_rate, seed=0, train_examples=None,
                  validation_examples=5000, verbose=1, distribution_strategy="default", augment=None,
                  freeze_batch_norm=False, freeze_output=False, mixed_precision=None)
    assert config == {**before, **NEUTRAL}
    assert training.LEGACY_RECIPE == NEUTRAL  # what a run folder saved before these fields counts as


def test_the_recipe_comes_from_the_model_entry_and_resolving_again_changes_nothing(sgd_model):
    config = training.TrainingConfig(model=sgd_model).resolved()
    assert (config.optimizer, config.momentum, config.weight_decay, config.lr_schedule, config.lr_milestones,
            config.warmup) == ("sgd", 0.9, 1e-4, "step", "80ep,120ep", "5ep")
    assert config.resolved() == config
    assert training.TrainingConfig().resolved().resolved() == training.TrainingConfig().resolved()
    given = training.TrainingConfig(model=sgd_model, momentum=0.5, nesterov=True, lr_milestones="100ep").resolved()
    assert (given.momentum, given.nesterov, given.lr_milestones) == (0.5, True, "100ep")


def test_entry_settings_for_another_choice_are_not_taken(sgd_model):
    adam = training.TrainingConfig(model=sgd_model, optimizer="adam").resolved()
    assert (adam.momentum, adam.nesterov) == (0.0, False)  # not the entry's SGD momentum 0.9
    momentum = training.TrainingConfig(model=sgd_model, optimizer="momentum").resolved()
    assert momentum.momentum == 0.9 and momentum.resolved() == momentum
    cosine = training.TrainingConfig(model=sgd_model, lr_schedule="cosine").resolved()
    assert cosine.lr_milestones == "" and cosine.warmup == "5ep"


@pytest.mark.parametrize("fields, message", [
    (dict(momentum=1.0), r"--momentum must be a number in \[0, 1\); got 1.0"),
    (dict(momentum=-0.1), r"--momentum must be a number in \[0, 1\); got -0.1"),
    (dict(momentum="0.9"), r"--momentum must be a number in \[0, 1\); got '0.9'"),
    (dict(nesterov=1), "--nesterov must be True or False; got 1"),
    (dict(momentum=0.0, nesterov=True), r"--nesterov needs --momentum > 0"),
    (dict(weight_decay=-1e-4), "--weight_decay must be a finite number >= 0; got -0.0001"),
    (dict(weight_decay=float("nan")), "--weight_decay must be a finite number >= 0; got nan"),
    (dict(weight_decay_mode="adamw"), r"--weight_decay_mode must be one of \('l2', 'decoupled'\); got 'adamw'"),
    (dict(lr_schedule="linear"), r"--lr_schedule must be one of \('constant', 'step', 'cosine'\); got 'linear'"),
    (dict(lr_schedule="step", lr_milestones=""), "--lr_schedule='step' needs at least one milestone"),
    (dict(lr_schedule="step", lr_milestones="80ep,40ep"), "--lr_milestones must be increasing; got '80ep,40ep'"),
    (dict(lr_schedule="step", lr_milestones="500it,500"), "--lr_milestones must be increasing; got '500it,500'"),
    (dict(lr_schedule="step", lr_milestones="80ep,,120ep"), "--lr_milestones has an empty length in '80ep,,120ep'"),
    (dict(lr_schedule="step", lr_milestones="80 epochs"), "--lr_milestones must be a length such as '80ep'"),
    (dict(lr_milestones="80ep"), "--lr_milestones='80ep' has no effect with --lr_schedule='constant'"),
    (dict(lr_schedule="cosine", lr_milestones="80ep"),
     "--lr_milestones='80ep' has no effect with --lr_schedule='cosine'"),
    (dict(lr_gamma=0.0), r"--lr_gamma must be a number in \(0, 1\]; got 0.0"),
    (dict(lr_gamma=2), r"--lr_gamma must be a number in \(0, 1\]; got 2"),
    (dict(warmup="5 epochs"), "--warmup must be a length such as '80ep'.*got '5 epochs'"),
    (dict(warmup=5), "--warmup must be a length such as '5ep' or '500it'.*got 5"),
])
def test_bad_recipe_values_are_refused_naming_the_flag_and_the_value(fields, message):
    with pytest.raises(ValueError, match=message):
        training.TrainingConfig(**{"optimizer": "sgd", **fields}).resolved()


@pytest.mark.parametrize("optimizer, fields, message", [
    ("adam", dict(momentum=0.9), r"--momentum=0.9 has no effect with --optimizer='adam': use --optimizer=sgd"),
    ("adam", dict(nesterov=True), "--nesterov=True has no effect with --optimizer='adam'"),
    ("momentum", dict(momentum=0.5),
     r"--momentum=0.5 has no effect with --optimizer='momentum' \(SGD with momentum 0.9\)"),
    ("momentum", dict(nesterov=True), "--nesterov=True has no effect with --optimizer='momentum'"),
])
def test_momentum_is_refused_where_the_optimizer_fixes_it(optimizer, fields, message):
    with pytest.raises(ValueError, match=message):
        training.TrainingConfig(optimizer=optimizer, **fields).resolved()


def test_mixed_units_pass_resolution_and_are_checked_with_the_epoch_length():
    config = training.TrainingConfig(optimizer="sgd", lr_schedule="step", lr_milestones="2ep,500it").resolved()
    assert training.schedule_for(config, 100, 1000).milestones == [200, 500]
    with pytest.raises(ValueError, match="--lr_milestones must be increasing; '2ep,500it' is"):
        training.schedule_for(config, 300, 1000)
