"""Print ``[project] dependencies`` of a pyproject.toml, one per line, for ``pip install -r``.

    python3 requirements.py pyproject.toml                  # all of them
    python3 requirements.py pyproject.toml --only torch,torchvision
    python3 requirements.py pyproject.toml --except torch,torchvision --extras serve

The image build installs torch in a layer keyed on the torch pins alone (``--only``), then the rest
(``--except``), then jetlib: editing ``jetlib/`` or another pin does not reinstall torch (~2 GB).
"""

import re
import sys
import tomllib

args = sys.argv[1:]
extras = []  # --extras a,b: those optional-dependencies too (the image serves: `serve`)
if "--extras" in args:
    at = args.index("--extras")
    extras, args[at:at + 2] = args[at + 1].split(","), []
with open(args[0], "rb") as f:
    project = tomllib.load(f)["project"]
deps = project["dependencies"] + [d for e in extras for d in project["optional-dependencies"][e]]
if len(args) == 3:
    names = set(args[2].split(","))
    keep = args[1] == "--only"
    deps = [d for d in deps if (re.split(r"[\s<>=!~;\[]", d, maxsplit=1)[0].lower() in names) == keep]
print("\n".join(deps))
