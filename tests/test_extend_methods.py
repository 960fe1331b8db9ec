"""Extending jetlib with a pretraining method as a contributor would: one class and one registration line,
pretrained for one step through the real ``jetlib.pretrain.pretrain``, then fine-tuned from its encoder
(``jetlib.finetune`` with ``--init``), with no change to jetlib's own files (the methods' registry)."""

import json
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jetlib import finetune as ft
from jetlib import methods
from jetlib import pretrain as pt
from jetlib.checkpoint import load_object
from jetlib.data.store import open_store
from jetlib.evaluate import evaluate
from jetlib.methods import register_method, unregister_method
from jetlib.methods.base import Method


@pytest.fixture
def cosine_method():
    """The toy method: a linear projection of each view, pulled together by cosine similarity."""

    @register_method("toy_cosine")
    class Cosine(Method):
        def __init__(self, encoder, params):
            super().__init__(encoder, params)
            self.projector = nn.Linear(encoder.num_features, 8)

        def forward(self, v1, v2):
            h1, h2 = self.features(v1, v2)
            return 1 - F.cosine_similarity(self.projector(h1), self.projector(h2)).mean()

    yield "toy_cosine"
    unregister_method("toy_cosine")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from tests.conftest import ingest_small, write_h5

    return ingest_small(tmp_path_factory.mktemp("extend_methods"), write_h5)


def test_a_registered_method_pretrains_and_its_encoder_fine_tunes(data, tmp_path, cosine_method):
    assert cosine_method in methods.METHODS
    enc_out = str(tmp_path / "pretrain")
    cfg = pt.make_config("tiny", method=cosine_method, epochs=1, max_steps_per_epoch=1, monitor_bank=0)
    final = pt.pretrain(data, enc_out, cfg, device="cpu")
    run = json.loads((tmp_path / "pretrain" / "run.json").read_text())
    assert run["method"] == {"name": "toy_cosine", "params": {}} and run["final"]["steps"] == 1 == final["steps"]
    assert 0 <= final["loss"] <= 2  # 1 - cos lies in [0, 2]
    encoder = load_object(open_store(enc_out), "encoder.pt", run["encoder"]["sha256"])["state_dict"]
    assert not any(k.startswith("projector") for k in encoder)  # the method's head stays with the method

    # linear probing keeps the features frozen: model.pt carries the toy method's encoder bit for bit
    lin = ft.finetune(data, str(tmp_path / "linear"), ft.make_config("tiny", mode="linear", epochs=1, patience=1),
                      init=enc_out, device="cpu")
    assert lin["training"]["epochs_run"] == 1 and lin["config"]["init"] == enc_out
    model = load_object(open_store(str(tmp_path / "linear")), "model.pt")["state_dict"]
    for k, v in encoder.items():
        assert torch.equal(model[k], v), k
    # fine-tuning trains from it for one epoch, recording where it started
    fin = ft.finetune(data, str(tmp_path / "finetune"), ft.make_config("tiny", mode="finetune", epochs=1,
                                                                        patience=1), init=enc_out, device="cpu")
    assert fin["training"]["epochs_run"] == 1 and fin["config"]["init"] == enc_out
    # its result is named by the method and the encoder: two methods' results never share a name
    result = evaluate(data, str(tmp_path / "finetune"), str(tmp_path / "results"), device="cpu")
    sha8 = run["encoder"]["sha256"][:8]
    assert result["origin"]["method"] == "toy_cosine"
    assert [p.name for p in (tmp_path / "results").iterdir()] == [f"cls-finetune-f1-s0-toy_cosine-p{sha8}.json"]


def test_the_toy_method_is_gone_after_teardown():
    assert "toy_cosine" not in methods.METHODS


def test_a_methods_own_search_is_what_tune_and_katib_search():
    """A method declares what `jetlib tune` searches besides the rate and weight decay (``search_space``) and
    what every trial holds fixed (``tune_fixed``) in its own class; Optuna's space and Katib's parameters both
    read it, and a method declaring neither is tuned on the optimiser alone."""
    from jetlib.tune import katib
    from jetlib.tune import study as ts

    @dataclass(frozen=True)
    class MarginParams:
        margin: float = 0.5
        hard: bool = False

    @register_method("toy_margin")
    class Margin(Method):
        Params = MarginParams
        tune_fixed = {"hard": True}

        @classmethod
        def search_space(cls, params):
            return {"margin": (params.margin / 5, params.margin * 2, False)}

    try:
        cfg = pt.make_config("tiny", method="toy_margin", method_params={"margin": 0.25})
        dims = ts.space("toy_margin", cfg)
        assert set(dims) == {"lr", "weight_decay", "margin"}
        assert (dims["margin"].low, dims["margin"].high, dims["margin"].log) == (0.05, 0.5, False)
        assert dims["lr"].low == pytest.approx(cfg.lr / 10) and dims["lr"].log
        assert ts.fixed_params("toy_margin") == {"hard": True}
        assert ts.settings("toy_margin", {"lr": 0.01, "margin": 0.3}) == {
            "lr": 0.01, "method_params": {"hard": True, "margin": 0.3}}
        assert set(katib.katib_space("toy_margin", cfg)) == {"lr", "weight_decay", "margin"}
    finally:
        unregister_method("toy_margin")
    # the built-in searches, as docs/tuning.md tables them
    assert set(ts.space("byol", pt.make_config("tiny", method="byol"))) == {"lr", "weight_decay", "base_momentum"}
    assert set(ts.space("simclr", pt.make_config("tiny"))) == {"lr", "weight_decay", "temperature"}
    assert ts.fixed_params("simclr") == {"learn_temperature": False} and ts.fixed_params("vicreg") == {}
    lam = ts.space("barlowtwins", pt.make_config("tiny", method="barlowtwins"))["lambd"]
    assert lam.high / lam.low == pytest.approx(100) and lam.log
