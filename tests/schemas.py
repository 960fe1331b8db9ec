"""Validate Kubernetes objects against the published CRD schemas in ``../shared/schemas``."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT.parent / "shared" / "schemas"
CRDS = {
    ("trainer.kubeflow.org/v1alpha1", "TrainJob"): "trainer.kubeflow.org_trainjobs.v2.3.0.yaml",
    ("trainer.kubeflow.org/v1alpha1", "ClusterTrainingRuntime"):
        "trainer.kubeflow.org_clustertrainingruntimes.v2.3.0.yaml",
    ("kubeflow.org/v1", "PyTorchJob"): "kubeflow.org_pytorchjobs.v1.9.4.yaml",
}


@cache
def crd_schema(api_version: str, kind: str) -> dict:
    """The openAPIV3Schema of ``kind`` at ``api_version`` from its CRD file."""
    crd = yaml.safe_load((SCHEMAS / CRDS[(api_version, kind)]).read_text())
    version = api_version.split("/")[1]
    return next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version)


def validate_custom(obj: dict) -> None:
    """Raise jsonschema.ValidationError unless ``obj`` fits its CRD schema (unknown fields included)."""
    schema = crd_schema(obj["apiVersion"], obj["kind"])
    jsonschema.Draft7Validator(_closed(schema)).validate(obj)


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
