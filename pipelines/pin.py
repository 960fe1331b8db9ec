"""``make compile-pinned``: compile both pipelines against the images as built, pinned by content.

A KFP 2.17 backend's cache key covers each step's container spec, its image *string* included
(kubeflow/pipelines ``backend/src/v2/cacheutils/cache.go``, ``GenerateCacheKey``), so a rebuilt
``jetlib:0.1.0`` would reuse the steps cached under the old build. Compiling against
``jetlib@sha256:<digest>`` makes a code change a cache miss, and every pod runs exactly the build
that was tested. The committed ``pipelines/*.yaml`` stay the release's (tags, deterministic);
these go to ``build/pipelines/`` (git-ignored):

    make images compile-pinned                  # images pushed to a registry: registry digests
    make images compile-pinned PIN_LOCAL=1      # kind (images loaded, never pushed): content tags

A registry digest (``RepoDigests``) exists only once an image was pushed or pulled. A cluster that
is handed images directly (``kind load docker-image``) cannot resolve one, so ``--local`` tags the
image with its content id instead (``jetlib:0.1.0-<12 hex of the image id>``, made with
``docker tag``): the string changes with the content just the same, and ``kind load`` takes it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class PinError(Exception):
    """An image cannot be pinned (one line for the user)."""


def _repository(image: str) -> str:
    """``reg:5000/jetlib:0.1.0`` -> ``reg:5000/jetlib`` (a tag follows the last ``:`` after the last ``/``)."""
    name = image.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def docker_inspect(image: str) -> dict:
    """``docker image inspect IMAGE``'s first object; PinError when docker or the image is missing."""
    try:
        done = subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True)
    except FileNotFoundError:
        raise PinError("docker is not installed: pinning reads the built image's digest from docker") from None
    if done.returncode:
        raise PinError(f"image {image} not found by docker (build it first: make images)")
    return json.loads(done.stdout)[0]


def pinned_reference(image: str, inspected: dict, local: bool = False) -> str:
    """The reference a cluster should run for ``image``: ``repo@sha256:...`` from ``RepoDigests``,
    or with ``local`` and no registry digest, the content tag ``<image>-<12 hex of the image id>``."""
    repo = _repository(image)
    for ref in inspected.get("RepoDigests") or []:
        name, _, digest = ref.partition("@")
        if name == repo and DIGEST.fullmatch(digest):
            return ref
    if not local:
        raise PinError(f"image {image} has no registry digest (it was never pushed): docker push it, or "
                       f"PIN_LOCAL=1 for a cluster that loads images (kind)")
    image_id = inspected.get("Id", "")
    if not DIGEST.fullmatch(image_id):
        raise PinError(f"image {image}: docker reports no content id ({image_id!r})")
    tagged = image.split("@", 1)[0]
    return f"{tagged}-{image_id[7:19]}" if ":" in tagged.rsplit("/", 1)[-1] else f"{tagged}:{image_id[7:19]}"


def pin(images: dict[str, str], local: bool, inspect=docker_inspect, tag=None) -> dict[str, str]:
    """``{"JETLIB_IMAGE": ref, ...}``: each image's pinned reference (content tags created with ``tag``)."""
    tag = tag or (lambda src, dst: subprocess.run(["docker", "tag", src, dst], check=True))
    out = {}
    for var, image in images.items():
        ref = pinned_reference(image, inspect(image), local)
        if "@" not in ref:
            tag(image, ref)
        out[var] = ref
    return out


def main(argv: list[str] | None = None) -> int:
    from components._image import CUDA_IMAGE, IMAGE

    p = argparse.ArgumentParser(prog="python -m pipelines.pin", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "build" / "pipelines", help="folder for the YAML files")
    p.add_argument("--flavors", default="cpu cuda", help="images built: cpu, cuda or both (default both)")
    p.add_argument("--local", action="store_true", help="no registry digest: tag each image with its content id")
    args = p.parse_args(argv)
    flavors = set(args.flavors.split())
    wanted = {var: image for var, image, flavor in (("JETLIB_IMAGE", IMAGE, "cpu"),
                                                     ("JETLIB_CUDA_IMAGE", CUDA_IMAGE, "cuda")) if flavor in flavors}
    try:
        if not wanted:
            raise PinError(f"--flavors {args.flavors!r}: name cpu, cuda or both")
        refs = pin(wanted, args.local)
    except PinError as e:
        print(f"pin: error: {e}", file=sys.stderr)
        return 2
    for var, ref in refs.items():
        print(f"pin: {var}={ref}", file=sys.stderr)
    if "JETLIB_CUDA_IMAGE" not in refs:  # the GPU pipeline's training steps then still name a tag
        print(f"pin: {CUDA_IMAGE} not pinned (--flavors {args.flavors}): only the CPU pipeline is fully pinned",
              file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **refs}
    done = subprocess.run([sys.executable, "-m", "pipelines.jet_ssl", "--out", str(args.out)], cwd=ROOT, env=env)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
