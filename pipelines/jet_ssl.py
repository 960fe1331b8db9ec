"""The study as one KFP v2 pipeline: ingest -> pretrain -> every training x label fraction x seed
-> evaluate each -> report.

``python -m pipelines.jet_ssl`` (``make compile``) writes ``pipelines/jet_ssl.yaml`` (GPU nodes) and
``pipelines/jet_ssl_cpu.yaml`` (no accelerators, node selectors or tolerations: a GPU-less kind
cluster, and what ``make demo`` runs under ``kfp.local``). Everything Kubernetes-specific is set
here, never in a component:

* GPU steps (pretrain, finetune, baseline): ``nvidia.com/gpu`` limit (``gpus_per_node`` for
  pretraining, 1 otherwise), the ``nvidia.com/gpu.present=true`` node selector, a toleration
  for the ``nvidia.com/gpu`` taint, and the CUDA image;
* training steps: a memory-backed ``/dev/shm`` (PyTorch shares tensors through it);
* every step: CPU and memory requests, and the store credentials from the Secret named by the
  ``store_secret`` parameter (keys ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
  ``JETLIB_S3_ENDPOINT``; kfp-kubernetes 2.17 takes the name at run time);
* retries on the steps that resume from the store (ingest, pretrain, finetune, baseline);
  caching on for ingest, pretrain and the trainings (same inputs, same outputs), off for the
  plan (it names the run folder) and the report (it reads whatever the run folder holds).

The images are fixed at compile time (``components/_image.py``: ``JETLIB_IMAGE``,
``JETLIB_CUDA_IMAGE``) because ``kfp.local``'s DockerRunner cannot resolve an image given as a
run parameter; ``image`` (a parameter) is only what a multi-node pretraining's workers run.
"""

import argparse
from pathlib import Path

from kfp import compiler, dsl, kubernetes

from components._image import CUDA_IMAGE, IMAGE
from components.baseline import baseline
from components.evaluate import evaluate
from components.finetune import finetune
from components.ingest import ingest
from components.plan import plan, run_folder
from components.pretrain import pretrain
from components.report import report
from jetlib.workflow import MODES

HERE = Path(__file__).resolve().parent
SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "JETLIB_S3_ENDPOINT")
GPU = "nvidia.com/gpu"
# (cpu, memory) requests per step: GPU nodes, then a small kind cluster.
REQUESTS = {
    True: {"plan": ("100m", "256Mi"), "ingest": ("2", "4Gi"), "pretrain": ("8", "32Gi"), "train": ("4", "16Gi"),
           "evaluate": ("2", "8Gi"), "report": ("1", "4Gi")},
    False: {"plan": ("100m", "256Mi"), "ingest": ("1", "2Gi"), "pretrain": ("2", "4Gi"), "train": ("1", "2Gi"),
            "evaluate": ("1", "2Gi"), "report": ("500m", "2Gi")},
}


def _configure(task, step: str, secret, gpu: bool, gpus=None, cache: bool = True, retries: int = 0):
    """Kubernetes settings for one task."""
    cpu, memory = REQUESTS[gpu][step]
    task.set_cpu_request(cpu).set_memory_request(memory).set_caching_options(cache)
    if step != "plan":
        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env={k: k for k in SECRET_KEYS})
    if retries:
        task.set_retry(num_retries=retries, backoff_duration="30s", backoff_factor=2.0)
    if step in ("pretrain", "train"):
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory")
        if gpu:
            task.set_container_image(CUDA_IMAGE).set_accelerator_type(GPU).set_accelerator_limit(gpus or 1)
            kubernetes.add_node_selector(task, "nvidia.com/gpu.present", "true")
            kubernetes.add_toleration(task, key=GPU, operator="Exists", effect="NoSchedule")
    return task


