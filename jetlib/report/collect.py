"""Walk a run folder (local or ``s3://``) and sort what it holds by file content, not by name.

A study run folder holds, at any depth and under any subfolder names:

* pretraining outputs: a folder whose ``run.json`` has ``format`` ``jetlib.pretrain/2``
  (with ``metrics.json`` and ``encoder.pt``);
* training outputs (fine-tuning, scratch, VGG): ``run.json`` with ``format`` ``jetlib.model/2``
  (with ``metrics.json`` and ``model.pt``);
* result files: any ``*.json`` whose ``format`` is ``jetlib.result/2``;
* when the pipeline tuned the methods first, ``tune/<method>/`` directly in the run folder
  (``recipe.json`` and ``trials.json``, read by :mod:`jetlib.report.tuning`). Nothing below a
  ``tune`` folder is a study output: a search's trial pretrainings are not the study's.

A folder holding ``checkpoints/`` or ``metrics.json`` but no ``run.json`` is a step that
started and did not finish: it is recorded as such, for the "what is missing" section.
A ``run.json`` or ``metrics.json`` the report cannot read (:mod:`jetlib.report.check`) is
listed as unreadable there too: the run is left out, or shown without its curves.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass, field

from jetlib import records
from jetlib.data.store import NotFound, open_store
from jetlib.errors import ConfigError
from jetlib.report.check import metrics_problem, result_problem, step_problem

log = logging.getLogger(__name__)

# Folders whose JSON files are never study outputs; skipping them keeps an S3 walk to a few reads.
_SKIP_DIRS = {"checkpoints", "report", "datasets"}


@dataclass
class Step:
    """A pretraining or training step's output folder."""

    uri: str  # the folder
    run: dict | None  # run.json (None: the step did not finish)
    metrics: dict | None  # metrics.json, when present
    artifacts: set[str] = field(default_factory=set)  # file names directly in the folder


@dataclass
class Study:
    """Everything a run folder holds, sorted by kind."""

    uri: str
    results: list[dict]  # result files, each with an added "_uri"
    pretrains: list[Step]
    trainings: list[Step]
    unfinished: list[Step]  # folders with checkpoints or metrics but no run.json
    unreadable: list[str]  # "<uri>: <reason>" for JSON files that could not be read
    tunes: dict[str, set[str]] = field(default_factory=dict)  # tune/<folder>/: the file names directly in it

    @property
    def fractions(self) -> list[float]:
        return sorted({float(r["label_fraction"]) for r in self.results})


def collect(run_uri: str) -> Study:
    """Read every study output below ``run_uri``.

    Raises:
        StoreError: the store cannot be reached or read (exit 3).
        ConfigError: the folder holds no pretraining run, training run or result file (exit 2).
    """
    store = open_store(run_uri)
    keys = store.list()
    if not keys:
        raise ConfigError(f"--run {store.uri}: nothing there (an empty or missing folder is not a study run)")
    by_dir: dict[str, set[str]] = {}
    with_checkpoints: set[str] = set()
    tunes: dict[str, set[str]] = {}
    for key in keys:
        parts = key.split("/")
        if "tune" in parts[:-1]:  # a search's files, its trials' pretrainings and checkpoints included
            if len(parts) == 3 and parts[0] == "tune":
                tunes.setdefault(parts[1], set()).add(parts[2])
            continue
        if "checkpoints" in parts[:-1]:  # the step folder above it exists, finished or not
            folder = "/".join(parts[: parts.index("checkpoints")])
            with_checkpoints.add(folder)
            by_dir.setdefault(folder, set())
        if _SKIP_DIRS & set(parts[:-1]):
            continue
        by_dir.setdefault(posixpath.dirname(key), set()).add(parts[-1])
    results, pretrains, trainings, unfinished, unreadable = [], [], [], [], []
    seen: dict[tuple, str] = {}  # (model sha256, dataset id) -> first result file
    refused = 0  # records of a study format the report cannot read: still a study run, and a report says so
    for folder, names in sorted(by_dir.items()):
        here = store.child(folder) if folder else store
        docs = {}
        for name in sorted(n for n in names if n.endswith(".json")):
            try:
                doc = records.read_json(here, name)
            except NotFound:  # removed while we walked
                continue
            except RecursionError:  # JSON nested deeper than the parser goes
                doc = None
            if doc is None:
                unreadable.append(f"{here.key_uri(name)}: not a JSON object")
            else:
                docs[name] = doc
        for name, doc in docs.items():
            problem = result_problem(doc) if doc.get("format") == records.RESULT else None
            if problem:
                unreadable.append(f"{here.key_uri(name)}: a result file jetlib cannot read ({problem})")
                refused += 1
            elif doc.get("format") == records.RESULT:
                same = ((doc.get("model") or {}).get("sha256"), (doc.get("dataset") or {}).get("id"))
                if same[0] and same in seen:  # a copy of a result already counted: pooling it twice fakes precision
                    log.info("%s repeats %s; counted once", here.key_uri(name), seen[same])
                    continue
                seen[same] = here.key_uri(name)
                results.append({**doc, "_uri": here.key_uri(name)})
        run, metrics = docs.get("run.json"), docs.get("metrics.json")
        kind = {records.PRETRAIN: "pretraining", records.MODEL: "training"}.get((run or {}).get("format"))
        if kind:
            problem = step_problem(run, pretraining=kind == "pretraining")
            if problem:
                unreadable.append(f"{here.key_uri('run.json')}: a {kind} record jetlib cannot read ({problem})")
                refused += 1
                continue
            problem = metrics_problem(metrics) if metrics is not None else None
            if problem:  # the run still counts; its curves are not drawn
                unreadable.append(f"{here.key_uri('metrics.json')}: {kind} metrics jetlib cannot read ({problem})")
                metrics = {}
        step = Step(here.uri, run, metrics, set(names))
        if kind == "pretraining":
            pretrains.append(step)
        elif kind == "training":
            trainings.append(step)
        elif run is None and (folder in with_checkpoints or "metrics.json" in names):
            unfinished.append(step)
    if not (results or pretrains or trainings or unfinished or refused or tunes):
        raise ConfigError(f"--run {store.uri}: no study outputs there (no result files, no training or "
                          f"pretraining run.json); point --run at a pipeline run folder")
    log.info("%s: %d results, %d pretraining runs, %d training runs, %d unfinished", store.uri, len(results),
             len(pretrains), len(trainings), len(unfinished))
    return Study(store.uri, results, pretrains, trainings, unfinished, unreadable, tunes)


def dataset_uris(study: Study) -> list[str]:
    """The datasets the study used, most used first."""
    counts: dict[str, int] = {}
    for doc in [r.get("dataset") for r in study.results] + [s.run.get("dataset") for s in
                                                               study.pretrains + study.trainings]:
        if isinstance(doc, dict) and doc.get("uri"):
            counts[doc["uri"]] = counts.get(doc["uri"], 0) + 1
    return sorted(counts, key=lambda u: -counts[u])
