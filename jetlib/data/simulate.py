"""``jetlib simulate``: quark and gluon jet images from Pythia 8 and FastJet, built in.

Data card
---------
Generator
    Pythia 8.317 (``pythia8mc``), pp at sqrt(s) = 14 TeV, default tune (Monash),
    multiple parton interactions, initial- and final-state showers and
    hadronisation on; unstable hadrons decayed with Pythia's defaults.
Processes (the recipe of the public Pythia quark/gluon benchmark, Komiske et al.,
    JHEP 01 (2019) 121)
    quark jets (``y = 1``): ``q g -> Z q`` (``WeakBosonAndParton:qg2gmZq``), keeping
    only events whose outgoing quark is u, d or s (``quark_flavours``);
    gluon jets (``y = 0``): ``q qbar -> Z g`` (``WeakBosonAndParton:qqbar2gmZg``).
    The Z is a pure Z (``WeakZ0:gmZmode = 2``) decaying only to neutrinos, so the
    jet recoils against nothing visible. The partonic pT is generated in
    ``[0.95 pt_min, 1.15 pt_max]`` (475-632.5 GeV by default, ``pthat_window``) for
    efficiency: then 21% of events pass the jet cuts (12% over the earlier 425-688 GeV, at 1.6x
    the CPU per jet). The price: of the jets the earlier window gave, 14% came from partons
    outside this one (mostly softer partons boosted by initial-state radiation), and the earlier
    window itself missed 5-8% of those a 350-800 GeV window gives. The kept jets' pT, mass and
    constituent multiplicity are indistinguishable from the earlier window's by two-sample
    Kolmogorov-Smirnov tests on 1,000 jets per class and window (every p-value >= 0.1;
    ``benchmarks/simulation.py``, docs/speed.md).
Jets
    anti-kT, R = 0.4 (FastJet), on all visible final-state particles (neutrinos
    removed). The leading jet of the event is kept if its pT is in
    ``[pt_min, pt_max] = [500, 550]`` GeV and its rapidity ``|y| < 1.7``; otherwise the
    event is dropped. ``m0`` is that jet's mass and ``pt`` its pT (GeV), at
    generator level, before detector effects.
Images
    ``(125, 125, 3)`` float32 centred on the jet axis, channels Tracks / ECAL /
    HCAL: see :mod:`jetlib.data.detector` for geometry and resolutions.
File (the public quark/gluon layout)
    ``X_jets`` (N, 125, 125, 3) float32, chunks of 16 jets, gzip level 4 with the
    byte-shuffle filter; ``y`` (N,) float32, 1 = quark, 0 = gluon, exactly half
    each (the extra jet of an odd N is a quark); ``m0``, ``pt`` (N,) float32 GeV.
    File attributes hold the generator versions and the full configuration.
Cache
    A file is kept under ``$JETLIB_CACHE`` by its full settings (:mod:`jetlib.data.simcache`):
    simulating the same settings again copies it (the same bytes).
Reproducibility
    The work is cut into tasks of ``chunk_jets`` jets of one class; task ``k`` of
    class ``c`` seeds Pythia and the smearing from ``(seed, c, k)`` and initialises
    its own Pythia. The output is therefore identical for any ``--workers``. Rows
    are written pair by pair (quark chunk k, gluon chunk k), shuffled within the
    pair, so any prefix of the file is balanced.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from jetlib.data import simcache
from jetlib.data.detector import DetectorConfig, make_images
from jetlib.errors import ConfigError
from jetlib.progress import progress

log = logging.getLogger(__name__)

QUARK, GLUON = 1, 0
PROCESSES = {QUARK: "WeakBosonAndParton:qg2gmZq = on", GLUON: "WeakBosonAndParton:qqbar2gmZg = on"}
NEUTRINOS = (12, 14, 16)
PYTHIA_SEED_MAX = 900_000_000  # Pythia's Random:seed range


@dataclass(frozen=True)
class SimConfig:
    n_jets: int = 1000  # total jets, half quark and half gluon
    seed: int = 0  # seeds everything (Pythia per task, detector smearing per task, row order)
    pt_min: float = 500.0  # GeV: leading-jet pT window
    pt_max: float = 550.0
    max_abs_y: float = 1.7  # leading-jet rapidity cut
    jet_r: float = 0.4  # anti-kT radius
    ecm: float = 14000.0  # GeV, pp centre-of-mass energy
    quark_flavours: tuple[int, ...] = (1, 2, 3)  # |PDG id| of quark jets kept (u, d, s)
    pthat_window: tuple[float, float] = (0.95, 1.15)  # partonic pT generated in [a*pt_min, b*pt_max]
    chunk_jets: int = 100  # jets of one class per task: the unit of parallel work and of seeding
    events_per_batch: int = 64  # events Pythia generates per call
    detector: DetectorConfig = field(default_factory=DetectorConfig)

    def __post_init__(self):
        if self.n_jets < 2:
            raise ConfigError(f"--n-jets must be at least 2 (one quark, one gluon), got {self.n_jets}")
        if not 0 < self.pt_min < self.pt_max:
            raise ConfigError(f"need 0 < pt-min < pt-max, got {self.pt_min} and {self.pt_max}")
        if self.max_abs_y <= 0 or self.jet_r <= 0 or self.chunk_jets < 1:
            raise ConfigError("rapidity cut, jet radius and chunk size must be positive")


@dataclass(frozen=True)
class Task:
    label: int  # QUARK or GLUON
    chunk: int  # index of the chunk within its class
    n_jets: int


def plan_tasks(cfg: SimConfig) -> list[list[Task]]:
    """Pairs of tasks [quark chunk k, gluon chunk k] (the last pair may hold one), in file order."""
    n_class = {QUARK: cfg.n_jets - cfg.n_jets // 2, GLUON: cfg.n_jets // 2}
    chunks = {c: [min(cfg.chunk_jets, n - k) for k in range(0, n, cfg.chunk_jets)] for c, n in n_class.items()}
    pairs = []
    for k in range(max(len(v) for v in chunks.values())):
        pairs.append([Task(c, k, chunks[c][k]) for c in (QUARK, GLUON) if k < len(chunks[c])])
    return pairs


def _seeds(cfg: SimConfig, task: Task) -> tuple[int, np.random.Generator]:
    ss = np.random.SeedSequence([cfg.seed, task.label, task.chunk])
    pythia_seed = int(ss.generate_state(1, np.uint64)[0] % PYTHIA_SEED_MAX) + 1
    return pythia_seed, np.random.default_rng(ss.spawn(1)[0])


def pythia_settings(cfg: SimConfig, label: int, seed: int) -> list[str]:
    return [
        f"Beams:eCM = {cfg.ecm}",
        PROCESSES[label],
        "WeakZ0:gmZmode = 2",  # pure Z, no photon
        "23:onMode = off",
        "23:onIfAny = " + " ".join(map(str, NEUTRINOS)),
        f"PhaseSpace:pTHatMin = {cfg.pthat_window[0] * cfg.pt_min}",
        f"PhaseSpace:pTHatMax = {cfg.pthat_window[1] * cfg.pt_max}",
        "Random:setSeed = on",
        f"Random:seed = {seed}",
        "Next:numberCount = 0",
        "Print:quiet = on",
    ]


_QUIETED = False


@contextmanager
def _quiet_stdout_once():
    """FastJet prints a banner to stdout on first use; stdout belongs to the CLI's result."""
    global _QUIETED
    if _QUIETED:
        yield
        return
    fd = os.dup(1)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(fd, 1)
            os.close(fd)
            _QUIETED = True


