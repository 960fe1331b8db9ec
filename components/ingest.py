"""``ingest``: simulate (when no source is given) and commit a dataset to the store."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components._image import COMPONENT


@dsl.component(**COMPONENT)
def ingest(store: str, dataset: Output[Dataset], source: str = "", n_jets: int = 3000, sim_seed: int = 0,
           workers: int = 0):
    """Validate an HDF5 file of jet images and commit it to the store as sparse shards with splits.

    Args:
        store: the object store (``s3://bucket/prefix``, or a local folder for ``kfp.local``).
        dataset: where the dataset is: ``dataset.metadata["uri"]`` (the store URI; the data itself
            never travels as an artifact), ``id``, ``jets``, ``sha256`` (of the source file),
            ``labelled``, ``<split>_jets`` (``train_jets``, ``val_jets``, ``test_jets``): flat, as MLMD
            stores it. The artifact file holds the same as JSON.
        source: HDF5 file, local path or ``s3://`` URI; empty: simulate ``n_jets`` jets first.
        n_jets: jets to simulate when ``source`` is empty.
        sim_seed: simulation seed.
        workers: simulation processes (0: all cores).
    """
    from jetlib.steps import describe, ingest_step, step_errors

    with step_errors():
        m = ingest_step(store, source=source, n_jets=n_jets, sim_seed=sim_seed, workers=workers or None)
    splits = {name: s["rows"] for name, s in m["splits"].items()}
    describe(dataset, {"uri": m["uri"], "id": m["id"], "jets": sum(splits.values()), "sha256": m["source"]["sha256"],
                       "labelled": m["labelled"], **{f"{name}_jets": rows for name, rows in splits.items()}})
