"""Where the package keeps its bundled files (the demo incidents, one folder per runbook), and
what a runbook notebook says about itself (its group), for the layers that cannot route.

The CLI (``workbook demo``), the notebooks' ``source="demo"`` and the demo recorder all find
them here, so a move of the folder is one change.
"""

from __future__ import annotations

import json
from pathlib import Path

# The checkout that holds notebooks/ and templates/ (lib/workbooks/core/ is three levels down).
PROJECT_ROOT = Path(__file__).resolve().parents[3]

# The runbook groups of the index (a notebook's metadata.workbooks.group), known here so that a
# config naming a group that does not exist fails instead of silently falling back.
RUNBOOK_GROUPS = ("service", "model", "infrastructure", "security", "mobile")

DEMO_ALERT_FILE = "alert.json"
DEMO_EVIDENCE_DIR = "evidence"


def demo_dir(runbook: str | None = None) -> Path:
    """The bundled demo folder, or one runbook's demo in it (``alert.json``, ``evidence/``).

    The folder may not exist: callers say what is bundled (:func:`bundled_demos`).
    """
    from importlib import resources  # importlib.abc with it: 40 ms that --help does without

    root = Path(str(resources.files("workbooks").joinpath("demo")))
    return root / runbook if runbook else root


def bundled_demos() -> list[str]:
    """The runbooks that have a bundled demo incident, by id."""
    return sorted(path.parent.name for path in demo_dir().glob(f"*/{DEMO_ALERT_FILE}"))


def runbook_group(runbook_id: str, notebooks_dir: Path) -> str | None:
    """The group of runbook ``runbook_id`` (``metadata.workbooks.group`` of its notebook).

    None when the notebook is not in ``notebooks_dir`` or says no group: callers fall back to
    their default (the escalation block). Reads the JSON only: no nbformat, no validation.
    """
    path = Path(notebooks_dir) / f"{runbook_id}.ipynb"
    try:
        metadata = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError, AttributeError):
        return None
    group = metadata.get("workbooks", {}).get("group") if isinstance(metadata, dict) else None
    return group if isinstance(group, str) and group else None