def run_task(cfg: SimConfig, task: Task) -> dict:
    """Generate ``task.n_jets`` accepted jets of one class. Runs in a worker process."""
    import awkward as ak
    import fastjet
    import pythia8mc

    timings = {"pythia": 0.0, "cluster": 0.0, "image": 0.0}
    pythia_seed, rng = _seeds(cfg, task)
    t = time.perf_counter()
    pythia = pythia8mc.Pythia("", False)
    for s in pythia_settings(cfg, task.label, pythia_seed):
        pythia.readString(s)
    if not pythia.init():
        raise RuntimeError("Pythia failed to initialise")
    timings["pythia"] += time.perf_counter() - t
    jetdef = fastjet.JetDefinition(fastjet.antikt_algorithm, cfg.jet_r)
    charge_cache: dict[int, bool] = {}
    images, m0s, pts, events = [], [], [], 0
    # what the acceptance benchmark reads: partonic pT of every generated event and of each kept jet,
    # and each kept jet's constituent count (visible particles within jet_r of its axis)
    pthat_events, pthats, n_const = [], [], []
    accepted = 0
    while accepted < task.n_jets:
        t = time.perf_counter()
        batch = pythia.nextBatch(cfg.events_per_batch)
        timings["pythia"] += time.perf_counter() - t
        t = time.perf_counter()
        events += len(batch)
        pthat_events.append(np.sqrt(batch.info.pT2Hat.to_numpy()))
        if task.label == QUARK:  # the outgoing quark has the flavour of the incoming one
            id1, id2 = batch.info.id1.to_numpy(), batch.info.id2.to_numpy()
            quark = np.abs(np.where(id1 == 21, id2, id1))
            batch = batch[np.isin(quark, cfg.quark_flavours)]
        pthat = np.sqrt(batch.info.pT2Hat.to_numpy())
        prt = batch.prt
        aid = abs(prt.id)
        visible = prt[(prt.status > 0) & (aid != 12) & (aid != 14) & (aid != 16)]  # drop neutrinos
        p4 = ak.zip({"px": visible.p.px, "py": visible.p.py, "pz": visible.p.pz, "E": visible.p.e})
        with _quiet_stdout_once():
            jets = fastjet.ClusterSequence(p4, jetdef).inclusive_jets()
        jpt = np.hypot(jets.px, jets.py)
        lead = ak.firsts(jets[ak.argmax(jpt, axis=1, keepdims=True)])
        jx, jy, jz, je = (ak.to_numpy(ak.fill_none(getattr(lead, a), 0.0)) for a in ("px", "py", "pz", "E"))
        jet_pt = np.hypot(jx, jy)
        with np.errstate(divide="ignore", invalid="ignore"):
            rap = 0.5 * np.log((je + jz) / (je - jz))
        ok = np.flatnonzero((jet_pt >= cfg.pt_min) & (jet_pt <= cfg.pt_max) & (np.abs(rap) < cfg.max_abs_y))
        ok = ok[: task.n_jets - accepted]
        timings["cluster"] += time.perf_counter() - t
        if len(ok) == 0:
            continue
        t = time.perf_counter()
        sel = visible[ok]
        counts = ak.to_numpy(ak.num(sel.id))
        pid = ak.to_numpy(ak.flatten(sel.id))
        for p in np.unique(pid):
            if int(p) not in charge_cache:
                charge_cache[int(p)] = pythia.particleData.chargeType(int(p)) != 0
        charged = np.array([charge_cache[int(p)] for p in pid], dtype=bool) if len(pid) else np.zeros(0, bool)
        flat = {a: ak.to_numpy(ak.flatten(getattr(sel.p, a))) for a in ("px", "py", "pz", "e")}
        jet_eta = np.arcsinh(jz[ok] / jet_pt[ok])
        jet_phi = np.arctan2(jy[ok], jx[ok])
        images.append(make_images(np.repeat(np.arange(len(ok)), counts), pid, charged, flat["px"], flat["py"],
                                  flat["pz"], flat["e"], jet_eta, jet_phi, cfg.detector, rng))
        ev = np.repeat(np.arange(len(ok)), counts)
        ppt = np.hypot(flat["px"], flat["py"])
        deta = np.arcsinh(flat["pz"] / np.maximum(ppt, 1e-12)) - jet_eta[ev]
        dphi = np.mod(np.arctan2(flat["py"], flat["px"]) - jet_phi[ev] + np.pi, 2 * np.pi) - np.pi
        n_const.append(np.bincount(ev[deta**2 + dphi**2 < cfg.jet_r**2], minlength=len(ok)))
        pthats.append(pthat[ok])
        m0s.append(np.sqrt(np.maximum(je[ok] ** 2 - jx[ok] ** 2 - jy[ok] ** 2 - jz[ok] ** 2, 0.0)))
        pts.append(jet_pt[ok])
        accepted += len(ok)
        timings["image"] += time.perf_counter() - t
    return {"label": task.label, "images": np.concatenate(images), "m0": np.concatenate(m0s),
            "pt": np.concatenate(pts), "events": events, "timings": timings, "pthat": np.concatenate(pthats),
            "pthat_events": np.concatenate(pthat_events), "n_const": np.concatenate(n_const)}


