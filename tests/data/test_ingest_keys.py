"""``jetlib ingest --images-key/--labels-key/--mass-key/--pt-key``: a file with other dataset names.

A renamed file must ingest to exactly the shards its public-named twin gives, and every named key
must pass the checks a public one passes (missing, wrong rows, bad labels, a link out of the file).
"""

import hashlib
import json

import h5py
import numpy as np
import pytest

from jetlib.cli import main
from jetlib.data.ingest import IngestConfig, dataset_id, ingest
from jetlib.data.manifest import FORMAT, open_dataset
from jetlib.data.schema import check_keys, inspect_source
from jetlib.errors import ConfigError

RENAMED = {"X_jets": "calo", "y": "is_quark", "m0": "mass", "pt": "jet_pt"}
FLAGS = ["--images-key", "calo", "--labels-key", "is_quark", "--mass-key", "mass", "--pt-key", "jet_pt"]
SMALL = ["--shard-rows", "8", "--row-group-rows", "4"]


def _rename(path, mapping):
    with h5py.File(path, "a") as f:
        for old, new in mapping.items():
            f.move(old, new)


def _shards(uri) -> dict:
    """split -> the sha256 of every shard, in the manifest's order."""
    m = open_dataset(uri).manifest
    return {split: [s["sha256"] for s in m["splits"][split]["shards"]] for split in ("train", "val", "test")}


def _ingest(argv, capsys) -> tuple[int, str, str]:
    code = main(["ingest", *argv])
    out, err = capsys.readouterr()
    return code, out.strip(), err


def test_a_renamed_file_gives_the_same_shards_as_its_public_twin(make_h5, tmp_path, capsys):
    public, _ = make_h5("public.h5", n=30)
    renamed, _ = make_h5("renamed.h5", n=30)
    _rename(renamed, RENAMED)
    code, uri_public, err = _ingest([str(public), "--store", str(tmp_path / "a"), *SMALL], capsys)
    assert code == 0, err
    code, uri_renamed, err = _ingest([str(renamed), "--store", str(tmp_path / "b"), *SMALL, *FLAGS], capsys)
    assert code == 0, err
    assert _shards(uri_renamed) == _shards(uri_public)  # byte-identical shards, split for split
    source = open_dataset(uri_renamed).manifest["source"]
    assert source["layout"] == "X_jets"
    assert source["keys"] == {"images": "calo", "y": "is_quark", "m0": "mass", "pt": "jet_pt"}


def test_without_named_keys_a_dataset_keeps_the_id_it_had():
    """Named keys enter the dataset's id only when given: datasets ingested before keep their URI."""
    sha = "ab" * 32
    cfg = IngestConfig()
    blob = {"format": FORMAT, "source": sha, "split": json.loads(json.dumps(cfg.identity()["split"])),
            "shard_rows": 1024, "row_group_rows": 256}
    before = hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]
    assert dataset_id(sha, cfg) == before
    named = IngestConfig(keys=(("images", "calo"),))
    assert dataset_id(sha, named) != before


def test_only_the_image_key_named_and_labels_under_public_names(make_h5, tmp_path):
    path, src = make_h5(n=20)
    _rename(path, {"X_jets": "images"})
    info = inspect_source(path, keys={"images": "images"})
    assert (info.layout, info.keys, info.labelled) == ("X_jets", {"images": "images", "y": "y", "m0": "m0",
                                                                  "pt": "pt"}, True)
    uri = ingest(path, str(tmp_path / "store"), cfg=IngestConfig(keys=(("images", "images"),), shard_rows=8,
                                                                 row_group_rows=4))
    assert open_dataset(uri).manifest["source"]["n_jets"] == 20


def test_a_named_8_channel_image_reads_as_the_8_channel_layout(make_h5, tmp_path):
    """Named keys keep the layout's pixel rule: 8 channels may be signed (counted), 3 are energies (refused)."""
    path, _ = make_h5("eight.h5", n=20, layout="jet")
    with h5py.File(path, "a") as f:
        x = f["jet"][...]
        x[0, 60, 60, 5] = -1.5  # a signed impact parameter
        del f["jet"]
        f["tracks8"] = x
    info = inspect_source(path, keys={"images": "tracks8"})
    assert (info.layout, info.keys["y"], info.channels) == ("jet", "Y", 8)
    uri = ingest(path, str(tmp_path / "store"), cfg=IngestConfig(keys=(("images", "tracks8"),), shard_rows=8,
                                                                 row_group_rows=4))
    assert open_dataset(uri).manifest["quality"]["negative_pixels"] == 1

    three, _ = make_h5("three.h5", n=20)
    with h5py.File(three, "a") as f:
        x = f["X_jets"][...]
        x[3, 60, 60, 1] = -2.0
        del f["X_jets"]
        f["calo"] = x
    with pytest.raises(Exception, match=r"'calo' has -2 at jet 3 .*negative"):
        ingest(three, str(tmp_path / "store3"), cfg=IngestConfig(keys=(("images", "calo"),)))


