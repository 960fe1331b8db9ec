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


# KFP 2.17.0's executor pod (backend/src/v2/compiler/argocompiler/container.go,
# addContainerExecutorTemplate): seven emptyDir volumes (the launcher binary and the scratch folders).
KFP_EXECUTOR_VOLUMES = ("kfp-launcher", "gcs-scratch", "s3-scratch", "minio-scratch", "dot-local-scratch",
                        "dot-cache-scratch", "dot-config-scratch")
_HARDENED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
             "seccompProfile": {"type": "RuntimeDefault"}}


def kfp_task_pod(executor: dict, k8s_config: dict | None) -> dict:
    """The PodSpec a KFP 2.17.0 backend runs for one task (an IR executor and its kfp-kubernetes
    config), as far as Pod Security looks at it.

    The compiler's executor template (backend/src/v2/compiler/argocompiler/security_context.go,
    applySecurityContextToExecutorTemplate): the pod gets seccomp RuntimeDefault only, the ``main``
    container no privilege escalation, every capability dropped and seccomp RuntimeDefault, but no
    ``runAsNonRoot`` (user images may run as root); only the ``kfp-launcher`` init container, KFP's
    own image, gets ``runAsNonRoot: true``. Then the driver's pod spec patch (backend/src/v2/driver/
    k8s.go, initPodSpecPatch): the task's ``securityContext`` (kfp-kubernetes set_security_context)
    sets runAsUser, runAsGroup and runAsNonRoot on ``main``, and drops every capability again; its
    emptyDirMounts add volumes. Argo's own ``init``/``wait`` containers come from the Argo
    controller's configuration, not from the pipeline, and are not rendered here.
    """
    cfg = k8s_config or {}
    main = {"name": "main", "image": executor["container"]["image"], "securityContext": dict(_HARDENED)}
    user = cfg.get("securityContext") or {}
    for field in ("runAsUser", "runAsGroup"):
        if field in user:
            main["securityContext"][field] = int(user[field])  # int64 fields: protojson writes them as strings
    if "runAsNonRoot" in user:
        main["securityContext"]["runAsNonRoot"] = user["runAsNonRoot"]
    launcher = {"name": "kfp-launcher", "securityContext": {**_HARDENED, "runAsNonRoot": True}}
    volumes = [{"name": v, "emptyDir": {}} for v in KFP_EXECUTOR_VOLUMES]
    volumes += [{"name": m["volumeName"], "emptyDir": {k: m[k] for k in ("medium", "sizeLimit") if k in m}}
                for m in cfg.get("emptyDirMounts") or []]
    volumes += [{"name": m.get("volumeName", "pvc"), "persistentVolumeClaim": {}} for m in cfg.get("pvcMount") or []]
    return {"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}, "initContainers": [launcher],
            "containers": [main], "volumes": volumes}
