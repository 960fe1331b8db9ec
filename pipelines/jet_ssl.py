"""The study as one KFP v2 pipeline: ingest -> (with ``tune_trials`` > 0) a loop tuning each method ->
one loop over every pretraining (method x pretraining seed) -> one loop over every training (label fraction
x seed x mode, x pretraining for the pretrained modes) -> evaluate each -> report -> export the best model
of each task (ONNX, by validation).

``python -m pipelines.jet_ssl`` (``make compile``) writes ``pipelines/jet_ssl.yaml`` (GPU nodes) and
``pipelines/jet_ssl_cpu.yaml`` (no accelerators, node selectors or tolerations: a GPU-less kind
cluster, and what ``make demo`` runs under ``kfp.local``). Everything Kubernetes-specific is set
here, never in a component, each for a reason a KFP 2.17.0 backend gives (docs/workflow.md):

* **Two flat loops, one fan-in each.** A backend's driver collects a ``dsl.Collected`` only from a
  loop that ran (``backend/src/v2/driver/resolve.go``, ``resolveUpstreamArtifacts``:
  ``iterations > 0``); a loop with zero iterations fails the consumer. So every pretraining is an
  item of one loop and every training, the VGG baseline included, an item of a second one, side
  by side (never nested), each over a list a plan refuses to leave empty (``plan_pretraining``'s
  and, through ``match_encoders`` which keeps its length, ``plan``'s). ``match_encoders``
  collects the pretraining loop's encoders once and hands each pretrained training the folder
  of its (method, pretraining seed) inside the training loop's items; one ``train`` component
  dispatches every training, and the report collects the training loop's evaluations. The
  cost: scratch and VGG trainings wait for pretraining although they do not use it. The tune loop
  before them (over ``methods``, its one ``dsl.If`` inside: :func:`_tuning_loop`) is collected by
  nothing: its steps leave each recipe in the run folder, where the pretrainings read it.
* **GPU counts are strings.** The driver reads an accelerator count with ``GetStringValue()``
  (``resolve.go``, ``resolvePodSpecInputRuntimeParameter``) and sets no limit when it is empty,
  which it is for an ``int`` parameter. The trainings ask for the constant ``"1"``; pretraining
  for the string output of ``pretrain_gpus``: ``gpus_per_node`` on one node, and ``"0"`` when
  ``nodes > 1``, because that pod only waits for the multi-node job, and holding GPUs while the
  job's workers wait for theirs deadlocks a small cluster. The CPU pipeline defaults to
  ``gpus_per_node=0``; ``pretrain`` refuses GPUs it was asked for and cannot see.
* GPU steps (pretrain, train): ``nvidia.com/gpu`` limit, the ``nvidia.com/gpu.present=true``
  node selector, a toleration for the ``nvidia.com/gpu`` taint, and the CUDA image.
* **``/dev/shm`` with a ``size_limit``** (:data:`SHM`) on the training steps: a memory-backed
  emptyDir counts against the pod's memory and, unbounded, lets a leak grow until the node
  evicts pods; the sizes cover NCCL's shared-memory transport between torchrun's processes
  (pretraining) and PyTorch's tensor sharing, with room to spare.
* **The loop's ``parallelism``** (:data:`PARALLELISM`): at most 8 trainings at once on GPU nodes
  (8 GPUs, one node's worth, instead of up to 30 pods asking at once and starving other
  users' jobs), 2 on a CPU cluster (a kind cluster's two workers).
* every step: CPU and memory requests, readable display names, and the store credentials from
  the Secret named by the ``store_secret`` parameter (keys ``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``JETLIB_S3_ENDPOINT``; kfp-kubernetes 2.17 takes the name at run time);
* **Retries only outside the loops** (ingest): a 2.17.0 backend drops a ``set_retry`` of a task inside
  a ``dsl.ParallelFor`` (``backend/src/v2/compiler/argocompiler/dag.go``, ``iterationItemTask``, gives
  the iteration template no retry strategy; kubeflow/pipelines issues 12389 and 13897, open), so
  pretrain and train carry none rather than one that does not run. A failed pretraining or training
  resumes when the run is retried or re-submitted with the same ``run_name``: cached steps are
  skipped and the step restarts from its newest checkpoint in the store (docs/cluster-readings.md).
  Caching on for ingest, pretrain and the trainings (same inputs, same outputs), off for the plan,
  the run folder (they name the run's folder from its id) and the report (it reads the run folder).
* **Every task runs as the images' non-root user** (kfp-kubernetes ``set_security_context``, applied
  by the driver, ``backend/src/v2/driver/k8s.go``): the compiler sets ``runAsNonRoot`` only on KFP's
  own launcher container (``argocompiler/security_context.go``), so without it a task pod fails Pod
  Security "restricted".
* **The pretraining pod's size is decided at run time** (``pretrain_size``): a training pod's CPU and
  memory on one node, a plan step's when ``nodes > 1`` (it only waits for the job's workers).
* **The run folder** defaults to the run's id (``dsl.PIPELINE_JOB_ID_PLACEHOLDER``: the backend's
  ``{{workflow.uid}}``, kfp.local's random id), unique per run; ``run_name`` names it to resume.

The images are fixed at compile time (``components/_image.py``: ``JETLIB_IMAGE``,
``JETLIB_CUDA_IMAGE``) because ``kfp.local``'s DockerRunner cannot resolve an image given as a
run parameter, and because a backend's cache key covers the image string: ``make compile-pinned``
compiles against the built images' digests into ``build/pipelines/`` (``pipelines/pin.py``).
``image`` (a parameter) is only what a multi-node pretraining's workers run.
"""

