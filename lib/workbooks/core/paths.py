"""Where the package keeps its bundled files: the demo incidents, one folder per runbook.

The CLI (``workbook demo``), the notebooks' ``source="demo"`` and the demo recorder all find
them here, so a move of the folder is one change.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEMO_ALERT_FILE = "alert.json"
DEMO_EVIDENCE_DIR = "evidence"


def demo_dir(runbook: str | None = None) -> Path:
    """The bundled demo folder, or one runbook's demo in it (``alert.json``, ``evidence/``).

    The folder may not exist: callers say what is bundled (:func:`bundled_demos`).
    """
    root = Path(str(resources.files("workbooks").joinpath("demo")))
    return root / runbook if runbook else root


def bundled_demos() -> list[str]:
    """The runbooks that have a bundled demo incident, by id."""
    return sorted(path.parent.name for path in demo_dir().glob(f"*/{DEMO_ALERT_FILE}"))
