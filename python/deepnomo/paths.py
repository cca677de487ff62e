"""Where the repository's shared files live, seen from the Python package."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def repo_root() -> Path:
    """Root of the deepnomo repository (the folder holding ``bridge/``).

    ``DEEPNOMO_ROOT`` overrides the search, for installs outside the repository.
    """
    env = os.environ.get("DEEPNOMO_ROOT")
    if env:
        return Path(env).resolve()
    for parent in PACKAGE_DIR.parents:
        if (parent / "bridge" / "cohort_schema.json").is_file():
            return parent
    raise FileNotFoundError(
        "cannot find the deepnomo repository root (bridge/cohort_schema.json); "
        "set DEEPNOMO_ROOT"
    )


def schema_path() -> Path:
    """Path of the cohort-table schema shared with the R package."""
    return repo_root() / "bridge" / "cohort_schema.json"
