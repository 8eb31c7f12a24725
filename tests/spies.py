"""Spies the tests of the resumable analyses share (shift, fusion sweep)."""

from keras_lottery.experiments import run_models


def count_run_model_loads(monkeypatch):
    """From now on, records (run_dir, round_index) of every `run_models.load_run_model` call; returns the list.

    The analyses call it as `run_models.load_run_model`, so patching the module's attribute sees them all.
    """
    calls = []
    original = run_models.load_run_model

    def counted(*arguments, **keywords):
        calls.append(arguments[:2])
        return original(*arguments, **keywords)

    monkeypatch.setattr(run_models, "load_run_model", counted)
    return calls
