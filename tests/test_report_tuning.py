"""The report's "The recipe each method ran" and "Tuning": values equal the records, the plot, refused records.

The records are written by the real writers: ``recipe.json`` by :func:`jetlib.tune.recipe.recipe_doc` (or a real
``jetlib tune``), ``trials.json`` by :func:`jetlib.tune.study.history` over an Optuna journal, a pretraining's
``run.json`` config by :func:`jetlib.pretrain.make_config` (or a real pretraining). The run folder holds them where
the pipeline's tune step puts them: ``RUN/tune/<method>/recipe.json`` and ``RUN/tune/<method>/trials.json``.
"""

import base64
import json
import re
from dataclasses import asdict
from html import escape
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial

from jetlib import methods, records
from jetlib.pretrain import make_config
from jetlib.report import build_report
from jetlib.report.budget import HTML_LIMIT, MARKDOWN_LIMIT
from jetlib.report.tuning import final_value
from jetlib.schemas.records import MAX_TRIALS
from jetlib.study import pretrain_dir
from jetlib.tune import study as ts
from jetlib.tune.recipe import read_recipe, recipe_doc
from tests.report.fake import fake_result, write_results

DIMS = {"lr": FloatDistribution(0.1, 10, log=True), "weight_decay": FloatDistribution(1e-6, 1e-4, log=True),
        "base_momentum": FloatDistribution(0.9, 0.999)}
TRIALS = [  # (state, value, per-epoch values, params)
    (TrialState.COMPLETE, 0.61, {0: 0.55, 1: 0.61}, {"lr": 1.5, "weight_decay": 2e-5, "base_momentum": 0.95}),
    (TrialState.PRUNED, None, {0: 0.31}, {"lr": 8.0, "weight_decay": 1e-6, "base_momentum": 0.91}),
    (TrialState.FAIL, None, {}, {"lr": 9.5, "weight_decay": 5e-5, "base_momentum": 0.99}),
    (TrialState.COMPLETE, 0.72, {0: 0.6, 1: 0.72}, {"lr": 0.7, "weight_decay": 3e-6, "base_momentum": 0.97}),
]
HOSTILE = "<img src=x onerror=alert(1)>](http://evil/x.png)$x^2$"


def write_search(out: Path) -> list[dict]:
    """An Optuna journal holding TRIALS (complete, pruned, failed) in ``out``; returns history(out) as JSON reads it
    back (epoch keys become text, as in trials.json)."""
    out.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(out / "study.journal")))
    study = optuna.create_study(study_name="jetlib-byol", storage=storage, direction="maximize")
    for state, value, epochs, params in TRIALS:
        study.add_trial(create_trial(state=state, value=value, intermediate_values=epochs, params=params,
                                     distributions=DIMS))
    return json.loads(json.dumps(ts.history(str(out))))


def tune_folder(run: Path, method: str, recipe: dict | bytes | None, trials: list | bytes | None) -> Path:
    """``RUN/tune/<method>/`` with the files given (bytes as they are; None: left out)."""
    here = run / "tune" / method
    here.mkdir(parents=True, exist_ok=True)
    for name, doc in (("recipe.json", recipe), ("trials.json", trials)):
        if doc is not None:
            (here / name).write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc, indent=1).encode())
    return here


def byol_recipe(trials: list[dict]) -> dict:
    """The recipe jetlib tune writes for the best complete trial of ``trials`` (jetlib.tune.study._finish)."""
    best = max((t for t in trials if t["state"] == "complete"), key=lambda t: t["value"])
    return recipe_doc("byol", ts.settings("byol", best["params"]), preset="tiny", data="/nowhere", fixed={},
                      objective={"name": ts.OBJECTIVE, "split": "val", "value": best["value"]},
                      study={"name": "jetlib-byol", "trials": len(trials), "best_trial": best["number"]})


