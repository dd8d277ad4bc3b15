"""Hands-on investigation: a runbook prepared for an alert, opened in JupyterLab.

:func:`open_workbook` writes a parameterized copy of a runbook notebook with papermill's
prepare-only mode (the parameters are injected, nothing runs) into an investigation folder;
:func:`launch_jupyterlab` serves it. The kernel is this environment's, so the notebook's
``import workbooks`` and every cell work as in an unattended run, and Run All replays it.

The parameters come from one of three places:

- an alert payload (the same parameters an unattended run gets);
- a time and labels, for an incident nobody alerted on;
- an archived run (``from_run``): its notebook's parameters, reading its saved evidence.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nbformat

from workbooks.archive.store import EVIDENCE_DIR, NOTEBOOK_FILE, Archive, slug
from workbooks.core.alert import AlertGroup
from workbooks.core.config import Config, find_config_file
from workbooks.core.durations import parse_duration
from workbooks.core.errors import ArchiveError, ConfigError, WorkbooksError
from workbooks.notebook.source_spec import archived_source, choose_source
from workbooks.running.parameters import DEFAULT_BASELINE, Parameters
from workbooks.running.routing import Runbook, configured_runbooks, get_runbook, route

INVESTIGATIONS_DIR = "investigations"
LOG_FILE = "jupyterlab.log"
_STARTUP_SECONDS = 60.0


def open_workbook(
    runbook: str | None = None,
    *,
    alert: AlertGroup | None = None,
    at: datetime | None = None,
    labels: Mapping[str, str] | None = None,
    from_run: str | None = None,
    folder: Path | None = None,
    source: str | None = None,
    lookback: str = "2h",
    baseline: str | None = None,
    config: Config,
    archive: Archive | None = None,
) -> Path:
    """Prepare a runbook notebook for an investigation; return the notebook's path.

    Give exactly one of ``alert``, ``at`` (with ``labels``) or ``from_run`` (an archived run or
    incident id; ``runbook`` is then that run's). ``source`` defaults to ``"prometheus"`` (the
    configured URL and credentials) or, for ``from_run``, the run's evidence folder. The copy
    goes to ``folder``, by default ``./investigations/<time>-<runbook>/``; nothing is ever
    overwritten.
    """
    given = [
        name for name, value in (("alert", alert), ("at", at), ("from_run", from_run)) if value
    ]
    if len(given) != 1:
        raise ConfigError(
            "say what to investigate with exactly one of: an alert file (--alert FILE), a time "
            "(--at 2026-11-20T14:10:00Z, with --label service=...), or an archived run (--from ID)"
        )
    runbooks = configured_runbooks(config)
    for duration in (lookback, baseline):
        if duration is not None:  # None: the runbook's own baseline
            parse_duration(duration)  # bad input fails here, not in a cell
    if from_run is not None:
        if archive is None:
            raise ConfigError("opening an archived run (--from) needs the archive")
        chosen, parameters = _from_run(archive, from_run, runbook, runbooks, source=source)
    elif alert is not None:
        routes = route(alert, runbooks, runbook_id=runbook)
        if len(routes) > 1:
            names = ", ".join(each.runbook.id for each in routes)
            raise ConfigError(f"the alert routes to several runbooks ({names}); name one")
        from workbooks.running.runner import workbook_parameters

        chosen = routes[0].runbook
        parameters = workbook_parameters(
            chosen,
            routes[0].alerts,
            alert,
            source=_live_source(source, config),
            lookback=lookback,
            baseline=baseline,
        )
    else:
        assert at is not None
        if runbook is None:
            raise ConfigError("name the runbook to open (workbook open RUNBOOK --at TIME)")
        chosen = get_runbook(runbooks, runbook)
        parameters = Parameters.at(
            at,
            alert_name=chosen.alerts[0],
            labels=dict(labels or {}),
            source=_live_source(source, config),
            lookback=lookback,
            baseline=baseline or chosen.baseline or DEFAULT_BASELINE,
        ).to_dict()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = Path(folder or Path(INVESTIGATIONS_DIR) / f"{stamp}-{slug(chosen.id)}").absolute()
    return _prepare(chosen, parameters, _free_name(target, chosen.id))


def _live_source(source: str | None, config: Config) -> str:
    return choose_source(
        url=source,
        settings=config.prometheus,
        instead="pass --prometheus URL, or open an archived run with --from ID to read its "
        "evidence",
    )


def _from_run(
    archive: Archive,
    run_id: str,
    runbook_id: str | None,
    runbooks: dict[str, Runbook],
    *,
    source: str | None,
) -> tuple[Runbook, dict[str, Any]]:
    record = archive.get(run_id)
    if runbook_id is not None and runbook_id != record.runbook:
        raise ConfigError(
            f"run {record.run_id} ran runbook {record.runbook!r}, not {runbook_id!r}; leave "
            "RUNBOOK out with --from"
        )
    notebook_path = record.path / NOTEBOOK_FILE
    try:
        notebook = nbformat.read(str(notebook_path), as_version=4)
        parameters = dict(notebook.metadata["papermill"]["parameters"])
    except (OSError, KeyError, ValueError) as exc:
        raise ArchiveError(
            f"cannot read the parameters of run {record.run_id} from {notebook_path} ({exc}); "
            "if it was pruned, open its alert instead: "
            f"workbook open {record.runbook} --alert {record.path / 'alert.json'}"
        ) from exc
    parameters["source"] = source or archived_source(
        record.path / EVIDENCE_DIR,
        recorded=record.source,
        instead=f"open its alert against Prometheus instead: workbook open {record.runbook} "
        f"--alert {record.path / 'alert.json'}",
    )
    return get_runbook(runbooks, record.runbook), parameters


def _free_name(folder: Path, runbook_id: str) -> Path:
    """``folder/<runbook>.ipynb``, or ``-2``, ``-3``...: an engineer's work is never overwritten."""
    for attempt in range(1, 1000):
        name = f"{runbook_id}.ipynb" if attempt == 1 else f"{runbook_id}-{attempt}.ipynb"
        if not (folder / name).exists():
            return folder / name
    raise WorkbooksError(
        f"too many notebooks named {runbook_id} in {folder}; pick another --folder"
    )


