"""An S3-compatible server on loopback for tests: moto's ThreadedMotoServer, a bucket, the env.

Tests that need it use the ``s3`` fixture (tests/conftest.py); they are skipped with the reason
when moto is not installed (``pip install 'moto[server]'``, a test dependency).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

try:  # imported while collecting: importing it later, beside the services' threads, is fragile
    from moto.server import ThreadedMotoServer
except ImportError:  # the s3_server() context skips, saying what to install
    ThreadedMotoServer = None
# Test credentials: the assertions check that neither ever reaches a file, a log or a message.
ACCESS_KEY = "AKIATESTSCALE0000001"
SECRET_KEY = "s3cr3t-Do-Not-Leak-8f2b7c1e9a"


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def env(self, bucket: str) -> dict[str, str]:
        """What a process needs to use ``s3://<bucket>/archive``: the usual AWS variables."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "WORKBOOKS_ARCHIVE": f"s3://{bucket}/archive",
        }

    def make_bucket(self, name: str) -> None:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )
        client.create_bucket(Bucket=name)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def s3_server() -> Iterator[S3Server]:
    if ThreadedMotoServer is None:
        pytest.skip("needs moto[server] (pip install 'moto[server]'): the S3-compatible server")
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every request
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(endpoint=f"http://127.0.0.1:{port}")
    finally:
        server.stop()
