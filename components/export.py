"""``export``: the best model of each task, chosen on the validation split, as ONNX with its model card."""

from kfp import dsl
from kfp.dsl import Model, Output

from components._image import COMPONENT


@dsl.component(**COMPONENT)
def export(run: str, model: Output[Model]):
    """Export into ``RUN/export/<task>/`` (``model.onnx``, ``model_card.md``, ``model_card.json``) and copy it
    into ``model``.

    Args:
        run: the run folder; every finished training in it is a candidate. Each is scored on the
            whole validation split and the best of each task by its validation metric is exported
            (the test split is never used to choose: ``jetlib.tagger.select``).
        model: the exported taggers, one folder per task. Metadata (flat, shown by the UI):
            ``framework`` (``onnx``), ``opset``, ``uri`` (the run's export folder) and per task
            ``<task>_training`` (the training folder it came from), ``<task>_mode``,
            ``<task>_label_fraction``, ``<task>_seed``, ``<task>_<validation key>`` (what chose it),
            ``<task>_candidates`` and ``<task>_onnx_sha256``.
    """
    import posixpath
    import shutil
    import tempfile

    from jetlib.data.store import open_store
    from jetlib.kfp_outputs import flat_metadata
    from jetlib.steps import step_errors
    from jetlib.tagger.export import CARD_JSON, CARD_MD, ONNX, OPSET
    from jetlib.tagger.select import export_best

    out = posixpath.join(run.rstrip("/"), "export")
    with step_errors():
        exported = export_best(run, out)
    meta = {"framework": "onnx", "opset": OPSET, "uri": out, "display_name": "exported taggers (ONNX)"}
    with tempfile.TemporaryDirectory() as tmp:
        for e in exported:
            t = e["task"]
            meta.update({f"{t}_training": e["training"], f"{t}_mode": e["mode"], f"{t}_seed": e["seed"],
                         f"{t}_label_fraction": e["label_fraction"], f"{t}_{e['monitor']}": e["value"],
                         f"{t}_candidates": e["candidates"], f"{t}_onnx_sha256": e["card"]["onnx"]["sha256"]})
            store = open_store(e["uri"])
            for name in (ONNX, CARD_MD, CARD_JSON):
                store.get_file(name, posixpath.join(tmp, t, name))
        shutil.copytree(tmp, model.path, dirs_exist_ok=True)
    model.metadata.update(flat_metadata(meta))
    print(f"export: {out}")
