"""The InferenceService that serves an exported tagger (``manifests/serving/``): KServe v0.20.0's CRD
schema, Pod Security "restricted", the pipeline's store Secret, and a command ``jetlib serve`` accepts."""

from __future__ import annotations

import yaml

from jetlib.cli import build_parser
from pipelines.jet_ssl import SECRET_KEYS
from tests.pod_security import restricted_violations
from tests.schemas import ROOT, validate_crd

PATH = ROOT / "manifests" / "serving" / "inferenceservice.yaml"


def isvc() -> dict:
    (obj,) = [d for d in yaml.safe_load_all(PATH.read_text()) if d]
    return obj


def test_the_inferenceservice_fits_kserve_v0_20_crd_schema():
    """Every field known to the CRD (unknown ones fail: the API server would prune them silently);
    skipped without $JETLIB_CRD_SCHEMAS outside CI, as the other CRD checks."""
    obj = isvc()
    assert (obj["apiVersion"], obj["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    validate_crd(obj)
    import copy

    import jsonschema
    import pytest

    typo = copy.deepcopy(obj)
    typo["spec"]["predictor"]["containers"][0]["readinesProbe"] = typo["spec"]["predictor"]["containers"][0].pop(
        "readinessProbe")
    with pytest.raises(jsonschema.ValidationError, match="readinesProbe"):
        validate_crd(typo)


def test_the_predictor_pod_is_pod_security_restricted():
    pred = isvc()["spec"]["predictor"]
    pod = {k: pred[k] for k in ("containers", "securityContext", "volumes")}
    assert restricted_violations(pod) == []
    (c,) = pred["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/tmp"}  # the one writable place, an emptyDir
    assert c["resources"]["requests"] and c["resources"]["limits"]


def test_the_model_is_read_from_the_store_with_the_pipelines_secret():
    pred = isvc()["spec"]["predictor"]
    (c,) = pred["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    default_secret = "jetlib-s3"  # pipelines/jet_ssl.py's store_secret default
    assert refs == {k: {"name": default_secret, "key": k} for k in SECRET_KEYS}
    assert pred["labels"]["jetlib.io/store-client"] == "true"  # the store's NetworkPolicy admits it
    assert isvc()["metadata"]["namespace"] == "kubeflow"  # where manifests/kind puts the Secret


def test_the_container_runs_jetlib_serve_on_the_port_the_probes_ask():
    (c,) = isvc()["spec"]["predictor"]["containers"]
    args = build_parser().parse_args(c["args"])
    assert args.command == "serve" and args.model.startswith("s3://")
    (port,) = c["ports"]
    assert port["containerPort"] == args.http_port
    probes = {k: c[k]["httpGet"] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert {p["port"] for p in probes.values()} == {args.http_port}
    # the health endpoints KServe's server provides (kserve/protocol/rest/v2_endpoints.py, register_v2_endpoints)
    assert {p["path"] for p in probes.values()} == {"/v2/health/ready", "/v2/health/live"}