def _missing_label_key(path):
    return ["--images-key", "calo", "--labels-key", "quarkness"], "no dataset 'quarkness' (named by --labels-key)"


def _missing_image_key(path):
    return ["--images-key", "pixels"], "no dataset 'pixels' (named by --images-key); found keys: calo, is_quark"


def _group_path(path):
    return ["--images-key", "data/calo"], "--images-key 'data/calo': not a dataset name at the top"


def _same_key_twice(path):
    return ["--images-key", "calo", "--labels-key", "calo"], "--images-key and --labels-key both name 'calo'"


def _bad_label_value(path):
    with h5py.File(path, "a") as f:
        y = f["is_quark"][...]
        y[5] = 2
        del f["is_quark"]
        f["is_quark"] = y
    return FLAGS, "'is_quark' has value 2.0 at row 5: labels must be 0 (gluon) or 1 (quark)"


def _short_mass(path):
    with h5py.File(path, "a") as f:
        del f["mass"]
        f["mass"] = np.ones(7)
    return FLAGS, "'mass' has 7 entries but 'calo' has 24 jets"


def _external_link(path):
    other = path.parent / "elsewhere.h5"
    with h5py.File(other, "w") as f:
        f["secret"] = np.ones(24)
    with h5py.File(path, "a") as f:
        del f["jet_pt"]
        f["jet_pt"] = h5py.ExternalLink(str(other), "secret")
    return FLAGS, "'jet_pt' is an external link to"


def _some_scalars_unnamed(path):
    with h5py.File(path, "a") as f:
        f.move("is_quark", "y")
    return ["--images-key", "calo"], "key 'm0' is missing (layout 'X_jets' needs y, m0, pt, or name yours with"


@pytest.mark.parametrize("case", [_missing_label_key, _missing_image_key, _group_path, _same_key_twice,
                                  _bad_label_value, _short_mass, _external_link, _some_scalars_unnamed],
                         ids=lambda c: c.__name__.strip("_"))
def test_named_keys_are_checked_as_the_public_ones(make_h5, tmp_path, capsys, case):
    path, _ = make_h5(n=24)
    _rename(path, RENAMED)
    flags, line = case(path)
    code, out, err = _ingest([str(path), "--store", str(tmp_path / "store"), *flags], capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert line in err, err
    assert out == ""
    assert not (tmp_path / "store" / "datasets").exists() or not any((tmp_path / "store" / "datasets").iterdir())


def test_labels_under_names_not_given_are_an_unlabelled_dataset_with_a_warning(make_h5, tmp_path, capsys):
    """An images-only file is an unlabelled dataset; other datasets beside the images get named in a warning."""
    path, _ = make_h5(n=24)
    _rename(path, RENAMED)
    code, uri, err = _ingest([str(path), "--store", str(tmp_path / "store"), "--images-key", "calo"], capsys)
    assert code == 0, err
    assert "ingesting 'calo' as unlabelled" in err and "is_quark, jet_pt, mass" in err
    assert open_dataset(uri).manifest["labelled"] is False


@pytest.mark.parametrize("keys,message", [
    ({"images": ""}, "--images-key '': not a dataset name"),
    ({"pt": "."}, "--pt-key '.': not a dataset name"),
    ({"m0": "a\nb"}, "--mass-key 'a\\nb': not a dataset name"),
    ({"charge": "q"}, "unknown dataset role 'charge'"),
])
def test_check_keys_refuses_what_cannot_name_a_dataset(keys, message):
    with pytest.raises(ConfigError) as e:
        check_keys(keys)
    assert str(e.value).startswith(message)
    assert check_keys({"images": "calo", "y": None}) == {"images": "calo"}


def test_the_documented_h5py_example_writes_a_file_ingest_reads(tmp_path, monkeypatch):
    """The README's and docs/data.md's ten lines of h5py are the same, and give a labelled dataset (1 = quark)."""
    import re
    from pathlib import Path

    from jetlib.data.schema import read_scalars

    root = Path(__file__).parents[2]
    examples = [re.search(r"```python\n(import h5py\n.*?)```", (root / page).read_text(), re.S).group(1)
                for page in ("README.md", "docs/data.md")]
    assert examples[0] == examples[1]
    monkeypatch.chdir(tmp_path)
    exec(compile(examples[0], "README.md", "exec"), {})
    info = inspect_source(tmp_path / "mine.h5")
    assert (info.layout, info.labelled, info.n_jets, info.channels) == ("X_jets", True, 200, 3)
    assert int(read_scalars(info)["y"].sum()) == 100  # the quarks
    uri = ingest(tmp_path / "mine.h5", str(tmp_path / "store"))
    assert open_dataset(uri).manifest["labelled"] is True
