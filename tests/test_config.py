"""jetlib.config: defaults, then a named preset, then explicit values; strings typed by the field; unknown
keys and unreadable values refused in one line; ``auto`` decided in one place; every step's presets resolve."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from jetlib import baseline, finetune, pretrain
from jetlib.config import override, parse_sets, resolve, resolve_preset
from jetlib.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    widths: tuple[int, ...] = (4, 8)
    dropout: float = 0.1


@dataclass(frozen=True)
class Toy:
    preset: str = "gpu"
    epochs: int = 10
    lr: float | None = None
    amp: bool = False
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self):
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")


PRESETS = {"tiny": {"epochs": 2, "inner": Inner(widths=(2,))}, "gpu": {}}


def test_values_override_the_preset_which_overrides_the_defaults():
    assert resolve(Toy(), PRESETS, "gpu", {}) == Toy()
    tiny = resolve(Toy(), PRESETS, "tiny", {})
    assert tiny == Toy(preset="tiny", epochs=2, inner=Inner(widths=(2,)))  # the preset's name is recorded
    both = resolve(Toy(), PRESETS, "tiny", {"epochs": 5, "inner.dropout": "0.5"})
    assert both == Toy(preset="tiny", epochs=5, inner=Inner(widths=(2,), dropout=0.5))  # nested: the rest kept


def test_strings_are_read_as_each_fields_type():
    cfg = override(Toy(), {"epochs": "7", "lr": "3e-4", "amp": "yes", "inner.widths": "8, 8,16"})
    assert cfg == Toy(epochs=7, lr=3e-4, amp=True, inner=Inner(widths=(8, 8, 16)))
    assert override(cfg, {"lr": "none", "amp": "off"}) == Toy(epochs=7, amp=False, inner=Inner(widths=(8, 8, 16)))
    assert override(Toy(), {"epochs": 3}).epochs == 3  # a typed value is taken as it is


@pytest.mark.parametrize("values,message", [
    ({"epoch": "3"}, "unknown setting 'epoch' (known: preset, epochs, lr, amp, inner)"),
    ({"inner.width": "3"}, "unknown setting 'inner.width' (known: widths, dropout)"),
    ({"epochs": "ten"}, "epochs: must be a valid integer, unable to parse string as an integer, got 'ten'"),
    ({"amp": "maybe"}, "amp: must be a valid boolean, unable to interpret input, got 'maybe'"),
    ({"inner.widths": "4,x"},  # nested: the field's dotted name and the entry
     "inner.widths[1]: must be a valid integer, unable to parse string as an integer, got 'x'"),
    ({"epochs": "0"}, "epochs must be at least 1, got 0"),  # the dataclass's own check, as a ConfigError
])
def test_bad_values_are_one_config_error(values, message):
    with pytest.raises(ConfigError) as e:
        resolve(Toy(), PRESETS, "tiny", values)
    assert str(e.value) == message


def test_an_unknown_preset_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"^unknown preset 'huge': choose one of tiny, gpu$"):
        resolve(Toy(), PRESETS, "huge", {})


def test_parse_sets_splits_at_the_first_equals_sign():
    assert parse_sets(["a=1", " model.widths = 4,8 ", "expr=x=y"]) == {"a": "1", "model.widths": "4,8", "expr": "x=y"}
    assert parse_sets(None) == {} and parse_sets([]) == {}
    for bad in ("novalue", "=3"):
        with pytest.raises(ConfigError, match=f"--set expects field=value, got '{bad}'"):
            parse_sets([bad])


def test_auto_is_gpu_only_where_cuda_is_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_preset("auto") == "gpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_preset("auto") == "cpu"
    assert [resolve_preset(p) for p in ("tiny", "cpu", "gpu")] == ["tiny", "cpu", "gpu"]  # never touched


@pytest.mark.parametrize("step", [pretrain, finetune, baseline], ids=lambda m: m.__name__.split(".")[-1])
def test_every_preset_of_every_step_resolves_to_its_values(step):
    assert set(step.PRESETS) == {"tiny", "cpu", "gpu"}
    for name, values in step.PRESETS.items():
        cfg = step.make_config(name)
        assert cfg.preset == name
        for key, value in values.items():
            if key != "method_params":  # pretraining keeps those the chosen method has (tests/test_methods.py)
                assert getattr(cfg, key) == value, (name, key)
    assert step.make_config("tiny", epochs=1, seed=4).epochs == 1 and step.make_config("tiny", seed=4).seed == 4
    with pytest.raises(ConfigError, match="unknown setting 'epoch'"):
        step.make_config("tiny", epoch=1)