import argparse
from pathlib import Path

from kfp import compiler, dsl, kubernetes

from components._image import CUDA_IMAGE, IMAGE
from components.evaluate import evaluate
from components.export import export
from components.ingest import ingest
from components.plan import match_encoders, plan, plan_pretraining, pretrain_gpus, run_folder
from components.pod_size import pretrain_size
from components.pretrain import pretrain
from components.report import report
from components.train import train
from components.tune import tune
from jetlib.cluster.spec import UID
from jetlib.study import DEFAULT_METHODS, DEFAULT_PRETRAIN_SEEDS, MODES

HERE = Path(__file__).resolve().parent
SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "JETLIB_S3_ENDPOINT")
GPU = "nvidia.com/gpu"
# (cpu, memory) requests per step: GPU nodes, then a small kind cluster.
REQUESTS = {
    True: {"plan": ("100m", "256Mi"), "ingest": ("2", "4Gi"), "pretrain": ("8", "32Gi"), "train": ("4", "16Gi"),
           "evaluate": ("2", "8Gi"), "report": ("1", "4Gi"), "export": ("2", "8Gi"), "tune": ("500m", "1Gi")},
    False: {"plan": ("100m", "256Mi"), "ingest": ("1", "2Gi"), "pretrain": ("2", "4Gi"), "train": ("1", "2Gi"),
            "evaluate": ("1", "2Gi"), "report": ("500m", "2Gi"), "export": ("1", "2Gi"), "tune": ("500m", "1Gi")},
}
# /dev/shm size limits of the training steps (a quarter of the step's memory request).
SHM = {True: {"pretrain": "8Gi", "train": "4Gi"}, False: {"pretrain": "1Gi", "train": "512Mi"}}
PARALLELISM = {True: 8, False: 2}  # trainings running at once (see the module docstring)
# pretrainings running at once: each holds gpus_per_node GPUs (or a multi-node job) for hours
PRETRAIN_PARALLELISM = {True: 2, False: 1}
# Katib trials of one method running at once (each a TrainJob holding a GPU while it runs), and methods tuned
# at once: 4 x 2 trials is one 8-GPU node's worth, 2 x 1 a kind cluster's two workers; the tune pod itself
# only waits for its Experiment
TUNE_PARALLEL = {True: 2, False: 1}
TUNE_METHODS_PARALLELISM = {True: 4, False: 2}
GPUS_PER_NODE = {True: 1, False: 0}  # the default of the gpus_per_node parameter
NAMES = {"plan": "plan the study", "plan-pretraining": "plan the pretrainings", "run-folder": "run folder",
         "pretrain-gpus": "pretraining GPUs", "pretrain-size": "pretraining pod size",
         "ingest": "ingest", "pretrain": "pretrain", "train": "train", "evaluate": "evaluate",
         "report": "report", "export": "export the best taggers (ONNX)",
         "match-encoders": "match encoders to trainings",
         "pretrain-loop": "every pretraining (method x seed)", "loop": "every training (mode x fraction x seed)",
         "tune": "tune the method's recipe", "tune-loop": "tune each method", "tuning": "when tune_trials > 0"}


