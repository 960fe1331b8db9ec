"""The glue every KFP component shares: one jetlib error as one line and an exit code, and the
ingest and training steps the components call.

The components in ``components/`` stay thin adapters; anything with a decision in it lives in
``jetlib`` (the plan and folder names in :mod:`jetlib.study`, pretraining's placement in
:mod:`jetlib.placement`), where it is tested without KFP.
"""

from __future__ import annotations

import contextlib
import os
import sys

from jetlib.errors import ConfigError
from jetlib.methods import DEFAULT_METHOD
from jetlib.records import PRETRAIN, read_run_json
from jetlib.study import MODES, PRETRAINED, training_dir


@contextlib.contextmanager
def step_errors():
    """Inside a KFP component: a jetlib error becomes its one line on stderr and the CLI's exit code.

    What the pod log and the KFP UI then show is the reason (``ConfigError``: exit 2, store: 3,
    training: 4, out of memory: 5), as ``jetlib <step>`` prints it, instead of a traceback through the executor.
    The environment (:func:`jetlib.schemas.env.check_environment`) is checked first.
    """
    from jetlib.errors import JetlibError, ResourceError, one_line, out_of_memory, out_of_memory_line
    from jetlib.schemas.env import check_environment

    try:
        check_environment()  # every variable jetlib reads, before the step writes anything
        yield
    except JetlibError as e:
        print(f"jetlib: error: {one_line(e)}", file=sys.stderr, flush=True)
        raise SystemExit(e.exit_code) from None
    except Exception as e:  # the machine, not a bug: the CLI's line and exit code; a bug keeps its traceback
        if not out_of_memory(e):
            raise
        print(f"jetlib: error: {out_of_memory_line(e)}", file=sys.stderr, flush=True)
        raise SystemExit(ResourceError.exit_code) from None


def describe(artifact, values: dict) -> None:
    """Set an output artifact's metadata to ``values`` (flat, as MLMD stores it; undefined values
    left out) and write the same as JSON into the artifact's file: the small pointer every step hands on."""
    import json

    from jetlib.kfp_outputs import flat_metadata

    artifact.metadata.update(flat_metadata(values))
    with open(artifact.path, "w") as f:
        json.dump(artifact.metadata, f, indent=1)


def ingest_step(store: str, source: str = "", n_jets: int = 3000, sim_seed: int = 0,
                workers: int | None = None) -> dict:
    """Ingest ``source`` (a local path or ``s3://`` URI of an HDF5 file) into ``store``; with no
    source, simulate ``n_jets`` jets first. Returns the committed dataset's manifest plus its ``uri``.

    A simulated file is kept in the store (``sources/simulated-n<N>-s<seed>.h5``) so that a retried
    or re-run step ingests the same bytes (the same dataset id) without simulating again.
    """
    import tempfile

    from jetlib.data.ingest import ingest
    from jetlib.data.manifest import open_dataset
    from jetlib.data.store import open_store

    with tempfile.TemporaryDirectory(prefix="jetlib-source-", dir=os.environ.get("JETLIB_TMPDIR")) as tmp:
        name = None
        if source.startswith("s3://"):
            parent, key = source.rsplit("/", 1)
            path = os.path.join(tmp, key)
            open_store(parent).get_file(key, path)
        elif source:
            path = source
        else:
            from jetlib.data.simulate import SimConfig, simulate

            name = f"simulated-n{n_jets}-s{sim_seed}"
            key, path, st = f"sources/{name}.h5", os.path.join(tmp, f"{name}.h5"), open_store(store)
            if st.exists(key):
                st.get_file(key, path)
            else:
                simulate(SimConfig(n_jets=n_jets, seed=sim_seed), path, workers=workers or None)
                st.put_file(key, path)
        uri = ingest(path, store, name=name)
    ds = open_dataset(uri)
    return {**ds.manifest, "uri": ds.uri}


def train_step(data: str, run: str, *, problem: str, mode: str, fraction: float, seed: int, preset: str,
               augment: str = "none", encoder: str = "", arch: str = "resnet") -> tuple[str, dict]:
    """One training of the study: ``finetune``, ``linear`` or ``scratch`` (jetlib.finetune) or ``vgg``
    (jetlib.baseline), into its folder in ``run``; returns ``(folder, run.json)``.

    ``encoder`` is the pretraining folder a pretrained mode starts from (:func:`jetlib.study.match_encoders`);
    its own ``run.json`` (method and seed) names the training's folder, so the name says what the
    encoder is, not what it was meant to be. ``arch`` is the network a ``scratch`` training builds (a
    pretrained mode builds its encoder's). One dispatcher, so the pipeline has one loop over every
    training (see :func:`jetlib.study.plan`).
    """
    from jetlib.config import resolve_preset  # auto resolved as the CLI does

    if f"{problem}-{mode}" not in MODES:
        raise ConfigError(f"no training {problem}-{mode}; choose from {', '.join(MODES)}")
    preset = resolve_preset(preset)
    if mode == "vgg":
        from jetlib import baseline

        out = training_dir(run, problem, mode, fraction, seed, None)
        return out, baseline.baseline(data, out, baseline.make_config(preset, label_fraction=fraction, seed=seed))
    from jetlib import finetune

    pseed, method = None, DEFAULT_METHOD
    if mode in PRETRAINED:
        if not encoder:
            raise ConfigError(f"{problem}-{mode} starts from the pretrained encoder, but none was given")
        # the record passed its schema (seed a whole number, method a name): it names the folder below
        config = read_run_json(encoder, PRETRAIN, "encoder")["config"]
        pseed, method = config["seed"], config.get("method", DEFAULT_METHOD)  # a record from before methods
    out = training_dir(run, problem, mode, fraction, seed, pseed, method)
    cfg = finetune.make_config(preset, task=problem, mode=mode, label_fraction=fraction, seed=seed, augment=augment,
                               arch=arch)
    return out, finetune.finetune(data, out, cfg, init=encoder if mode in PRETRAINED else None)
