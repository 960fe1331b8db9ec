"""Print ``[project] dependencies`` of a pyproject.toml, one per line, for ``pip install -r``.

Used inside the image build so that the dependency layer (torch and the rest) is keyed on
``pyproject.toml`` alone and a change to ``jetlib/`` does not reinstall torch.

    python3 requirements.py pyproject.toml > requirements.txt
"""

import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
