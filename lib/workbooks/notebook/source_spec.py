"""Which source a run reads, chosen before any kernel starts: no pandas, no HTTP client here.

The calling process of ``workbook run``/``demo``/``replay`` and the service only choose the
``source`` parameter; the kernel opens it (:func:`workbooks.notebook.sources.open_source`).
Keeping this rule apart keeps pandas and prometheus-api-client out of those processes, where
their import would compete with the kernel's start for the same cores.
"""

from __future__ import annotations

from pathlib import Path

from workbooks.core.config import PrometheusSettings
from workbooks.core.errors import ArchiveError, ConfigError
from workbooks.core.redact import refuse_credentials

# The two named sources; anything else is an http(s) URL or an evidence folder.
DEMO_SOURCE = "demo"  # the runbook's bundled demo evidence, offline
CONFIGURED_PROMETHEUS = "prometheus"  # the configured URL and credentials, read in the kernel


def choose_source(
    *,
    url: str | None = None,
    evidence: Path | None = None,
    settings: PrometheusSettings,
    instead: str = "pass --prometheus URL or --evidence DIR",
) -> str:
    """The ``source`` parameter of a new run or investigation: the rule in one place.

    An evidence folder (absolute, since the kernel runs elsewhere), else the URL given, else
    ``prometheus`` when one is configured (the kernel reads the URL and credentials itself, so
    no secret becomes a parameter). ``instead`` ends the error: what the caller can pass.
    """
    if url and evidence is not None:
        raise ConfigError("pass a Prometheus URL or an evidence folder, not both")
    if evidence is not None:
        return str(Path(evidence).absolute())
    if url and url.strip():
        refuse_credentials(url)  # a source is a parameter, and parameters are archived
        return url.strip()
    if settings.url:
        return CONFIGURED_PROMETHEUS
    raise ConfigError(
        "no metrics source: set WORKBOOKS_PROMETHEUS_URL (or prometheus.url in the config "
        f"file), or {instead}"
    )


def archived_source(evidence: Path, *, recorded: str, instead: str) -> str:
    """The ``source`` that reads an archived run again: its saved evidence folder, or the demo
    evidence when the run was a demo. ``instead`` says what to do when neither is there.
    """
    if evidence.is_dir():
        return str(evidence.absolute())
    if recorded == DEMO_SOURCE:
        return DEMO_SOURCE
    raise ArchiveError(f"the run saved no evidence ({evidence} is missing); {instead}")
