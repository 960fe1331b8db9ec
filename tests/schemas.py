"""Validate Kubeflow Trainer and Training Operator objects, with nothing outside the repository.

Two checks, both strict about unknown or misplaced fields (the API server prunes those silently, so a
typo would vanish in the cluster instead of failing):

1. Always: the ``kubeflow_trainer_api`` 2.3.0 models that the ``kubeflow`` SDK installs (generated from
   the same CRDs as Kubeflow Trainer v2.3.0). ``from_dict`` drops every field the model does not know
   and coerces nothing back, so an object that does not survive ``from_dict(obj).to_dict()`` unchanged
   has a field the CRD does not have. PyTorchJob (Training Operator v1) has no such model here.
2. Where available: the full OpenAPI schemas of the CRDs, in the folder named by ``$JETLIB_CRD_SCHEMAS``
   (``.ci/run`` points it at the schema folder beside the repository). They add what the models lack:
   enums, minimums, required fields, the PyTorchJob CRD. With ``CI=true`` a missing folder fails the
   test; elsewhere the test is skipped and says why.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS_ENV = "JETLIB_CRD_SCHEMAS"
CRDS = {
    ("trainer.kubeflow.org/v1alpha1", "TrainJob"): "trainer.kubeflow.org_trainjobs.v2.3.0.yaml",
    ("trainer.kubeflow.org/v1alpha1", "TrainingRuntime"): "trainer.kubeflow.org_trainingruntimes.v2.3.0.yaml",
    ("trainer.kubeflow.org/v1alpha1", "ClusterTrainingRuntime"):
        "trainer.kubeflow.org_clustertrainingruntimes.v2.3.0.yaml",
    ("kubeflow.org/v1", "PyTorchJob"): "kubeflow.org_pytorchjobs.v1.9.4.yaml",
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io_inferenceservices.v0.20.0.yaml",
}
MODELS = {"TrainJob": "TrainerV1alpha1TrainJob", "TrainingRuntime": "TrainerV1alpha1TrainingRuntime",
          "ClusterTrainingRuntime": "TrainerV1alpha1ClusterTrainingRuntime"}


def validate_model(obj: dict) -> None:
    """Raise AssertionError naming every field of a Trainer object that its 2.3.0 model does not keep."""
    from kubeflow_trainer_api import models

    assert obj["apiVersion"] == "trainer.kubeflow.org/v1alpha1", obj["apiVersion"]
    model = getattr(models, MODELS[obj["kind"]])
    back = model.from_dict(obj).to_dict()
    problems = _diff(obj, back, obj["kind"])
    assert not problems, "; ".join(problems)


def _diff(sent, kept, path: str) -> list[str]:
    if isinstance(sent, dict) and isinstance(kept, dict):
        out = [f"{path}.{k}: not a field of the model" for k in sent if k not in kept]
        return out + [p for k in sent if k in kept for p in _diff(sent[k], kept[k], f"{path}.{k}")]
    if isinstance(sent, list) and isinstance(kept, list) and len(sent) == len(kept):
        return [p for i, (a, b) in enumerate(zip(sent, kept, strict=True)) for p in _diff(a, b, f"{path}[{i}]")]
    # Quantities ("500m", 2) and int-or-string ports stay as given; anything else changed is a defect.
    return [] if sent == kept else [f"{path}: sent {sent!r}, the model kept {kept!r}"]


def schema_folder() -> Path:
    """The CRD schema folder from ``$JETLIB_CRD_SCHEMAS``; fails under CI=true, skips elsewhere, if absent."""
    value = os.environ.get(SCHEMAS_ENV, "")
    folder = Path(value) if value else None
    if folder is not None and all((folder / f).is_file() for f in CRDS.values()):
        return folder
    why = (f"${SCHEMAS_ENV} is not set" if folder is None
           else f"${SCHEMAS_ENV}={value} does not hold {', '.join(sorted(CRDS.values()))}")
    if os.environ.get("CI") == "true":
        pytest.fail(f"full CRD schema check did not run: {why} (.ci/run sets it)")
    pytest.skip(f"full CRD schema check not run: {why}; the kubeflow_trainer_api models were checked")


@cache
def crd_schema(folder: Path, api_version: str, kind: str) -> dict:
    """The openAPIV3Schema of ``kind`` at ``api_version`` from its CRD file in ``folder``."""
    crd = yaml.safe_load((folder / CRDS[(api_version, kind)]).read_text())
    version = api_version.split("/")[1]
    return next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version)


def validate_crd(obj: dict) -> None:
    """Raise jsonschema.ValidationError unless ``obj`` fits its CRD schema (unknown fields included)."""
    import jsonschema

    schema = crd_schema(schema_folder(), obj["apiVersion"], obj["kind"])
    jsonschema.Draft7Validator(_closed(schema)).validate(obj)


def validate_custom(obj: dict) -> None:
    """Both checks that apply: the model for Trainer objects, then the full CRD schema if present."""
    if obj["kind"] in MODELS:
        validate_model(obj)
    if schema_folder_available():
        validate_crd(obj)


def schema_folder_available() -> bool:
    value = os.environ.get(SCHEMAS_ENV, "")
    return bool(value) and all((Path(value) / f).is_file() for f in CRDS.values())


def _closed(schema):
    """The schema with additionalProperties=false wherever properties are listed, as the API server prunes:
    a misspelt or misplaced field then fails here instead of silently vanishing in the cluster."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out
