"""The estimator contract, checked on every registered model."""

import numpy as np
import pytest

from perturbot import models
from perturbot.models.base import NotFittedError, PerturbationModel

TINY = {
    "cellot": {"n_iters": 4, "eval_every": 2, "batch_size": 16},
    "w1ot": {"n_iters": 4, "eval_every": 2, "batch_size": 16},
    "cae": {"n_iters": 4, "eval_every": 2, "hidden_units": [8], "latent_dim": 2, "batch_size": 16},
    "otfm": {"n_iters": 4, "eval_every": 2, "batch_size": 16},
}


@pytest.fixture
def populations():
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, 3)).astype(np.float32), rng.normal(loc=1.0, size=(40, 3)).astype(np.float32)


@pytest.mark.parametrize("name", models.available())
def test_contract(name, populations, tmp_path):
    source, target = populations
    cls = models.get(name)
    defaults = cls.default_params()
    assert "seed" in defaults and "device" in defaults
    model = cls(**{**TINY.get(name, {}), "device": "cpu"})
    assert model.get_params()["seed"] == 0
    with pytest.raises(NotFittedError):
        model.transport(source)
    assert model.fit(source, target) is model
    out = model.transport(source)
    assert out.shape == source.shape and np.isfinite(out).all()
    with pytest.raises(ValueError, match="3 features"):
        model.transport(source[:, :2])
    bad = source.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(bad, target)
    # a model built from its class (not through the registry) saves under its registry name
    model.save(tmp_path / name)
    loaded = PerturbationModel.load(tmp_path / name)
    assert type(loaded) is cls
    np.testing.assert_array_equal(loaded.transport(source), out)


@pytest.mark.parametrize("name", [n for n in models.available() if models.get(n).multi_perturbation])
def test_one_error_for_a_perturbation_not_named_or_not_trained(name, populations):
    from perturbot.models.base import PerturbationError

    source, target = populations
    model = models.get(name)(**{**TINY.get(name, {}), "device": "cpu"})
    model.fit_many(source, {"a": target, "b": target + 1.0})
    with pytest.raises(PerturbationError, match="pass perturbation= one of a, b"):
        model.transport(source)
    with pytest.raises(PerturbationError, match="unknown perturbation 'c'; known: a, b"):
        model.transport(source, perturbation="c")
    assert issubclass(PerturbationError, KeyError) and issubclass(PerturbationError, ValueError)


def test_every_class_declares_its_registry_name_and_lookup_changes_nothing():
    for name in models.available():
        cls = models.get(name)
        assert cls.name == name and models.name_of(cls) == name
    # a class registered at run time without a name keeps none: get() reads, never writes
    models.register("identity_alias", "perturbot.models.simple:Identity")
    try:
        assert models.get("identity_alias").name == "identity"
        assert models.get("identity").name == "identity"
    finally:
        models._REGISTRY.pop("identity_alias")
        models._REGISTERED_AT_RUN_TIME.discard("identity_alias")
