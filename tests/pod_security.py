"""Pod Security Standards, "restricted" profile (with the baseline it includes), for a pod spec.

Re-stated from k8s.io/pod-security-admission v0.33.1 (Kubernetes 1.33, the kind node image),
policy/check_*.go: check_privileged, check_hostNamespaces, check_hostPathVolumes, check_hostPorts,
check_restrictedVolumes, check_runAsNonRoot, check_runAsUser, check_seccompProfile_restricted,
check_allowPrivilegeEscalation, check_capabilities_restricted. What the admission plugin would refuse
in a namespace labelled ``pod-security.kubernetes.io/enforce: restricted``, one line per violation.
"""

from __future__ import annotations

ALLOWED_VOLUMES = {"configMap", "downwardAPI", "emptyDir", "projected", "secret", "csi",
                   "persistentVolumeClaim", "ephemeral", "image"}  # check_restrictedVolumes


def restricted_violations(pod: dict) -> list[str]:
    """Every "restricted" rule ``pod`` (a PodSpec) breaks, e.g. ``container node: runAsNonRoot unset``."""
    out = []
    psc = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            out.append(f"pod: {key}")
    for v in pod.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            out.append(f"volume {v['name']}: {', '.join(sorted(kinds - ALLOWED_VOLUMES))} not allowed")
    if psc.get("runAsUser") == 0:
        out.append("pod: runAsUser 0")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        out.append(f"pod: seccompProfile {pod_seccomp}")
    for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
        sc = c.get("securityContext") or {}
        name = f"container {c['name']}"
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            out.append(f"{name}: hostPort")
        # runAsNonRoot: true on the pod or on every container, and false nowhere
        if sc.get("runAsNonRoot") is False or not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            out.append(f"{name}: runAsNonRoot not true")
        if sc.get("runAsUser") == 0:
            out.append(f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile {seccomp or 'unset'}")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation not false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}: capabilities do not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: capabilities add {caps['add']}")
    return out