def _run(args):
    return run_task(*args)


def _versions() -> dict:
    from importlib.metadata import version

    from jetlib import __version__

    return {"pythia8mc": version("pythia8mc"), "fastjet": version("fastjet"), "jetlib": __version__}


def simulate(cfg: SimConfig, out: str | os.PathLike, workers: int | None = None, cache: bool = True) -> dict:
    """Write ``cfg.n_jets`` jets to ``out`` (atomically) and return a summary with jets/s.

    ``cache``: take the file from, and keep it in, ``$JETLIB_CACHE`` (:mod:`jetlib.data.simcache`);
    the summary's ``cached`` says which happened."""
    out = Path(out)
    if out.suffix not in (".h5", ".hdf5"):
        raise ConfigError(f"--out must end in .h5 or .hdf5, got {out.name}")
    if not out.parent.is_dir():
        raise ConfigError(f"--out folder {out.parent} does not exist")
    t0 = time.perf_counter()
    cache_key = simcache.key(asdict(cfg), _versions())
    cached = simcache.fetch(cache_key, out) if cache else None
    if cached is not None:
        log.info("simulation taken from the cache (%s): %d jets", simcache.cache_dir(), cfg.n_jets)
        return {**cached, "cached": True, "wall_s": time.perf_counter() - t0}
    workers = max(1, min(workers or os.cpu_count() or 1, cfg.n_jets))
    pairs = plan_tasks(cfg)
    tasks = [(cfg, t) for pair in pairs for t in pair]
    import h5py

    size = cfg.detector.image_size
    partial = out.with_name(out.name + ".partial")
    totals = {"pythia": 0.0, "cluster": 0.0, "image": 0.0, "events": 0}
    try:
        with h5py.File(partial, "w") as f:
            x = f.create_dataset("X_jets", (cfg.n_jets, size, size, 3), dtype="float32",
                                 chunks=(min(16, cfg.n_jets), size, size, 3), compression="gzip",
                                 compression_opts=4, shuffle=True)
            cols = {k: f.create_dataset(k, (cfg.n_jets,), dtype="float32") for k in ("y", "m0", "pt")}
            f.attrs["generator"] = json.dumps(_versions())
            f.attrs["config"] = json.dumps(asdict(cfg))
            f.attrs["channels"] = "Tracks,ECAL,HCAL"
            f.attrs["labels"] = "1 = quark (Z+q, q in u,d,s), 0 = gluon (Z+g)"
            if workers == 1:
                results = map(_run, tasks)
                pool = None
            else:
                pool = multiprocessing.get_context("spawn").Pool(workers)
                results = pool.imap(_run, tasks, chunksize=1)
            row = 0
            with progress(total=cfg.n_jets, desc="simulate", unit="jet") as bar:
                for k, pair in enumerate(pairs):
                    got = [next(results) for _ in pair]
                    imgs = np.concatenate([g["images"] for g in got])
                    labels = np.concatenate([np.full(len(g["m0"]), g["label"], np.float32) for g in got])
                    perm = np.random.default_rng([cfg.seed, 7, k]).permutation(len(labels))
                    n = len(perm)
                    x[row:row + n] = imgs[perm]
                    cols["y"][row:row + n] = labels[perm]
                    cols["m0"][row:row + n] = np.concatenate([g["m0"] for g in got])[perm]
                    cols["pt"][row:row + n] = np.concatenate([g["pt"] for g in got])[perm]
                    for g in got:
                        totals["events"] += g["events"]
                        for key, v in g["timings"].items():
                            totals[key] += v
                    row += n
                    bar.update(n)
            if pool is not None:
                pool.close()
                pool.join()
        os.replace(partial, out)
    finally:
        if "pool" in locals() and pool is not None:
            pool.terminate()
        partial.unlink(missing_ok=True)
    wall = time.perf_counter() - t0
    busy = totals["pythia"] + totals["cluster"] + totals["image"]
    summary = {
        "jets": cfg.n_jets, "events": totals["events"], "acceptance": cfg.n_jets / max(totals["events"], 1),
        "wall_s": wall, "jets_per_s": cfg.n_jets / wall, "workers": workers,
        "share": {k: totals[k] / busy for k in ("pythia", "cluster", "image")} if busy else {},
    }
    log.info("simulated %d jets from %d events in %.1f s: %.1f jets/s on %d workers; worker time: "
             "Pythia %.0f%%, clustering %.0f%%, imaging %.0f%%", cfg.n_jets, totals["events"], wall,
             summary["jets_per_s"], workers, *(100 * summary["share"].get(k, 0) for k in
                                                 ("pythia", "cluster", "image")))
    if cache:
        simcache.store(cache_key, out, summary)
    return {**summary, "cached": False}
