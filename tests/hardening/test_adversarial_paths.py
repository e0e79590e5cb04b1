"""Issue 21, beyond the list: library calls with a device torch does not know, meta
tensors, and malformed Dask addresses, which raised raw torch errors, or hung for a
minute and printed a traceback, before."""
from __future__ import annotations

import copy

import pytest
from click.testing import CliRunner

from robustkit import attacks, models
from robustkit.cli import main
from robustkit.evaluate import evaluate
from robustkit.sweep.executors import make_executor


@pytest.fixture(scope="module")
def linear(digits_train):
    return models.create("linear", epochs=1).fit(digits_train.x, digits_train.y,
                                                 n_classes=10, seed=0)


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x", "meta"])
def test_unknown_devices_are_value_errors_naming_the_device(linear, digits_test, device):
    x, y = digits_test.x[:8], digits_test.y[:8]
    with pytest.raises(ValueError, match=f"device={device!r}"):
        evaluate(linear, "fgsm", x, y, eps=[0.1], device=device)
    with pytest.raises(ValueError, match=f"device={device!r}"):
        models.train("linear", "digits", epochs=1, device=device)


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "deepfool"])
def test_meta_inputs_and_meta_models_are_refused_in_one_line(linear, digits_test, attack):
    x, y = digits_test.x[:8], digits_test.y[:8]
    spec = attacks.get(attack)
    with pytest.raises(ValueError, match="x is a meta tensor"):
        spec.fn(linear, x.to("meta"), y.to("meta"), eps=0.1)
    with pytest.raises(ValueError, match="x is a meta tensor"):
        evaluate(linear, spec, x.to("meta"), y.to("meta"), eps=[0.1])
    skeleton = copy.deepcopy(linear).to("meta")
    with pytest.raises(ValueError, match="meta device"):
        spec.fn(skeleton, x, y, eps=0.1)
    with pytest.raises(ValueError, match="meta device"):
        evaluate(skeleton, spec, x, y, eps=[0.1])


@pytest.mark.parametrize(("address", "why"), [
    ("notanaddress", "missing port"), ("tcp://[::1", "invalid address"),
    ("http://127.0.0.1:8786", "unknown scheme 'http'"), ("tcp://127.0.0.1:99999", "port"),
    ("", "empty"), ("tcp://host:abc", "tcp://host:abc"),
])
def test_malformed_dask_addresses_fail_before_connecting(address, why, tmp_path,
                                                         monkeypatch):
    import distributed

    class Connect:
        def __init__(self, *args, **kwargs):
            raise AssertionError("a Client was made for a malformed address")

    monkeypatch.setattr(distributed, "Client", Connect)
    with pytest.raises(ValueError, match=why):
        make_executor(dask=address)
    spec = tmp_path / "s.toml"
    spec.write_text('[[datasets]]\nname = "digits"\n[[models]]\nfamily = "linear"\n'
                    '[[attacks]]\nattack = "fgsm"\n')
    res = CliRunner().invoke(main, ["sweep", str(spec), "--dask", address, "--out",
                                    str(tmp_path / "out")])
    assert res.exit_code == 2 and "--dask" in res.output and why in res.output
