"""How a workbook shows things in its notebook: raw MIME bundles, the alert table, the
escalation contacts. Text from outside (labels, annotations) is escaped before it is shown.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from workbooks.core.contacts import Escalation


def display(*objects: Any, raw: bool = False) -> None:
    from IPython.display import display as ipython_display

    ipython_display(*objects, raw=raw)


def show_markdown(text: str) -> None:
    display({"text/markdown": text}, raw=True)


def human_duration(duration: timedelta) -> str:
    """``45 min``, ``3 h 10 min``, ``2 d 4 h``: a duration as an on-call engineer says it."""
    minutes = int(duration.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} d {hours % 24} h"


def key_value_table(rows: Iterable[tuple[str, Any]]) -> str:
    """A two-column markdown table; values are escaped (they may be alert labels)."""
    body = "\n".join(f"| {key} | {_cell(value)} |" for key, value in rows)
    return "| | |\n|---|---|\n" + body


def escalation_markdown(contacts: Escalation, *, critical: bool) -> str:
    """When to escalate, given whether a finding is critical, and whom to call."""
    when = (
        f"**Escalate now** if this is still critical after {contacts.escalate_after_minutes} "
        "minutes of work, or users are affected and no cause is named above."
        if critical
        else "No critical finding: escalate only if the alert keeps firing or users report impact."
    )
    return (
        f"{when}\n\n| role | who |\n|---|---|\n| primary | {contacts.primary} |\n"
        f"| secondary | {contacts.secondary} |\n| escalation | {contacts.escalation} |\n"
        f"| Slack | {contacts.slack} |\n| PagerDuty | {contacts.pagerduty} |\n"
        f"| e-mail | {contacts.email} |"
    )


def _cell(value: Any) -> str:
    return html.escape(str(value), quote=False).replace("|", "\\|").replace("\n", " ")
