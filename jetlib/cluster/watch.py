"""How the launcher watches a submitted job: what each poll sees, and when that fails the launch.

:func:`wait_for` is the single watch loop over any job handle (:class:`WatchedJob`: the handles of
:mod:`jetlib.cluster.jobs` are two). Failure reasons are read from the pods (:func:`pod_problem`)
and, for a TrainJob, from the ``FailedCreate`` events of its JobSet's Jobs (:func:`creation_problem`:
a pod the API server refuses never exists, so only the event says why), so that the one line a user
sees says *why* (pod refused, image pull, OOM-killed, unschedulable, missing Secret), not just
"Failed" or a timeout days later. Node 0's log is streamed to stdout as it comes (:func:`stream_logs`).

How long each wait may last before it fails the launch (each a :func:`wait_for` argument):
a refused pod creation (``is invalid``, ``violates PodSecurity``) fails at the next poll; a crash loop
at once; an image pull or container-start failure after ``grace_s`` (:data:`GRACE_S`); a pod
``Unschedulable`` (or a creation refused for another reason, such as a quota) after ``pending_s``
(:data:`PENDING_S`); the whole job after ``timeout_s``. The reasons are in docs/cluster-readings.md.

Nothing here calls the API server itself: every read goes through the handle.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable
from typing import Protocol

from jetlib.errors import TrainingError

# Waiting reasons that do not clear by themselves; they fail the launch after grace_s.
STUCK = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
         "CreateContainerConfigError", "CreateContainerError"}
# A rank that crashes and restarts in place cannot rejoin torchrun's static rendezvous: its peers
# wait for it until their timeout. Such a pod fails the launch at once.
CRASHLOOP = "CrashLoopBackOff"
# A FailedCreate whose error says the pod itself is refused: the Job controller's retries will be
# refused the same way (validation, Pod Security admission), so the launch fails at once.
REFUSED = ("is invalid", "violates PodSecurity")
MAX_API_ERRORS = 5  # consecutive failed polls tolerated (API server restarts, network blips)
# A pod no node fits may wait this long (a cluster autoscaler adding a GPU node takes minutes).
PENDING_S = 900.0
GRACE_S = 45.0  # an image pull or container start that keeps failing: with a 10 s poll, within a minute


class WatchedJob(Protocol):
    """What the watch loop reads of a job (:class:`jetlib.cluster.jobs.JobHandle` provides it)."""

    ref: str  # "<kind> <namespace>/<name>", the start of every line the loop raises

    def state(self) -> tuple[str, str]: ...  # ("Complete" | "Failed" | "Running" | "Deleting" | "Gone", why)

    def pods(self) -> list: ...  # the job's pods (kubernetes V1Pod)

    def creation_events(self) -> list: ...  # FailedCreate events of the controllers creating them

    def node0(self, pods: list): ...  # node 0's current pod among ``pods``, or None

    def log_lines(self, pod_name: str) -> Iterable[str]: ...  # a pod's log, followed until its container ends


def creation_problem(event, pending_s: float) -> tuple[str, str, float]:
    """(key, one line naming the Job and the reason, seconds before it fails the launch) of a
    ``FailedCreate`` event: 0 for a pod the API server refuses as such (:data:`REFUSED`), ``pending_s``
    for a refusal that can clear (a quota, a webhook that timed out)."""
    obj = event.involved_object
    message = " ".join((event.message or "").split())
    line = f"{obj.kind} {obj.namespace}/{obj.name}: {event.reason}: {message}"
    return f"{obj.uid}/{message}", line, (0.0 if any(r in message for r in REFUSED) else pending_s)


def pod_problem(pod, grace_s: float = GRACE_S, pending_s: float = PENDING_S) -> tuple[str, float | None] | None:
    """(one line saying why a pod is not making progress, seconds before that fails the launch), or None.

    The seconds are None for what clears by itself (OOM-killed and retried), 0 for a crash loop (its
    peers are already hung), ``grace_s`` for what does not clear (image pull, missing Secret), and
    ``pending_s`` for a pod no node fits (a cluster autoscaler may still add one).

    Reads what the kubelet and scheduler report: container waiting/terminated reasons
    (image pull, crash loop, OOM-killed, missing Secret) and the PodScheduled condition (unschedulable).
    """
    name = pod.metadata.name
    status = pod.status
    if status is None:
        return None
    for c in (status.init_container_statuses or []) + (status.container_statuses or []):
        waiting = c.state.waiting if c.state else None
        if waiting and waiting.reason == CRASHLOOP:
            last = c.last_state.terminated if c.last_state else None
            code = f", last exit code {last.exit_code}" if last and last.exit_code is not None else ""
            return (f"pod {name}: container {c.name} is crash-looping ({CRASHLOOP}, {c.restart_count} "
                    f"restart(s){code}); a rank restarted in place hangs its peers, so the job is stopped"), 0.0
        if waiting and waiting.reason in STUCK:
            what = "image pull failed" if "Image" in waiting.reason else "container cannot start"
            return f"pod {name}: {what} ({waiting.reason}) for {c.image}: {waiting.message or ''}".rstrip(": "), grace_s
        for term in (c.state.terminated if c.state else None, c.last_state.terminated if c.last_state else None):
            if term and term.reason == "OOMKilled":
                return (f"pod {name}: container {c.name} was OOM-killed (exit {term.exit_code}); "
                        "raise the memory limit or lower --batch-size"), None
    for cond in status.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False" and cond.reason == "Unschedulable":
            return f"pod {name}: unschedulable: {cond.message or 'no node fits'}", pending_s
    return None


def restarts(pod) -> int:
    """How often the job's container in ``pod`` has restarted (0 when it has no status yet)."""
    for c in (pod.status.container_statuses if pod.status else None) or []:
        return c.restart_count or 0
    return 0


