"""Run records: the one place that names their formats, writes ``run.json`` and reads records back.

Every finished step leaves a ``run.json`` whose ``format`` says what it is:

``jetlib.pretrain/2`` (:data:`PRETRAIN`)  a pretraining run: ``encoder.pt`` and its sha256
``jetlib.model/2``    (:data:`MODEL`)     a training run (fine-tuning, scratch, VGG): ``model.pt``
``jetlib.result/2``   (:data:`RESULT`)    an evaluation's result file (not a ``run.json``)

Version 2 (networks and tasks by name): ``model.pt`` records ``arch`` and ``config`` (was ``kind`` and
``encoder_config``/``vgg_config``) with weight names without the ``encoder.`` prefix; pretraining
records ``method`` and ``method_params``; results name ``model.arch`` and the encoder's method. A
version-1 record is refused by name (one line: "is 'jetlib.model/1', expected ..."), never half read.

:func:`write_run` is the one writer of ``run.json``: it adds ``format``, ``created``,
``jetlib_version`` and :func:`jetlib.provenance.provenance` once, so no step spells them, and
writes the file last (its presence is what "finished" means). :func:`read_run_json` and
:func:`read_run` are the one reader: a record of another kind, or none at all, is one
:class:`~jetlib.errors.ConfigError` line naming the flag the URI came from.

Records are strict JSON (:func:`record_bytes`): a non-finite float becomes ``null``, since the
KFP/MLMD converters and strict parsers refuse ``NaN``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np

from jetlib import __version__
from jetlib.data.store import NotFound, Store, open_store
from jetlib.errors import ConfigError
from jetlib.schemas.records import EncoderBlob, ModelBlob, ModelRun, PretrainRun, check_record

PRETRAIN = "jetlib.pretrain/2"
MODEL = "jetlib.model/2"
RESULT = "jetlib.result/2"
RUN = "run.json"
# the declared schema of each run.json format and of each artifact a run names (jetlib.schemas.records)
RUN_SCHEMAS = {PRETRAIN: PretrainRun, MODEL: ModelRun}
ARTIFACT_SCHEMAS = {"encoder": EncoderBlob, "model": ModelBlob}
# the keys write_run adds itself: a step that passes one would write a second, different provenance
_ADDED = ("format", "created", "jetlib_version", "provenance")


def record_bytes(obj) -> bytes:
    """A record as JSON every reader can parse: a non-finite float (a k-NN accuracy on no labels, an
    undefined lr) becomes ``null``; written with ``allow_nan=False``."""
    return json.dumps(_finite_only(obj), indent=1, allow_nan=False).encode()


def _finite_only(obj):
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_only(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_only(v) for v in obj]
    return obj


def write_json(store: Store, key: str, doc: dict) -> None:
    """Write ``doc`` (e.g. ``metrics.json``) to ``key`` as a strict-JSON record."""
    store.put_bytes(key, record_bytes(doc))


def write_run(store: Store, fmt: str, body: dict, device=None) -> dict:
    """Write ``run.json``: ``body`` with ``format``, ``created``, ``jetlib_version`` and ``provenance`` added.

    Call it last: a step's folder with ``run.json`` is a finished step.

    Args:
        store: the step's output folder.
        fmt: :data:`PRETRAIN` or :data:`MODEL`.
        body: the step's own fields; none of the added keys.
        device: the device the step ran on, for the provenance (``None``: the CPU).

    Returns:
        the record as written (non-finite floats still in it; the file holds ``null``).
    """
    from jetlib.provenance import provenance  # imports the package metadata; only writers need it

    if fmt not in (PRETRAIN, MODEL):
        raise ValueError(f"write_run: format {fmt!r} is not a run.json format")
    clash = [k for k in _ADDED if k in body]
    if clash:
        raise ValueError(f"write_run adds {', '.join(clash)} itself; leave them out of the body")
    run = {"format": fmt, "created": datetime.now(UTC).isoformat(timespec="seconds"),
           "jetlib_version": __version__, **body, "provenance": provenance(device)}
    store.put_bytes(RUN, record_bytes(run))
    return run


def read_json(store: Store, key: str) -> dict | None:
    """The JSON object at ``key``, or ``None`` when it is not a JSON object.

    Raises:
        NotFound: nothing at ``key`` (exit 3).
        StoreError: the store cannot be read (exit 3).
    """
    try:
        doc = json.loads(store.get_bytes(key))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _formats(fmt: str | tuple[str, ...]) -> tuple[str, ...]:
    return (fmt,) if isinstance(fmt, str) else tuple(fmt)


def read_run_json(uri: str, fmt: str | tuple[str, ...], flag: str, *, checked: bool = True) -> dict:
    """The ``run.json`` of a finished step at ``uri`` whose ``format`` is ``fmt`` (or one of them).

    ``checked``: the record passes its format's schema (:data:`RUN_SCHEMAS`) first; only a reader
    that takes nothing from it but what it checks itself (the report lists malformed runs) leaves it.

    Raises:
        StoreError: the store cannot be read (exit 3).
        ConfigError: ``uri`` holds no finished run of that kind (exit 2); ``flag`` (``--init``,
            ``--model``) names where the URI came from in the message.
    """
    formats = _formats(fmt)
    store = open_store(uri)
    try:
        raw = store.get_bytes(RUN)
    except NotFound:
        raise ConfigError(f"{flag} {uri}: no finished run there (no run.json)") from None
    try:
        run = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{flag} {uri}: run.json is not JSON ({e})") from None
    if not isinstance(run, dict) or run.get("format") not in formats:
        got = run.get("format") if isinstance(run, dict) else type(run).__name__
        raise ConfigError(f"{flag} {uri}: run.json is {str(got)[:60]!r}, expected a {' or '.join(formats)} run")
    return check_record(RUN_SCHEMAS[run["format"]], run, f"{flag} {uri}: run.json") if checked else run


def read_run(uri: str, artifact: str, fmt: str | tuple[str, ...], flag: str, *, map_location="cpu",
             checked: bool = True):
    """(artifact, run.json) of a finished step: ``run.json`` and the sha256-verified object it names.

    Args:
        uri: the step's output folder (a store URI).
        artifact: the key in ``run.json`` that describes the object, e.g. ``"encoder"`` or ``"model"``.
        fmt: the accepted ``run.json`` format (or a tuple of them), e.g. :data:`PRETRAIN`.
        flag: the flag that named ``uri``, for the error line (``--init``, ``--model``).
        map_location: where tensors are loaded.
        checked: ``run.json`` and the object pass their schemas (:data:`RUN_SCHEMAS`,
            :data:`ARTIFACT_SCHEMAS`) before they are returned: one DataError line otherwise.

    Raises:
        StoreError: the store cannot be read (exit 3).
        ConfigError: ``uri`` holds no finished run of that kind (exit 2).
        DataError: the object fails its checksum or holds code (exit 2).
    """
    from jetlib.checkpoint import ARTIFACT_NAME, load_object  # torch is imported by readers of blobs only
    from jetlib.data.keys import check_sha256, confine

    run = read_run_json(uri, fmt, flag, checked=False)
    record = run.get(artifact)
    if not isinstance(record, dict) or not {"key", "sha256"} <= set(record):
        raise ConfigError(f"{flag} {uri}: run.json names no {artifact} (key and sha256)")
    store = open_store(uri)
    where = f"{flag} {store.key_uri(RUN)}: {artifact}"
    key = confine(record["key"], where, name=ARTIFACT_NAME)  # a file of this run's folder, nothing else
    # the object first: a checksum mismatch or a pickle that runs code is the line that says most
    blob = load_object(store, key, check_sha256(record["sha256"], where), map_location)
    if checked:  # every key a step reads from either, typed, before anything uses it
        check_record(RUN_SCHEMAS[run["format"]], run, f"{flag} {uri}: run.json")
        if artifact in ARTIFACT_SCHEMAS:
            check_record(ARTIFACT_SCHEMAS[artifact], blob, f"{flag} {store.key_uri(key)}")
    return blob, run