def _prepare(runbook: Runbook, parameters: dict[str, Any], output: Path) -> Path:
    import papermill

    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        logging.getLogger("papermill").setLevel(logging.ERROR)
        papermill.execute_notebook(
            str(runbook.path), str(output), parameters, prepare_only=True, progress_bar=False
        )
    except Exception as exc:  # papermill raises many kinds; each is one message here
        raise WorkbooksError(
            f"cannot prepare {runbook.path} into {output}: {type(exc).__name__}: {exc}; check "
            "that the folder is writable and the runbook opens in JupyterLab"
        ) from exc
    return output


# -- JupyterLab ----------------------------------------------------------------------------------


def running_server(path: Path) -> dict[str, Any] | None:
    """A running Jupyter server whose root folder holds ``path``, if there is one."""
    from jupyter_server.serverapp import list_running_servers

    path = Path(path).resolve()
    for info in list_running_servers():
        root = Path(info.get("root_dir") or info.get("notebook_dir") or "/").resolve()
        if path.is_relative_to(root):
            return info
    return None


def notebook_url(server: Mapping[str, Any], path: Path) -> str:
    """The URL that opens ``path`` in JupyterLab on ``server``, token included."""
    root = Path(server.get("root_dir") or server.get("notebook_dir") or "/").resolve()
    relative = Path(path).resolve().relative_to(root).as_posix()
    url = f"{str(server['url']).rstrip('/')}/lab/tree/{quote(relative)}"
    return f"{url}?token={server['token']}" if server.get("token") else url


def launch_jupyterlab(
    path: Path,
    *,
    no_browser: bool = False,
    port: int | None = None,
    archive_dir: Path | None = None,
    root_dir: Path | None = None,
) -> str:
    """JupyterLab on ``path``; return the URL that opens it (with its token).

    A server that already runs and can see ``path`` is reused: nothing starts, the URL is
    returned. Otherwise JupyterLab starts in the background on 127.0.0.1 (reach it from
    elsewhere through an SSH tunnel), in ``root_dir`` (default: the current folder if it holds
    ``path``, else the notebook's folder), logging to ``jupyterlab.log`` beside the notebook,
    and keeps running after this returns: ``jupyter server stop PORT`` ends it. Its kernels get
    ``WORKBOOKS_ARCHIVE`` (so ``incident.note()`` finds the archive) and the config file.
    """
    path = Path(path).absolute()
    if not path.is_file():
        raise ConfigError(f"no notebook at {path}; prepare one with `workbook open`")
    if (server := running_server(path)) is not None:
        return notebook_url(server, path)
    root = Path(root_dir or (Path.cwd() if path.is_relative_to(Path.cwd()) else path.parent))
    root = root.absolute()
    if not path.is_relative_to(root):
        raise ConfigError(f"{path} is not inside {root}: JupyterLab can only open what is below it")
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.open_browser={not no_browser}",
        f"--LabApp.default_url=/lab/tree/{quote(path.relative_to(root).as_posix())}",
    ]
    if port is not None:
        command += [f"--ServerApp.port={port}", "--ServerApp.port_retries=0"]
    if os.geteuid() == 0:  # containers and CI run as root; JupyterLab refuses unless told
        command.append("--ServerApp.allow_root=True")
    log_path = path.parent / LOG_FILE
    env = {**os.environ, **_kernel_environment(archive_dir)}
    pid = _spawn_detached(command, cwd=root, env=env, log_path=log_path)
    return notebook_url(_wait_until_listed(pid, log_path), path)


# Starts the server in its own session and exits at once: the server outlives `workbook open`
# and Ctrl-C there, and no process of ours is left to wait for it.
_LAUNCHER = """
import subprocess, sys
with open(sys.argv[1], "ab") as log:
    child = subprocess.Popen(
        sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
    )
print(child.pid)
"""


def _spawn_detached(command: list[str], *, cwd: Path, env: dict[str, str], log_path: Path) -> int:
    try:
        launched = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, str(log_path), *command],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return int(launched.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        raise WorkbooksError(f"cannot start JupyterLab: {exc}; is jupyterlab installed?") from exc


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True


def _kernel_environment(archive_dir: Path | None) -> dict[str, str]:
    env = {}
    if archive_dir is not None:
        env["WORKBOOKS_ARCHIVE"] = str(Path(archive_dir).absolute())
    # Kernels start in the notebook's folder: find_config_file gives an absolute path.
    if (config_file := find_config_file()) is not None:
        env["WORKBOOKS_CONFIG"] = str(config_file)
    return env


def _wait_until_listed(pid: int, log_path: Path) -> dict[str, Any]:
    from jupyter_server.serverapp import list_running_servers

    deadline = time.monotonic() + _STARTUP_SECONDS
    while time.monotonic() < deadline and _alive(pid):
        for info in list_running_servers():
            if info.get("pid") == pid:
                return info
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
    tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-2:]
    raise WorkbooksError(
        f"JupyterLab did not start (see {log_path}): {' / '.join(tail) or 'no output'}; if the "
        "port is taken, pass another with --port"
    )