def build(gpu: bool = True):
    """The pipeline function for GPU nodes (``gpu``) or for CPU-only clusters."""

    @dsl.pipeline(name="jet-ssl" if gpu else "jet-ssl-cpu",
                  description="SimCLR on jet images: ingest, pretrain, fine-tune vs baselines, evaluate, report")
    def jet_ssl(
        store: str = "s3://jetlib/study",
        source: str = "",
        n_jets: int = 3000,
        sim_seed: int = 0,
        run_name: str = "",
        preset: str = "auto",
        augment: str = "seed",
        finetune_augment: str = "none",
        label_fractions: list = [0.01, 0.1],  # noqa: B006 (KFP reads defaults from the signature)
        seeds: list = [0, 1, 2],  # noqa: B006
        modes: list = list(MODES),  # noqa: B006
        pretrain_seed: int = 0,
        gpus_per_node: int = 1,
        nodes: int = 1,
        image: str = CUDA_IMAGE if gpu else IMAGE,
        store_secret: str = "jetlib-s3",
    ):
        """Run the study.

        Args:
            store: object store for data and every output (``s3://bucket/prefix``; a local folder
                only under ``kfp.local``).
            source: HDF5 file (``s3://`` URI or path); empty: simulate ``n_jets`` jets with ``sim_seed``.
            n_jets: jets to simulate when ``source`` is empty.
            sim_seed: simulation seed.
            run_name: output folder ``STORE/runs/<run_name>``; empty: the KFP run's name. Give one
                to have a re-run reuse (resume) its steps.
            preset: tiny, cpu, gpu, or auto (gpu where CUDA is visible).
            augment: pretraining augmentations, seed or physics.
            finetune_augment: fine-tuning augmentations, none, seed or physics.
            label_fractions: label fractions for every training (subsets the dataset has).
            seeds: training seeds.
            modes: trainings, ``<task>-<mode>`` from cls-finetune, reg-finetune, cls-linear,
                cls-scratch, reg-scratch, cls-vgg.
            pretrain_seed: SimCLR seed.
            gpus_per_node: GPUs of the pretraining pod (torchrun runs one process per GPU).
            nodes: pretraining nodes; more than 1 submits a multi-node training job.
            image: the image of a multi-node pretraining's workers.
            store_secret: Kubernetes Secret holding the store credentials.
        """
        run = _configure(run_folder(store=store, run_name=run_name, job_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER),
                         "plan", store_secret, gpu, cache=False).output
        # Two plans, each with the one output kfp.local can loop over (``Output``).
        plans = [_configure(plan(store=store, run_name=run_name, job_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                                 label_fractions=label_fractions, seeds=seeds, modes=modes, kind=kind),
                            "plan", store_secret, gpu, cache=False) for kind in ("resnet", "vgg")]
        runs, baselines = (p.output for p in plans)
        # A bad grid stops the run before any simulation or training.
        data = _configure(ingest(store=store, source=source, n_jets=n_jets, sim_seed=sim_seed),
                          "ingest", store_secret, gpu, retries=2).after(*plans)
        ds = data.outputs["dataset"]
        enc = _configure(pretrain(dataset=ds, run=run, preset=preset, augment=augment, seed=pretrain_seed,
                                  nodes=nodes, gpus_per_node=gpus_per_node, image=image, secret=store_secret),
                         "pretrain", store_secret, gpu, gpus=gpus_per_node, retries=2)
        with dsl.ParallelFor(runs) as item:
            trained = _configure(finetune(dataset=ds, encoder=enc.outputs["encoder"], run=item.folder,
                                          problem=item.problem, mode=item.mode, label_fraction=item.fraction,
                                          seed=item.seed, preset=preset, augment=finetune_augment),
                                 "train", store_secret, gpu, retries=2)
            scored = _configure(evaluate(dataset=ds, model=trained.outputs["model"], run=item.folder),
                                "evaluate", store_secret, gpu)
        with dsl.ParallelFor(baselines) as item:
            vgg = _configure(baseline(dataset=ds, run=item.folder, label_fraction=item.fraction, seed=item.seed,
                                      preset=preset),
                             "train", store_secret, gpu, retries=2)
            vgg_scored = _configure(evaluate(dataset=ds, model=vgg.outputs["model"], run=item.folder),
                                    "evaluate", store_secret, gpu)
        _configure(report(run=run, results=dsl.Collected(scored.outputs["metrics"]),
                          baseline_results=dsl.Collected(vgg_scored.outputs["metrics"])),
                   "report", store_secret, gpu, cache=False)

    return jet_ssl


def compile_all(out: Path = HERE) -> list[Path]:
    """Write ``jet_ssl.yaml`` and ``jet_ssl_cpu.yaml`` into ``out``."""
    paths = [out / "jet_ssl.yaml", out / "jet_ssl_cpu.yaml"]
    for gpu, path in zip((True, False), paths, strict=True):
        compiler.Compiler().compile(build(gpu), str(path))
    return paths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Compile the jet SSL pipeline (GPU and CPU variants).")
    p.add_argument("--out", type=Path, default=HERE, help="folder for the YAML files (default pipelines/)")
    args = p.parse_args(argv)
    for path in compile_all(args.out):
        print(path)


if __name__ == "__main__":
    main()