def _configure(task, step: str, secret, gpu: bool, gpus="1", cache: bool = True, retries: int = 0, name: str = "",
               size=None):
    """Kubernetes settings for one task; ``gpus`` is the GPU limit of a GPU step (a string, see above),
    ``size`` a task whose ``cpu`` and ``memory`` outputs are its requests (else :data:`REQUESTS`')."""
    cpu, memory = (size.outputs["cpu"], size.outputs["memory"]) if size is not None else REQUESTS[gpu][step]
    task.set_cpu_request(cpu).set_memory_request(memory).set_caching_options(cache)
    if size is not None:  # kfp.local orders a loop's tasks by dependentTasks alone (the backend also by inputs)
        task.after(size)
    task.set_display_name(NAMES[name or step])
    kubernetes.set_security_context(task, run_as_user=UID, run_as_group=UID, run_as_non_root=True)
    if step != "plan":
        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env={k: k for k in SECRET_KEYS})
    if retries:
        task.set_retry(num_retries=retries, backoff_duration="30s", backoff_factor=2.0)
    if step in ("pretrain", "train"):
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                                   size_limit=SHM[gpu][step])
        if gpu:
            task.set_container_image(CUDA_IMAGE).set_accelerator_type(GPU).set_accelerator_limit(gpus)
            kubernetes.add_node_selector(task, "nvidia.com/gpu.present", "true")
            kubernetes.add_toleration(task, key=GPU, operator="Exists", effect="NoSchedule")
    return task