def fake_pretraining(run: Path, method: str, recipe: dict | None = None, **values) -> dict:
    """A pretraining's run.json as jetlib.pretrain writes it (its config and method params from the real
    make_config), without training: the report reads only the record."""
    cfg = make_config("tiny", recipe, method=method, **values)
    doc = {"format": records.PRETRAIN, "config": json.loads(json.dumps(asdict(cfg))),
           "method": {"name": method, "params": asdict(methods.params(method, cfg.method_params))},
           "encoder": {"key": "encoder.pt", "sha256": "e" * 64}, "final": {}, "world_size": 1,
           "dataset": {"uri": "/nowhere/datasets/toy-000000000000", "id": "000000000000"}}
    folder = Path(pretrain_dir(str(run), cfg.seed, method))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps(doc))
    return doc


def section(markdown: str, title: str) -> str:
    """The Markdown of the section titled ``title`` (up to the next one); "" when there is none."""
    parts = re.split(r"^## ", markdown, flags=re.M)
    return next((p for p in parts if p.startswith(title)), "")


def rows(text: str, first: str) -> list[list[str]]:
    """The cells of the Markdown table rows of ``text`` whose first cell is ``first`` (escapes undone)."""
    out = []
    for line in text.splitlines():
        cells = [c.strip().replace("\\", "") for c in line.strip().strip("|").split(" | ")]
        if line.startswith("| ") and cells[0] == first:
            out.append(cells)
    return out


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A run folder with a byol search (complete, pruned and failed trials), a pretraining that ran its recipe
    and a SimCLR pretraining on its own recipe; its report."""
    root = tmp_path_factory.mktemp("searched")
    trials = write_search(root / "optuna")
    recipe = byol_recipe(trials)
    run = root / "run"
    tune_folder(run, "byol", recipe, trials)
    byol = fake_pretraining(run, "byol", recipe)
    simclr = fake_pretraining(run, "simclr")
    report = build_report(str(run), write=True)
    return run, report, recipe, trials, byol, simclr


def test_the_chosen_recipe_and_every_trial_equal_the_records(searched):
    run, report, recipe, trials, _, _ = searched
    md = section(report.markdown, "Tuning")
    (chosen,) = rows(md, "byol")
    v = recipe["values"]
    assert chosen[1:8] == ["4: 2 complete, 1 pruned, 1 failed", "3", f"{recipe['objective']['value']:.4f} "
                           "(knn_accuracy, val split)", f"{v['lr']:.4g}", f"{v['weight_decay']:.4g}",
                           f"base_momentum={v['method_params']['base_momentum']:.4g}", "tiny"]
    shown = [rows(md, str(t["number"]))[0] for t in trials]
    assert [(r[1], r[2], r[4]) for r in shown] == [
        (t["state"], "—" if final_value(t) is None else f"{final_value(t):.4f}", f"{t['params']['lr']:.4g}")
        for t in trials]
    # a pruned trial's final value is the last epoch it reported; a failed one without epochs has none
    assert [final_value(t) for t in trials] == [0.61, 0.31, None, 0.72]
    assert report.summary["tune_byol_knn_accuracy"] == recipe["objective"]["value"] == 0.72
    assert json.loads((run / "report" / "summary.json").read_text())["tune_byol_knn_accuracy"] == 0.72
    assert shown[1][2] == "0.3100" and shown[2][2] == "—"


def test_the_search_plot_is_drawn_into_the_page_and_named_in_the_markdown(searched):
    run, report, *_ = searched
    html = (run / "report" / "report.html").read_text()
    assert html == report.html
    tuning = re.search(r'<section id="tuning">(.*?)</section>', html, re.S).group(1)
    img = re.search(r'<img src="data:image/png;base64,([^"]+)" alt="each method&#x27;s search">', tuning)
    assert base64.b64decode(img.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    md = (run / "report" / "report.md").read_text()
    assert "*Figure in report.html: each method's search.*" in section(md, "Tuning")
    assert '<a href="#tuning">' in html and '<a href="#recipes">' in html


def test_the_recipe_each_pretraining_ran_is_its_run_records(searched):
    _, report, recipe, _, byol, simclr = searched
    md = section(report.markdown, "The recipe each method ran")
    (b,) = rows(md, "pretrain-byol-s0")
    c = byol["config"]
    assert b[1:9] == ["byol", "0", "tiny", "lars", f"{c['lr']:.4g} per 256 jets",
                      f"{c['lr'] * c['batch_size'] / 256:.4g} at batch {c['batch_size']}", f"{c['weight_decay']:.4g}",
                      f"{c['warmup_epochs']} warmup epoch of {c['epochs']}, then cosine to 0"]
    momentum = recipe["values"]["method_params"]["base_momentum"]
    assert c["lr"] == recipe["values"]["lr"] and f"base_momentum={momentum:.4g}" in b[9]
    accuracy = recipe["objective"]["value"]
    assert b[10] == f"tuned: tune/byol/recipe.json (trial 3, validation k-NN accuracy {accuracy:.3f})"
    (s,) = rows(md, "pretrain-simclr-s0")
    c = simclr["config"]
    assert s[4:8] == ["adamw", f"{c['lr']:.4g} (as given)", f"{c['lr']:.4g} at batch {c['batch_size']}",
                      f"{c['weight_decay']:.4g}"]
    assert s[10] == "the method's own recipe (jetlib.methods: simclr)"


def test_values_set_by_hand_are_named_against_the_methods_recipe(tmp_path):
    fake_pretraining(tmp_path / "run", "vicreg", lr=0.05)
    md = section(build_report(str(tmp_path / "run"), write=False).markdown, "The recipe each method ran")
    (row,) = rows(md, "pretrain-vicreg-s0")
    assert row[10] == "the method's own recipe with lr set by hand or by a recipe file (its own: lr 0.3)"
    # a search whose recipe the pretraining did not run is said so, naming what differs
    trials = write_search(tmp_path / "optuna")
    tune_folder(tmp_path / "run2", "byol", byol_recipe(trials), trials)
    fake_pretraining(tmp_path / "run2", "byol", weight_decay=1e-3)
    md = section(build_report(str(tmp_path / "run2"), write=False).markdown, "The recipe each method ran")
    assert rows(md, "pretrain-byol-s0")[0][10] == ("not the tuned recipe of tune/byol/recipe.json (differs in lr, "
                                                    "weight_decay, base_momentum): set by hand")


def test_a_run_without_tune_has_no_tuning_section(tmp_path):
    write_results(tmp_path / "run" / "results", [fake_result("cls", m, 0.1, s, 0.7) for m in ("finetune", "scratch")
                                                 for s in (0, 1)])
    report = build_report(str(tmp_path / "run"), write=False)
    assert 'id="tuning"' not in report.html and "## Tuning" not in report.markdown
    assert 'id="recipes"' not in report.html  # no pretraining run: no recipe to state
    assert "Tuning" in build_report(str(tune_only(tmp_path)), write=False).markdown


def test_a_katib_search_without_epochs_or_a_named_trial_is_shown(tmp_path):
    """On a cluster the tune step reads the Katib Experiment (jetlib.tune.katib.result): one value a trial (the
    StdOut collector's), no epochs, a failed trial without a value, and a best trial that may match no row."""
    trials = [{"study": "jetlib-byol-x1", "number": 0, "state": "complete", "value": 0.66, "epochs": {},
               "params": {"lr": 2.0, "weight_decay": 1e-5, "base_momentum": 0.95}},
              {"study": "jetlib-byol-x1", "number": 1, "state": "fail", "value": None, "epochs": {},
               "params": {"lr": 9.0, "weight_decay": 1e-5, "base_momentum": 0.9}}]
    recipe = recipe_doc("byol", ts.settings("byol", trials[0]["params"]), preset="gpu",
                        objective={"name": ts.OBJECTIVE, "split": "val", "value": 0.66},
                        study={"name": "jetlib-byol-x1", "trials": 2, "best_trial": None})
    run = tmp_path / "run"
    tune_folder(run, "byol", recipe, trials)
    fake_pretraining(run, "byol", recipe)
    report = build_report(str(run), write=False)
    (chosen,) = rows(section(report.markdown, "Tuning"), "byol")
    assert chosen[1:4] == ["2: 1 complete, 0 pruned, 1 failed", "—", "0.6600 (knn_accuracy, val split)"]
    assert chosen[8] == "the recipe names no trial"
    (used,) = rows(section(report.markdown, "The recipe each method ran"), "pretrain-byol-s0")
    assert used[10] == "tuned: tune/byol/recipe.json (validation k-NN accuracy 0.660)"
    assert not [g for g in report.missing if "tune/" in g]


def tune_only(tmp_path: Path) -> Path:
    trials = write_search(tmp_path / "optuna")
    tune_folder(tmp_path / "tuned", "byol", byol_recipe(trials), trials)
    return tmp_path / "tuned"


def _tampered(trials: list[dict], recipe: dict) -> dict:
    """name -> (recipe.json, trials.json, what the refusal line says)."""
    many = [dict(trials[0], number=i) for i in range(MAX_TRIALS + 1)]
    return {
        "recipe sets the run's length": ({**recipe, "values": {**recipe["values"], "epochs": 1000}}, trials,
                                         "recipe.json values.epochs: Extra inputs are not permitted"),
        "lr as text": ({**recipe, "values": {**recipe["values"], "lr": "0.1"}}, trials,
                       "recipe.json values.lr: must be a valid number"),
        "not a recipe": ({**recipe, "format": "jetlib.recipe/9"}, trials, "recipe.json format: must be one of"),
        "another method's": (recipe_doc("vicreg", {"lr": 0.1}), trials, "the recipe is vicreg's, not byol's"),
        "recipe not JSON": (b"{\"format\": ", trials, "recipe.json: not JSON"),
        "trials not JSON": (recipe, b"[" * 100_000, "trials.json: not JSON"),
        "trials not a list": (recipe, {"0": trials[0]}, "trials.json: must be a valid list"),
        "hostile state": (recipe, [dict(trials[0], state=HOSTILE)], "trials.json[0].state: must be one of"),
        "a boolean value": (recipe, [dict(trials[0], value=True)], "trials.json[0].value: must be a valid number"),
        "hostile parameter": (recipe, [dict(trials[0], params={HOSTILE: 1.0})], "trials.json[0].params"),
        "too many trials": (recipe, many, f"trials.json: List should have at most {MAX_TRIALS} items"),
        "recipe missing": (None, trials, "tune/byol/recipe.json: missing"),
    }


@pytest.fixture(scope="module")
def tampered(tmp_path_factory):
    root = tmp_path_factory.mktemp("tampered")
    trials = write_search(root / "optuna")
    recipe = byol_recipe(trials)
    out = {}
    for name, (r, t, line) in _tampered(trials, recipe).items():
        run = root / name.replace(" ", "-").replace("'", "")
        tune_folder(run, "byol", r, t)
        fake_pretraining(run, "byol", recipe)
        out[name] = (build_report(str(run), write=False), line)
    return out


@pytest.mark.parametrize("name", list(_tampered([{"number": 0}], {"values": {}})))
def test_a_tampered_search_record_is_one_line_and_no_markup(tampered, name):
    report, line = tampered[name]
    (gap,) = [g for g in report.missing if "tune/byol/" in g]
    assert line in gap and "\n" not in gap and len(gap) < 400
    assert re.match(r"(refused )?tune/byol/(recipe|trials)\.json[ :[]", gap)
    assert escape(gap) in report.html  # named on the page too, under "What is missing"
    assert "<img src=x" not in report.html and "](http://evil" not in report.markdown
    # the rest of the report stands: the pretraining's recipe is still stated
    assert rows(section(report.markdown, "The recipe each method ran"), "pretrain-byol-s0")


def test_a_method_folder_that_is_not_a_name_is_refused(tmp_path):
    run = tune_only(tmp_path)
    (run / "tune" / "byol").rename(run / "tune" / "BYOL<b>")
    report = build_report(str(run), write=False)
    assert "tune/BYOL<b>: not a method name (lowercase letters, digits, '_')" in report.missing
    assert "<b>" not in report.html.replace("&lt;b&gt;", "")


def test_strings_a_search_carries_stay_text_in_both_files(tmp_path):
    """A method parameter's value may be any string in a recipe or a trial: on the page and in report.md (as
    GitHub renders it, tests/test_report_hostile.py) it is text, never a tag, link or image."""
    from tests.test_report_hostile import FENCE_BREAK, assert_only_text

    trials = write_search(tmp_path / "optuna")
    trials[0]["params"]["note"] = FENCE_BREAK
    recipe = byol_recipe(trials)
    recipe["values"]["method_params"]["note"] = HOSTILE
    recipe["preset"] = "tiny"
    run = tmp_path / "run"
    tune_folder(run, "byol", recipe, trials)
    report = build_report(str(run), write=False)
    assert not [g for g in report.missing if "tune/" in g]  # strings are values a search may hold: not refused
    doc = assert_only_text(report.markdown)
    assert any(HOSTILE in t for t in doc.text) and any("<img src=x onerror=alert(2)>" in t for t in doc.text)
    assert "<img src=x" not in report.html and escape(json.dumps(HOSTILE)) in report.html


def test_the_largest_search_a_schema_allows_keeps_the_page_within_its_limits(tmp_path):
    trials = write_search(tmp_path / "optuna")
    many = [dict(trials[i % 4], number=i, params={**trials[i % 4]["params"], "n" * 64: "v" * 4000})
            for i in range(MAX_TRIALS)]
    tune_folder(tmp_path / "run", "byol", byol_recipe(trials), many)
    report = build_report(str(tmp_path / "run"), write=False)
    assert len(report.html.encode()) <= HTML_LIMIT and len(report.markdown) <= MARKDOWN_LIMIT
    assert 'alt="each method&#x27;s search"' in report.html  # the plot of every trial is still drawn
    assert "more rows not shown (page size limit)" in section(report.markdown, "Tuning")


@pytest.mark.slow  # a real two-trial jetlib tune (two pretraining subprocesses) and a pretraining: ~25 s of CPU
def test_a_real_search_round_trips_into_the_report(small_dataset, tmp_path):
    """jetlib tune's own files, copied where the pipeline's tune step puts them, and a pretraining that ran its
    recipe (``jetlib pretrain --recipe``): the report states the values the search chose and the run ran."""
    from jetlib.pretrain import pretrain

    out = tmp_path / "search"
    result = ts.tune(small_dataset, str(out), "byol", 2, preset="tiny",
                     sets={"epochs": "1", "max_steps_per_epoch": "2"}, device="cpu")
    run = tmp_path / "run"
    tune_folder(run, "byol", (out / "recipe.json").read_bytes(), json.dumps(ts.history(str(out))).encode())
    recipe = read_recipe(str(out / "recipe.json"))
    pretrain(small_dataset, pretrain_dir(str(run), 0, "byol"),
             make_config("tiny", recipe, epochs=1, max_steps_per_epoch=2), device="cpu")
    report = build_report(str(run), write=False)
    md = section(report.markdown, "Tuning")
    (chosen,) = rows(md, "byol")
    assert chosen[1:6] == ["2: 2 complete, 0 pruned, 0 failed", str(result["best_trial"]),
                           f"{result['knn_accuracy']:.4f} (knn_accuracy, val split)",
                           f"{result['values']['lr']:.4g}", f"{result['values']['weight_decay']:.4g}"]
    assert chosen[8] == "—"  # the chosen trial is in trials.json with the recipe's values, and the best
    (used,) = rows(section(report.markdown, "The recipe each method ran"), "pretrain-byol-s0")
    assert used[10].startswith(f"tuned: tune/byol/recipe.json (trial {result['best_trial']}, validation k-NN")
    assert not [g for g in report.missing if "tune/" in g]
