"""The report's "The recipe each method ran" and "Tuning": every pretraining's hyperparameters, each method's search.

A comparison of methods is only as fair as each method's recipe, so the report states, for every
pretraining, the recipe it ran from its ``run.json`` ``config``: optimiser, learning rate and its
batch scaling (:func:`jetlib.pretrain.peak_lr`), weight decay, warmup and schedule
(:func:`jetlib.pretrain.lr_schedule`: linear warmup, then a cosine to zero), the method's own
parameters (``method.params``, resolved), and where those values came from: the method's own
recipe (its class's ``recipe`` in :mod:`jetlib.methods`), the tuned recipe of this run's search,
or values set by hand.

When the pipeline tuned the methods first, the run folder holds ``tune/<method>/recipe.json`` (the
file ``jetlib tune`` writes, :mod:`jetlib.tune.recipe`) and ``tune/<method>/trials.json`` (the list
:func:`jetlib.tune.study.history` returns). The "Tuning" section plots each search (every trial's
final objective against its number, pruned and failed trials marked apart, the best so far) and
tables the recipe chosen and every trial.

These files come from a shared store: each passes its schema (:mod:`jetlib.schemas.records`:
``Recipe``, ``Trials``, ``PretrainRecipe``) before anything is taken from it. One that is missing
or refused is one line in the section and under "What is missing"; the rest of the report stands.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields

from jetlib import methods
from jetlib.data.store import NotFound, open_store
from jetlib.errors import DataError, JetlibError
from jetlib.pretrain import PretrainConfig
from jetlib.report import figures
from jetlib.report.blocks import Figure, Para, Section, Table
from jetlib.report.collect import Step, Study
from jetlib.report.pretraining import run_method
from jetlib.report.stats import DEFAULT_METHOD
from jetlib.schemas import NAME, parse
from jetlib.schemas.records import Params, PretrainRecipe, Recipe, Trials

RECIPE, TRIALS = "recipe.json", "trials.json"
# the values that make a recipe, compared with the method's own to say where a pretraining's came from
RECIPE_KEYS = ("optimizer", "lr", "lr_batch", "weight_decay")
_DEFAULTS = {f.name: f.default for f in fields(PretrainConfig) if f.name in RECIPE_KEYS}


@dataclass
class Search:
    """One method's search, as the run folder holds it."""

    method: str  # the folder's name under tune/
    recipe: dict | None = None  # recipe.json, passed its schema (None: missing or refused)
    trials: list[dict] = field(default_factory=list)  # trials.json's rows, passed their schema
    problems: list[str] = field(default_factory=list)  # one line per file missing or refused

    @property
    def best_trial(self) -> int | None:
        return ((self.recipe or {}).get("study") or {}).get("best_trial")


def _load(store, name: str, schema, where: str):
    """The JSON at ``name`` once it passes ``schema``; raises DataError (one line) or NotFound."""
    data = store.get_bytes(name)
    try:  # NaN and the infinities are not JSON: read as null, which every schema here treats as no value
        doc = json.loads(data, parse_constant=lambda _: None)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise DataError(f"{where}: not JSON ({str(e)[:120]})") from None
    parse(schema, doc, where, DataError)
    return doc


def searches(study: Study) -> list[Search]:
    """Every ``tune/<method>/`` of the run folder, each file read through its schema."""
    out = []
    root = open_store(study.uri)
    for folder, names in sorted(study.tunes.items()):
        where = f"tune/{folder}"
        if not NAME.fullmatch(folder):  # a folder name read back names nothing before it passes the grammar
            out.append(Search(folder, problems=[f"{where}: not a method name (lowercase letters, digits, '_')"]))
            continue
        s = Search(folder)
        here = root.child("tune").child(folder)
        for name, schema in ((RECIPE, Recipe), (TRIALS, Trials)):
            if name not in names:
                s.problems.append(f"{where}/{name}: missing")
                continue
            try:
                doc = _load(here, name, schema, f"{where}/{name}")
            except NotFound:
                s.problems.append(f"{where}/{name}: missing")
                continue
            except DataError as e:
                s.problems.append(f"refused {e}")
                continue
            if name == RECIPE and doc["method"] != folder:
                s.problems.append(f"refused {where}/{name}: the recipe is {doc['method']}'s, not {folder}'s")
            elif name == RECIPE:
                s.recipe = doc
            else:
                s.trials = sorted(doc, key=lambda t: t["number"])
        out.append(s)
    return out


def problems(found: list[Search]) -> list[str]:
    """Every search file missing or refused, one line each (for "What is missing")."""
    return [p for s in found for p in s.problems]


def summary(found: list[Search]) -> dict[str, float]:
    """``tune_<method>_<objective>``: the objective of each search's chosen recipe, for Kubeflow's Compare Runs."""
    out = {}
    for x in found:
        objective = (x.recipe or {}).get("objective") or {}
        if isinstance(objective.get("value"), (int, float)) and math.isfinite(objective["value"]):
            out[f"tune_{x.method}_{objective['name']}"] = float(objective["value"])
    return out