def build(gpu: bool = True):
    """The pipeline function for GPU nodes (``gpu``) or for CPU-only clusters."""

    @dsl.pipeline(name="jet-ssl" if gpu else "jet-ssl-cpu",
                  description="Self-supervised pretraining on jet images: ingest, pretrain (one or more methods "
                              "and seeds), fine-tune vs baselines, evaluate, report")
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
        methods: list = list(DEFAULT_METHODS),  # noqa: B006
        encoder: str = "resnet",
        pretrain_seeds: list = list(DEFAULT_PRETRAIN_SEEDS),  # noqa: B006
        gpus_per_node: int = GPUS_PER_NODE[gpu],
        nodes: int = 1,
        image: str = CUDA_IMAGE if gpu else IMAGE,
        store_secret: str = "jetlib-s3",
        tune_trials: int = 0,
        tune_epochs: int = 0,
    ):
        """Run the study.

        Args:
            store: object store for data and every output (``s3://bucket/prefix``; a local folder
                only under ``kfp.local``).
            source: HDF5 file (``s3://`` URI or path); empty: simulate ``n_jets`` jets with ``sim_seed``.
            n_jets: jets to simulate when ``source`` is empty.
            sim_seed: simulation seed.
            run_name: output folder ``STORE/runs/<run_name>``; empty: the KFP run's id (unique per
                run). Give one to have a re-run reuse (resume) its steps.
            preset: tiny, cpu, gpu, or auto (gpu when GPUs were asked for, else cpu).
            augment: pretraining augmentations, seed or physics.
            finetune_augment: fine-tuning augmentations, none, seed or physics.
            label_fractions: label fractions for every training (subsets the dataset has).
            seeds: training seeds.
            modes: trainings, ``<task>-<mode>`` from cls-finetune, reg-finetune, cls-linear,
                cls-scratch, reg-scratch, cls-vgg (at least one).
            methods: pretraining methods, names in ``jetlib.methods.METHODS`` (at least one); every
                finetune and linear training runs once per method and pretraining seed.
            encoder: the network every method pretrains, a name in ``jetlib.models.ARCHS`` (resnet:
                the ResNet-15; vit: a small vision transformer), and the network of the scratch trainings;
                one per run, so two runs compare two.
            pretrain_seeds: pretraining seeds (at least one).
            gpus_per_node: GPUs of each pretraining node (torchrun runs one process per GPU); 0
                pretrains on the CPU; at least 1 fails the step if the pod sees fewer.
            nodes: pretraining nodes; more than 1 submits a multi-node training job.
            image: the image of a multi-node pretraining's workers.
            store_secret: Kubernetes Secret holding the store credentials.
            tune_trials: 0: every method pretrains with its own recipe; more: each method is first tuned
                with that many trials of ``preset`` (a Katib Experiment on a cluster, Optuna in the step
                under kfp.local) and its pretrainings run the recipe found (``RUN/tune/<method>/``).
            tune_epochs: epochs of each tuning trial; 0: the preset's (the pretrainings' own schedule).
        """
        k8s = _Cluster(gpu, store_secret)
        job = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        run, grid, pregrid = _plans(k8s, store, run_name, job, label_fractions, seeds, modes, methods,
                                    pretrain_seeds, preset, augment, finetune_augment, encoder)
        # A bad grid or run name stops the run before any simulation or training.
        ds = k8s(ingest(store=store, source=source, n_jets=n_jets, sim_seed=sim_seed), "ingest",
                 retries=2).after(grid, pregrid).outputs["dataset"]
        tuned = _tuning_loop(k8s, methods, ds, store, run_name, job, preset, tune_trials, tune_epochs, gpus_per_node,
                             image)
        encoders = _pretraining_loop(k8s, pregrid, ds, preset, augment, encoder, gpus_per_node, nodes, image,
                                     tune_trials, tune_epochs, after=tuned)
        evaluations = _training_loop(k8s, grid, encoders, ds, preset, finetune_augment, encoder)
        _report_and_export(k8s, run, evaluations)

    return jet_ssl


class _Cluster:
    """``_configure`` with the run's GPU choice and Secret bound: ``k8s(task, step, ...)``."""

    def __init__(self, gpu: bool, secret):
        self.gpu, self.secret = gpu, secret

    def __call__(self, task, step: str, **settings):
        return _configure(task, step, self.secret, self.gpu, **settings)


def _plans(k8s: _Cluster, store, run_name, job, label_fractions, seeds, modes, methods, pretrain_seeds, preset,
           augment, finetune_augment, encoder):
    """The run folder, the training loop's items and the pretraining loop's items, each checked before ingest."""
    run = k8s(run_folder(store=store, run_name=run_name, job_id=job), "plan", cache=False, name="run-folder").output
    grid = k8s(plan(store=store, run_name=run_name, job_id=job, label_fractions=label_fractions, seeds=seeds,
                    modes=modes, methods=methods, pretrain_seeds=pretrain_seeds, preset=preset, augment=augment,
                    finetune_augment=finetune_augment, encoder=encoder), "plan", cache=False)
    pregrid = k8s(plan_pretraining(store=store, run_name=run_name, job_id=job, methods=methods,
                                   pretrain_seeds=pretrain_seeds), "plan", cache=False, name="plan-pretraining")
    return run, grid, pregrid


