"""The model card of an exported tagger: what it is, what it was trained and tested on, and what not.

:func:`build_card` gathers it from records jetlib already keeps (``model.pt``, ``run.json``, the
dataset's manifest and the ``jetlib evaluate`` result); :func:`card_markdown` renders the same
dictionary for people. Nothing is typed in by hand, so the card cannot drift from the model.
"""

from __future__ import annotations

import platform

from jetlib import __version__, methods, tasks
from jetlib.provenance import package_versions


def _origin(blob: dict) -> dict:
    origin = blob.get("origin") or {}
    if blob.get("mode") in ("finetune", "linear") and origin.get("encoder_sha256"):
        return {"method": origin.get("method") or methods.DEFAULT_METHOD, "seed": origin.get("pretrain_seed"),
                "encoder_sha256": origin["encoder_sha256"], "encoder": origin.get("init"),
                "dataset": origin.get("pretrain_dataset"), "labels_used": False}
    return {"method": None, "note": "none: trained from random initialisation on labelled jets only"}


def build_card(m, result: dict, parity: dict, onnx_sha256: str, opset: int, input_name: str) -> dict:
    """The card as a JSON-ready dict. ``m`` is a :class:`~jetlib.tagger.load.Loaded`; ``result`` its
    ``jetlib evaluate`` result (test split)."""
    import onnx
    import onnxruntime
    import torch

    ds = m.dataset.manifest
    c, h, w = m.image_shape
    task = m.task
    names = ds["image"]["channel_names"]
    source = ds.get("source", {})
    test = {k: result["scalars"].get(k) for k in task.keys}
    unit = "probability that the jet is a quark jet (label 1 = quark, 0 = gluon)" if m.column == "p_quark" else \
        "jet mass, GeV" if m.column == "mass_pred_gev" else f"the {task.name} task's prediction"
    training = m.run.get("training") or {}
    return {
        "format": "jetlib.model_card/1",
        "name": f"{m.blob['task']}-{m.blob['mode']}-f{m.blob['label_fraction']:g}-s{m.blob['seed']}",
        "task": {"name": task.name, "title": task.title},
        "model": {"arch": m.blob["arch"], "mode": m.blob["mode"], "config": m.blob.get("config"),
                  "model_pt_sha256": m.sha256, "training_run": m.uri},
        "onnx": {"file": "model.onnx", "sha256": onnx_sha256, "opset": opset,
                 "input": {"name": input_name, "shape": ["batch", c, h, w], "dtype": "float32",
                           "channels": names, "units": "raw pixel energies as the HDF5 file holds them (GeV)"},
                 "output": {"name": m.column, "shape": ["batch"], "dtype": "float32", "meaning": unit},
                 "normalisation_inside": {"multiply_by": [float(v) for v in m.scale],
                                          "what": "1 / train-split std of each channel (zeros included)"
                                          if m.blob.get("normalize") == "scale" else "none"},
                 "parity_with_torch": parity,
                 # the graph computes in float32, as jetlib predict and evaluate do on the CPU; on CUDA they
                 # keep the training's autocast (bf16), which rounds more
                 "precision": {"graph": "float32", "training_autocast": (m.run.get("config") or {}).get("amp")}},
        "data": {"dataset": ds["name"], "dataset_id": ds["id"], "dataset_uri": m.dataset.uri,
                 "source_file": source.get("path"), "source_sha256": source.get("sha256"),
                 "layout": source.get("layout"), "jets": source.get("n_jets"),
                 "splits": {s: ds["splits"][s]["rows"] for s in ("train", "val", "test")},
                 "image": {"channels": c, "height": h, "width": w, "channel_names": names},
                 "pt_gev": _range(ds, "pt"), "mass_gev": _range(ds, "m0"), "ingested": ds.get("created"),
                 "ingested_by": ds.get("jetlib_version")},
        "label_budget": {"label_fraction": m.blob["label_fraction"], "seed": m.blob["seed"],
                         **(m.run.get("labels") or {})},
        "pretraining": _origin(m.blob),
        "validation": {"monitor": task.monitor, "best_value": training.get("best_value"),
                       "best_epoch": training.get("best_epoch")},
        "test_metrics": {"split": "test", "jets": result["dataset"]["jets"], **test},
        "intended_use": (f"{task.title} of jets like those of the training data (same generator and detector "
                         f"simulation, same pT window and image construction), one score per jet, for studies "
                         f"and as an input to analyses that calibrate it on their own samples."),
        "not_tested_on": ["real collision data (only the training dataset's test split was scored)",
                          "other event generators, tunes or detector simulations",
                          "jets outside the training pT and mass ranges given under data",
                          "pileup or detector conditions other than the training sample's",
                          "other image sizes, channel orders or pixel units than the input spec",
                          "calibration of the score as a probability on other samples"],
        "provenance": {"trained": m.run.get("created"), "trained_by": m.run.get("jetlib_version"),
                       "git_commit": (m.run.get("provenance") or {}).get("git_commit")},
        "versions": {"jetlib": __version__, "python": platform.python_version(), "torch": torch.__version__,
                     "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                     **{k: v for k, v in package_versions().items() if k in ("numpy", "kfp")}},
    }


def _range(manifest: dict, key: str) -> dict | None:
    s = (manifest.get("stats") or {}).get(key)
    return {k: s.get(k) for k in ("min", "p01", "p50", "p99", "max")} if isinstance(s, dict) else None


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def card_markdown(card: dict) -> str:
    """The card for people: the same facts, as Markdown."""
    o, d, lb, pre = card["onnx"], card["data"], card["label_budget"], card["pretraining"]
    norm = o["normalisation_inside"]
    task = tasks.get(card["task"]["name"])
    rows = "\n".join(f"| {m.label} | {_fmt(card['test_metrics'].get(m.key))} |" for m in task.report_metrics.values())
    pre_line = (f"{pre['method']}, pretraining seed {pre['seed']}, encoder sha256 `{pre['encoder_sha256'][:16]}...`"
                f" (labels ignored)" if pre.get("method") else pre["note"])
    lines = [
        f"# Model card: {card['name']}", "",
        f"{card['task']['title']} with a {card['model']['arch']} network ({card['model']['mode']}).", "",
        "## Input and output", "",
        f"- input `{o['input']['name']}`: float32 `({', '.join(map(str, o['input']['shape']))})`, "
        f"{o['input']['units']}, channels {', '.join(o['input']['channels'])}",
        f"- output `{o['output']['name']}`: float32 `(batch,)`, {o['output']['meaning']}",
        f"- normalisation inside the graph: multiply by {[round(v, 6) for v in norm['multiply_by']]} ({norm['what']})",
        f"- ONNX opset {o['opset']}, sha256 `{o['sha256']}`; ONNX Runtime vs torch on "
        f"{o['parity_with_torch']['jets']} test jets: max difference {o['parity_with_torch']['max_abs_diff']:.2g}"
        f" (float32; the training's autocast: {o['precision']['training_autocast']})",
        "", "## Data", "",
        f"- dataset `{d['dataset']}` (id {d['dataset_id']}), from `{d['source_file']}` "
        f"(sha256 `{d['source_sha256']}`), {d['layout']} layout, {d['jets']:,} jets",
        f"- splits: train {d['splits']['train']:,}, val {d['splits']['val']:,}, test {d['splits']['test']:,}",
        f"- pT (GeV, train split): {_span(d['pt_gev'])}; mass (GeV): {_span(d['mass_gev'])}",
        "", "## Label budget and pretraining", "",
        f"- label fraction {lb['label_fraction']:g} of the train split, training seed {lb['seed']}"
        + (f"; {lb['train_jets']:,} labelled jets for training, {lb['val_jets']:,} for validation"
           if "train_jets" in lb and "val_jets" in lb else ""),
        f"- pretraining: {pre_line}",
        f"- chosen epoch: {card['validation']['best_epoch']} by {card['validation']['monitor']} "
        f"= {_fmt(card['validation']['best_value'])} (validation split)",
        "", f"## Test metrics ({card['test_metrics']['jets']:,} test jets)", "",
        "| metric | value |", "|---|---|", rows,
        "", "## Intended use", "", card["intended_use"],
        "", "## Not tested on", "", *[f"- {t}" for t in card["not_tested_on"]],
        "", "## Versions", "", ", ".join(f"{k} {v}" for k, v in card["versions"].items())
        + f"; trained {card['provenance']['trained']} (git {card['provenance']['git_commit'] or 'unknown'})", "",
    ]
    return "\n".join(lines)


def _span(r: dict | None) -> str:
    return "n/a" if not r else f"{r['min']:.4g} to {r['max']:.4g} (median {r['p50']:.4g})"