# --- formatting ------------------------------------------------------------------------------------------------

def _num(v, fmt: str = ".4g") -> str:
    return "—" if v is None else f"{v:{fmt}}" if isinstance(v, float) else str(v)


def _params(params: dict | None) -> str:
    """``name=value, ...`` (numbers to 4 significant digits; anything else as its JSON, cut by the page budget)."""
    def one(v):
        return _num(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else json.dumps(v)[:200]
    return ", ".join(f"{k}={one(v)}" for k, v in sorted((params or {}).items())) or "—"


def _rate(lr, lr_batch) -> str:
    if lr is None:
        return "not recorded"
    return f"{lr:.4g} per {lr_batch} jets" if lr_batch else f"{lr:.4g} (as given)"


def final_value(trial: dict) -> float | None:
    """A trial's final objective: its value, else (pruned, failed) the last epoch's it reported."""
    if trial.get("value") is not None:
        return trial["value"]
    epochs = sorted((int(k), v) for k, v in (trial.get("epochs") or {}).items() if v is not None)
    return epochs[-1][1] if epochs else None


def _counts(trials: list[dict]) -> str:
    n = {s: sum(1 for t in trials if t["state"] == s) for s in ("complete", "pruned", "fail")}
    other = len(trials) - sum(n.values())
    return (f"{len(trials)}: {n['complete']} complete, {n['pruned']} pruned, {n['fail']} failed"
            + (f", {other} unfinished" if other else ""))


# --- the recipe each pretraining ran ---------------------------------------------------------------------------

def _own_recipe(method: str) -> dict | None:
    """The method's own recipe over the config's defaults (SimCLR's); None for a method not registered here."""
    try:
        return {**_DEFAULTS, **{k: v for k, v in methods.get(method).recipe.items() if k in RECIPE_KEYS}}
    except (JetlibError, ImportError):
        return None


def _differs(config: dict, params: dict, values: dict) -> list[str]:
    """The keys of recipe ``values`` (method parameters included) that ``config`` and ``params`` do not hold."""
    keys = [k for k, v in values.items() if k != "method_params" and config.get(k) != v]
    return keys + [k for k, v in (values.get("method_params") or {}).items() if params.get(k) != v]


def _source(method: str, config: dict, params: dict, search: Search | None) -> str:
    """Where a pretraining's values came from, in words."""
    if search is not None and search.recipe is not None:
        where = f"tune/{method}/{RECIPE}"
        off = _differs(config, params, search.recipe["values"])
        if not off:
            objective = search.recipe.get("objective") or {}
            about = ([f"trial {search.best_trial}"] if search.best_trial is not None else []) + (
                [f"validation k-NN accuracy {objective['value']:.3f}"] if isinstance(objective.get("value"), float)
                else [])
            return f"tuned: {where}" + (f" ({', '.join(about)})" if about else "")
        return f"not the tuned recipe of {where} (differs in {', '.join(off)}): set by hand"
    own = _own_recipe(method)
    if own is None:
        return f"{method} is not a method this jetlib knows: its own recipe cannot be compared"
    off = [k for k in RECIPE_KEYS if config.get(k) is not None and config.get(k) != own[k]]
    if off:
        return (f"the method's own recipe with {', '.join(off)} set by hand or by a recipe file "
                f"(its own: {', '.join(f'{k} {_num(own[k])}' for k in off)})")
    return f"the method's own recipe (jetlib.methods: {method})"


def _recipe_row(st: Step, tuned: dict[str, Search], gaps: list[str]) -> list[str]:
    name = st.uri.rstrip("/").rsplit("/", 1)[-1]
    method = run_method(st)
    config = st.run.get("config") or {}
    try:
        cfg = parse(PretrainRecipe, config, f"{st.uri}/run.json config", DataError).model_dump()
        params = ((st.run.get("method") or {}).get("params")
                  if isinstance(st.run.get("method"), dict) else None) or config.get("method_params") or {}
        parse(Params, params, f"{st.uri}/run.json method.params", DataError)
    except DataError as e:
        gaps.append(f"the recipe of {st.uri}: refused {e}")
        return [name, method, str(config.get("seed", "—"))] + ["—"] * 6 + [f"refused: {e}"]
    lr, batch, lr_batch = cfg["lr"], cfg["batch_size"], cfg["lr_batch"]
    peak = f"{lr * batch / lr_batch:.4g} at batch {batch}" if lr and batch and lr_batch else \
        f"{lr:.4g} at batch {batch}" if lr and batch else "—"
    warm, epochs = cfg["warmup_epochs"], cfg["epochs"]
    schedule = (f"{warm} warmup epoch{'s' if warm != 1 else ''} of {epochs}, then cosine to 0"
                if warm is not None and epochs is not None else "not recorded")
    return [name, method, str(config.get("seed", "—")), str(cfg["preset"] or "—"),
            str(cfg["optimizer"] or "not recorded (adamw before recipes)"), _rate(lr, lr_batch), peak,
            _num(cfg["weight_decay"]), schedule, _params(params),
            _source(method, cfg, params, tuned.get(method))]


def recipe_section(study: Study, found: list[Search], gaps: list[str]) -> Section | None:
    """"The recipe each method ran": one row per pretraining run; None without pretraining runs."""
    if not study.pretrains:
        return None
    tuned = {s.method: s for s in found}
    steps = sorted(study.pretrains, key=lambda st: (run_method(st) != DEFAULT_METHOD, run_method(st),
                                                    str((st.run.get("config") or {}).get("seed")), st.uri))
    s = Section("recipes", "The recipe each method ran")
    s.add(Para("Each pretraining's hyperparameters as its run.json records them. A rate \"per 256 jets\" is "
               "scaled linearly to the batch (the peak the schedule reaches); the schedule warms up linearly, "
               "then decays on a cosine to zero. \"The method's own recipe\": the optimiser, rate and weight "
               "decay its class states (paper and solo-learn sources in jetlib/methods/); the warmup and length "
               "come from the preset."))
    s.add(Table(["pretraining run", "method", "seed", "preset", "optimiser", "learning rate", "peak rate",
                 "weight decay", "schedule", "method's parameters", "where the values came from"],
                [_recipe_row(st, tuned, gaps) for st in steps]))
    return s


# --- the searches ------------------------------------------------------------------------------------------------

def tuning_section(found: list[Search]) -> Section | None:
    """"Tuning": each method's search (a plot and its trials) and the recipe it chose; None without tune/."""
    if not found:
        return None
    s = Section("tuning", "Tuning: each method's search")
    s.add(Para(f"{len(found)} method{'s were' if len(found) != 1 else ' was'} tuned before pretraining "
               f"({', '.join(x.method for x in found)}). Each trial is a pretraining with one setting of the search "
               f"space, scored by its k-NN accuracy on the validation split (the test split is never read); "
               f"a pruned trial was stopped early, below the median of earlier trials at the same epoch, and "
               f"shows its last epoch's value. The pretrainings above ran the chosen recipe where it says so."))
    s.add(Figure(figures.search_panels({x.method: ([(t["number"], t["state"], final_value(t)) for t in x.trials],
                                                   x.best_trial) for x in found}),
                 "each method's search",
                 "Validation k-NN accuracy of every trial against the trial number, one panel per method: complete "
                 "(filled), pruned (open, its last epoch), failed (cross; on the floor when it reported no epoch); "
                 "the line is the best complete trial so far, the star the trial the recipe took."))
    rows = []
    for x in found:
        if x.recipe is None:
            rows.append([x.method, _counts(x.trials) if x.trials else "—", "—", "—", "—", "—", "—", "—",
                         "no recipe: " + "; ".join(x.problems)])
            continue
        r, v = x.recipe, x.recipe["values"]
        obj = r.get("objective") or {}
        rows.append([x.method, _counts(x.trials) if x.trials else "—", _num(x.best_trial),
                     f"{_num(obj.get('value'), '.4f')} ({obj.get('name', '—')}, {obj.get('split', '—')} split)",
                     _num(v.get("lr")), _num(v.get("weight_decay")), _params(v.get("method_params")),
                     str(r.get("preset") or "—"),
                     "; ".join(x.problems) or _check_best(x)])
    s.add(Table(["method", "trials", "chosen trial", "objective", "learning rate", "weight decay",
                 "method's parameters", "preset", "notes"], rows, "The recipe each search chose"))
    for x in found:
        if x.trials:
            s.add(Table(["trial", "state", "final value", "epochs reported", "learning rate", "weight decay",
                         "method's parameters"],
                        [[str(t["number"]), t["state"], _num(final_value(t), ".4f"), str(len(t["epochs"])),
                          _num(t["params"].get("lr")), _num(t["params"].get("weight_decay")),
                          _params({k: p for k, p in t["params"].items() if k not in ("lr", "weight_decay")})]
                         for t in x.trials], f"Every trial of {x.method}"))
        elif x.problems:
            s.add(Para(f"{x.method}: {'; '.join(x.problems)}."))
    return s


def _check_best(x: Search) -> str:
    """Is the recipe's trial in trials.json, with the recipe's values and objective, and the best complete one?"""
    if x.best_trial is None:
        return "the recipe names no trial"
    best = next((t for t in x.trials if t["number"] == x.best_trial), None)
    if best is None:
        return "—" if not x.trials else f"trial {x.best_trial} is not in {TRIALS}"
    value = (x.recipe.get("objective") or {}).get("value")
    values = x.recipe["values"]
    params = {**{k: values[k] for k in ("lr", "weight_decay") if k in values}, **(values.get("method_params") or {})}
    off = [k for k, p in params.items() if k in best["params"] and not _close(best["params"][k], p)]
    off += [] if _close(best["value"], value) else ["objective"]
    if off:
        return f"differs from trial {x.best_trial} of {TRIALS} in {', '.join(off)}"
    top = max((t["value"] for t in x.trials if t["state"] == "complete" and t["value"] is not None), default=None)
    if top is not None and (value is None or top > value):
        return f"not the best complete trial of {TRIALS} (one scored {top:.4f})"
    return "—"


def _close(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-12)
    return a == b
