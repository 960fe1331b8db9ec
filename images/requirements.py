"""Print ``[project] dependencies`` of a pyproject.toml, one per line, for ``pip install -r``.

    python3 requirements.py pyproject.toml                  # all of them
    python3 requirements.py pyproject.toml --only torch,torchvision
    python3 requirements.py pyproject.toml --except torch,torchvision

The image build installs torch in a layer keyed on the torch pins alone (``--only``), then the rest
(``--except``), then jetlib: editing ``jetlib/`` or another pin does not reinstall torch (~2 GB).
"""

import re
import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
if len(sys.argv) == 4:
    names = set(sys.argv[3].split(","))
    keep = sys.argv[2] == "--only"
    deps = [d for d in deps if (re.split(r"[\s<>=!~;\[]", d, maxsplit=1)[0].lower() in names) == keep]
print("\n".join(deps))
