"""An exclusive claim on a training step's output prefix: two different runs never share one ``--out``.

Two runs started into the same ``--out`` with different settings (pretraining seeds 0
and 1 at once, say) would interleave their checkpoints and both exit 0, one of them
silently lost. Before its first write, a step therefore creates ``<out>/.jetlib-claim.json``
*only if it does not exist* (:meth:`~jetlib.data.store.Store.put_new`):

* locally with ``O_CREAT | O_EXCL``, which the kernel makes atomic;
* on S3 with a conditional ``PUT`` (``If-None-Match: *``): AWS S3 and MinIO answer 412
  when the object exists and decide a race between two such PUTs for exactly one of them
  (MinIO: under the object's namespace lock), and moto 5.2.5 refuses an existing key the
  same way, so the test double enforces what the real stores do.

The claim holds a digest of what makes the run itself: the step, its resolved config and
the dataset id (and, for fine-tuning, the encoder it starts from). Re-running the same
command (a resume) finds its own digest and goes on; a different run finds another digest
and stops with one line (exit 2) naming the run that holds the prefix. The claim file is
hidden (its name starts with ``.``), so listings and the report never see it; deleting it
releases the prefix.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from datetime import UTC, datetime

from jetlib.data.store import NotFound, Store
from jetlib.errors import ConfigError

CLAIM = ".jetlib-claim.json"
FORMAT = "jetlib.claim/1"


def run_digest(step: str, identity: dict) -> str:
    """sha256 of the step and its identity (config, dataset, ...), independent of key order."""
    blob = json.dumps({"step": step, **identity}, sort_keys=True, default=str, allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def claim(store: Store, step: str, identity: dict, summary: str = "") -> str:
    """Take the output prefix ``store`` for this run, or re-enter it when this run already holds it.

    Args:
        store: the step's output prefix.
        step: ``pretrain``, ``finetune``, ``baseline``.
        identity: what makes the run itself (resolved config, dataset id, init); JSON-able.
        summary: a few words for the refusal another run will print (``seed 0``).

    Returns:
        the run's digest.

    Raises:
        ConfigError: another run holds the prefix (exit 2).
        StoreError: the store cannot be written (exit 3).
    """
    digest = run_digest(step, identity)
    mine = {"format": FORMAT, "step": step, "run": digest, "summary": summary[:200], "identity": identity,
            "created": datetime.now(UTC).isoformat(timespec="seconds"), "host": socket.gethostname()}
    data = json.dumps(mine, indent=1, sort_keys=True, default=str, allow_nan=False).encode()
    where = store.key_uri(CLAIM)
    for attempt in range(5):
        if store.put_new(CLAIM, data):
            return digest
        try:
            held = json.loads(store.get_bytes(CLAIM))
        except NotFound:  # released between our two calls: try again
            continue
        except (UnicodeDecodeError, json.JSONDecodeError):
            held = None  # a local claim is being written by its O_EXCL creator right now
        if isinstance(held, dict) and held.get("format") == FORMAT:
            break
        if attempt < 4:
            time.sleep(0.2)
    else:
        raise ConfigError(f"{where} is not a claim jetlib wrote: delete it if no run is using {store.uri}")
    if held.get("run") == digest:
        return digest
    step_, summary_, created, host = (_printable(held.get(k)) for k in ("step", "summary", "created", "host"))
    other = f"a {step_} run" + (f" ({summary_})" if summary_ != "?" else "")
    raise ConfigError(f"{store.uri} holds {other} with {_difference(held.get('identity'), identity)}, started "
                      f"{created} on {host}: choose another --out (or delete {where} if that run is abandoned)")


def _difference(held, mine: dict) -> str:
    """What differs between the claim's identity and this run's: ``different settings lr, seed``."""
    if not isinstance(held, dict):
        return "different settings"

    def same(a, b) -> bool:  # compared as stored: JSON, keys sorted (tuples came back as lists)
        return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)

    theirs, ours = held.get("config"), mine.get("config") or {}
    if isinstance(theirs, dict):
        diff = [k for k in ours if not same(theirs.get(k), ours[k])]
        if diff:
            return "different settings " + _printable(", ".join(diff))
    others = [k for k in mine if k != "config" and not same(held.get(k), mine[k])]
    return "a different " + _printable(" and ".join(others)) if others else "different settings"


def _printable(value, limit: int = 80) -> str:
    """A value read back from the store, fit for one error line (no newline, no control character)."""
    text = "".join(ch for ch in str(value) if ch.isprintable()) if value not in (None, "") else "?"
    return text[:limit]
