"""``workbook serve``: checks what the service would expose, then runs it under uvicorn.

Refused at start, with the same messages as ``workbook run``: a Prometheus URL that carries
credentials (it would reach every archived notebook), a non-loopback address without a webhook
token (anyone could run workbooks) or without a reader (anyone could read the archive).
"""

from __future__ import annotations

import logging
import signal
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
from workbooks.notebook.sources import choose_source
from workbooks.service.app import Service

log = logging.getLogger(__name__)


def resolve_source(prometheus: str | None, config: Config) -> str:
    """What runs read: the given URL, else ``prometheus`` (the configured URL and credentials).

    The same rule as ``workbook run`` (:func:`workbooks.notebook.sources.choose_source`): a URL
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
) -> None:
    """Run the webhook service until SIGTERM or SIGINT; blocks.

    Raises :class:`ConfigError` for no metrics source, a credential-bearing ``prometheus``, or
    a non-loopback ``host`` without a webhook token or without a reader token or proxy header.
    """
    source = resolve_source(prometheus, config)
    check_service_exposure(host, config)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("papermill").setLevel(logging.CRITICAL)
    logging.getLogger("huey").setLevel(logging.WARNING)
    disable_created_metrics()  # this process is ours: /metrics without *_created noise
    service = Service(config=config, archive_dir=archive_dir, source=source, workers=workers)
    signals: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        # uvicorn hands the signal that stopped it back to us; a second one stops at once.
        signals.append(signum)
        if service.stopping:
            raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    service.start()
    log.info(
        "accepting alerts on http://%s:%d/alerts: %d workers, %s queue, archive %s, runs read %s",
        host,
        port,
        service.workers,
        service.queue.backend,
        service.archive.root,
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