def _tuning_loop(k8s: _Cluster, methods, ds, store, run_name, job, preset, tune_trials, tune_epochs, gpus_per_node,
                 image):
    """Each method's search, when ``tune_trials`` > 0; returns the tune task (the pretraining loop runs after it).

    A loop over the ``methods`` parameter with the condition inside it: with ``tune_trials`` 0 no tune
    task runs, and the loop (unlike one a condition encloses) is a task the pretraining loop may
    follow: the KFP SDK 2.17 compiler refuses a dependency on a task in a ``dsl.If`` from outside it
    (``compiler_utils.get_dependencies``) but allows ``.after`` a task in a ``dsl.ParallelFor``; a 2.17.0
    backend skips a false condition (``argocompiler/dag.go``: the condition's DAG runs ``when`` its driver's
    condition is not false), which leaves the iteration, and so the loop, Succeeded.
    """
    with (dsl.ParallelFor(methods, parallelism=TUNE_METHODS_PARALLELISM[k8s.gpu], name=NAMES["tune-loop"]) as method,
          dsl.If(tune_trials > 0, name=NAMES["tuning"])):
        tuned = k8s(tune(dataset=ds, store=store, run_name=run_name, job_id=job, method=method, trials=tune_trials,
                         preset=preset, epochs=tune_epochs, gpus_per_node=gpus_per_node, image=image,
                         parallel=TUNE_PARALLEL[k8s.gpu]), "tune")
    return tuned


def _pretraining_loop(k8s: _Cluster, pregrid, ds, preset, augment, encoder, gpus_per_node, nodes, image, tune_trials,
                      tune_epochs, after):
    """Every pretraining (method x pretraining seed) after ``after`` (the tuning), its pod sized at run time, its
    recipe the tuned one when ``tune_trials`` > 0; returns the loop's encoders."""
    gpu = k8s.gpu
    with dsl.ParallelFor(pregrid.output, parallelism=PRETRAIN_PARALLELISM[gpu], name=NAMES["pretrain-loop"]) as pre:
        size = k8s(pretrain_size(nodes=nodes, cpu=REQUESTS[gpu]["pretrain"][0], memory=REQUESTS[gpu]["pretrain"][1],
                                 waiting_cpu=REQUESTS[gpu]["plan"][0], waiting_memory=REQUESTS[gpu]["plan"][1]),
                   "plan", name="pretrain-size")
        gpus, counted = "0", []
        if gpu:  # inside the loop: the KFP SDK 2.17 compiler does not carry a GPU-limit channel into a loop
            counted = [k8s(pretrain_gpus(nodes=nodes, gpus_per_node=gpus_per_node), "plan", name="pretrain-gpus")]
            gpus = counted[0].output
        enc = k8s(pretrain(dataset=ds, run=pre.folder, preset=preset, augment=augment, method=pre.method, arch=encoder,
                           seed=pre.seed, nodes=nodes, gpus_per_node=gpus_per_node, image=image, secret=k8s.secret,
                           tune_trials=tune_trials, tune_epochs=tune_epochs),
                  "pretrain", gpus=gpus, size=size).after(*counted, after)
    return enc.outputs["encoder"]


def _training_loop(k8s: _Cluster, grid, encoders, ds, preset, finetune_augment, encoder):
    """Every training and its evaluation, each pretrained one from its encoder; returns the evaluations."""
    # the one fan-in of the pretraining loop: never empty, since plan never plans no pretraining
    matched = k8s(match_encoders(trainings=grid.output, encoders=dsl.Collected(encoders)), "plan", cache=False,
                  name="match-encoders")
    with dsl.ParallelFor(matched.output, parallelism=PARALLELISM[k8s.gpu], name=NAMES["loop"]) as item:
        trained = k8s(train(dataset=ds, encoder=item.encoder, run=item.folder, problem=item.problem, mode=item.mode,
                            label_fraction=item.fraction, seed=item.seed, preset=preset, augment=finetune_augment,
                            arch=encoder), "train")
        scored = k8s(evaluate(dataset=ds, model=trained.outputs["model"], run=item.folder), "evaluate")
    return scored.outputs["metrics"]


def _report_and_export(k8s: _Cluster, run, evaluations) -> None:
    """The report over every evaluation, then the best model of each task by its validation metric, as ONNX
    with its card."""
    reported = k8s(report(run=run, results=dsl.Collected(evaluations)), "report", cache=False)
    k8s(export(run=run), "export", cache=False).after(reported)


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
    args.out.mkdir(parents=True, exist_ok=True)
    for path in compile_all(args.out):
        print(path)


if __name__ == "__main__":
    main()
