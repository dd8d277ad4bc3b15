"""``workbook serve`` and ``workbook worker``: check what would be exposed, then run.

``serve`` runs the webhook under uvicorn, with workers (role ``all``) or without (``intake``);
``worker`` runs workers only, taking runs off the Redis queue, with no HTTP at all.

Refused at start, with the same messages as ``workbook run``: a Prometheus URL that carries
credentials (it would reach every archived notebook), a non-loopback address without a webhook
token (anyone could run workbooks) or without a reader (anyone could read the archive).
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from pathlib import Path

import uvicorn
from prometheus_client import disable_created_metrics

from workbooks.archive.access import (
    MAX_REQUEST_HEAD_BYTES,
    ReaderAccess,
    check_exposure,
    is_loopback,
)
from workbooks.core.config import Config
from workbooks.core.errors import ConfigError
from workbooks.core.redact import redact_url
from workbooks.notebook.source_spec import choose_source
from workbooks.service.app import Service
from workbooks.service.roles import Role

log = logging.getLogger(__name__)


def resolve_source(prometheus: str | None, config: Config) -> str:
    """What runs read: the given URL, else ``prometheus`` (the configured URL and credentials).

    The same rule as ``workbook run`` (:func:`workbooks.notebook.source_spec.choose_source`): a URL
    carrying credentials is refused, since it would be queued, stored in the ledger and written
    into each notebook's parameters.
    """
    return choose_source(
        url=prometheus, settings=config.prometheus, instead="pass --prometheus URL"
    )


def check_service_exposure(host: str, config: Config) -> None:
    if not is_loopback(host) and not config.service.webhook_token:
        raise ConfigError(
            f"refusing to listen on {host} without a token: anyone who reaches it could run "
            "workbooks. Set WORKBOOKS_WEBHOOK_TOKEN, or listen on 127.0.0.1"
        )
    check_exposure(host, ReaderAccess.from_config(config))


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 9095,
    config: Config,
    archive_dir: Path,
    prometheus: str | None,
    workers: int | None,
    role: Role = "all",
) -> None:
    """Run the webhook service until SIGTERM or SIGINT; blocks. ``role`` ``intake`` runs no
    workers: ``workbook worker`` processes (on any host) run what it queues on Redis.

    Raises :class:`ConfigError` for no metrics source, a credential-bearing ``prometheus``, or
    a non-loopback ``host`` without a webhook token or without a reader token or proxy header.
    """
    source = resolve_source(prometheus, config)
    check_service_exposure(host, config)
    _quiet_logging()
    disable_created_metrics()  # this process is ours: /metrics without *_created noise
    service = Service(
        config=config, archive_dir=archive_dir, source=source, workers=workers, role=role
    )
    signals: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        # uvicorn hands the signal that stopped it back to us; a second one stops at once.
        signals.append(signum)
        if service.stopping:
            raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    service.start()
    _settle_heap()
    log.info(
        "accepting alerts on http://%s:%d/alerts (role %s): %d workers, %s queue, archive %s, "
        "runs read %s",
        host,
        port,
        role,
        service.workers,
        service.queue.backend,
        service.archive.location,
        redact_url(config.prometheus.url or "") if source == "prometheus" else source,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            service.app,
            host=host,
            port=port,
            lifespan="off",
            ws="none",
            http="h11",
            # An over-long query string is read whole and answered 414, not reset.
            h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES,
            access_log=False,
            log_level="info",
            timeout_graceful_shutdown=5,
        )
    )
    try:
        if not signals:  # a signal while starting up: stop right away
            server.run()
    finally:
        service.stop()


def work(*, config: Config, archive_dir: str | Path, workers: int | None, name: str | None) -> None:
    """Run workers only, taking runs off the Redis queue, until SIGTERM or SIGINT; blocks.

    Each run is read from the source its alert was accepted with, so a worker needs no
    Prometheus setting of its own. Raises :class:`ConfigError` without a Redis queue (and, on
    an object-store archive, without the shared PostgreSQL ledger).
    """
    _quiet_logging()
    service = Service(
        config=config,
        archive_dir=archive_dir,
        source="(each run's own)",
        workers=workers,
        role="worker",
        worker_name=name,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second signal: stop at once
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    service.start()
    _settle_heap()
    log.info(
        "worker %s: %d workers on the %s queue, archive %s",
        name or "(unnamed)",
        service.workers,
        service.queue.backend,
        service.archive.location,
    )
    try:
        while not stop.wait(1.0):
            pass
    finally:
        service.stop()


def _settle_heap() -> None:
    """Take what the start loaded (modules, the app, the pools) out of the collector's scans.

    Python's full collections scan every tracked object, and most of this process's are its
    imports, which live as long as it does: under a storm of deliveries one such collection,
    about 3 s in, held every thread for 100-110 ms (``gc.callbacks``, 2 storms), so the
    deliveries in flight waited for it. Frozen (``gc.freeze``), they are not scanned again;
    a collection just before leaves no garbage among them.
    """
    gc.collect()
    gc.freeze()


def _quiet_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("papermill").setLevel(logging.CRITICAL)
    logging.getLogger("huey").setLevel(logging.WARNING)
