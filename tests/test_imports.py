"""What importing the package costs: slow third-party imports stay off the paths that need speed.

Each check runs in a fresh interpreter, so nothing imported by the test session hides a cost.
"""

from __future__ import annotations

import json
import subprocess
import sys


def _modules_after(statement: str) -> set[str]:
    loaded = "sorted(name for name, module in sys.modules.items() if module is not None)"
    code = f"import sys, json\n{statement}\nprint(json.dumps({loaded}))"
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(completed.stdout))


def test_running_a_workbook_does_not_build_rfc3987s_grammar() -> None:
    """jsonschema imports rfc3987_syntax (about 1 s at import) when present; runs never need it
    (python-jsonschema/jsonschema#1428)."""
    loaded = _modules_after("import workbooks.running.runner, nbformat, jsonschema")
    assert "jsonschema" in loaded
    assert "rfc3987_syntax" not in loaded
    assert "lark" not in loaded