def stream_logs(job: WatchedJob, pod_name: str, prefix: str = "[node-0] ") -> threading.Thread:
    """Copy a pod's log to stdout line by line, in a daemon thread, until the container ends.

    ``follow`` ends with the container; after a restart the watch loop starts a new stream, which
    reads the new container's log from its start.
    """

    def run():
        try:
            for line in job.log_lines(pod_name):
                print(prefix + line, flush=True)
        except Exception as e:  # logs are a convenience: never fail the launch over them
            print(f"log stream of {pod_name} ended: {e}", file=sys.stderr, flush=True)

    thread = threading.Thread(target=run, name=f"logs-{pod_name}", daemon=True)
    thread.start()
    return thread


def wait_for(job: WatchedJob, *, deadline: float, timeout_s: float, poll_s: float, grace_s: float = GRACE_S,
             pending_s: float = PENDING_S) -> None:
    """Poll until the job completes; raise TrainingError with the reason when it fails, stalls or times out."""
    streams: dict[tuple[str, int], threading.Thread] = {}  # (pod, container restarts) -> its log stream
    first_seen: dict[tuple[str, str], float] = {}
    last_problem = ""
    errors = 0
    while True:
        try:
            state, message = job.state()
            pods = job.pods()
            refused = job.creation_events()
            errors = 0
        except TrainingError:
            errors += 1  # transient API trouble: retry a few polls before giving up
            if errors >= MAX_API_ERRORS:
                raise
            time.sleep(poll_s)
            continue
        node0 = job.node0(pods)
        if node0 is not None and node0.status and node0.status.phase in ("Running", "Succeeded", "Failed"):
            key = (node0.metadata.name, restarts(node0))
            if key not in streams:
                streams[key] = stream_logs(job, node0.metadata.name)
        now = time.monotonic()
        found_all = [creation_problem(e, pending_s) for e in refused]
        found_all += [(pod.metadata.name, *found) for pod in pods
                      if (found := pod_problem(pod, grace_s, pending_s)) is not None]
        for name, line, fails_after in found_all:
            key = (name, line)
            if key not in first_seen:
                first_seen[key] = now
                print(line, file=sys.stderr, flush=True)
            last_problem = line
            if fails_after is not None and now - first_seen[key] >= fails_after:
                waited = f" (for more than {fails_after:g} s)" if fails_after else ""
                raise TrainingError(f"{job.ref}: {line}{waited}")
        if state in ("Complete", "Failed", "Gone", "Deleting"):
            for t in streams.values():
                t.join(timeout=30)  # let the last lines of node 0's log arrive
        if state == "Complete":
            return
        if state in ("Failed", "Gone", "Deleting"):
            why = "; ".join(x for x in (message, last_problem) if x)
            raise TrainingError(f"{job.ref} failed: {why or 'no reason reported'}")
        if now >= deadline:
            hint = f" (last problem: {last_problem})" if last_problem else ""
            raise TrainingError(f"{job.ref} did not finish within {timeout_s:g} s{hint}; deleting it")
        time.sleep(max(0.0, min(poll_s, deadline - now)))
