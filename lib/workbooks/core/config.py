"""Configuration: one YAML file plus ``WORKBOOKS_*`` environment variables, read here only.

Where the file is: ``--config``, else ``$WORKBOOKS_CONFIG``, else ``./workbooks.yaml`` when present.
Environment variables win over the file:

==================================  ===================================================
``WORKBOOKS_PROMETHEUS_URL``        Prometheus base URL (no credentials in it)
``WORKBOOKS_PROMETHEUS_TOKEN``      bearer token
``WORKBOOKS_PROMETHEUS_USERNAME``   basic auth user (with ``..._PASSWORD``)
``WORKBOOKS_PROMETHEUS_PASSWORD``   basic auth password
``WORKBOOKS_PROMETHEUS_HEADERS``    extra headers, a JSON object
``WORKBOOKS_PROMETHEUS_CA_BUNDLE``  CA bundle file for TLS verification
``WORKBOOKS_PROMETHEUS_VERIFY``     ``false`` turns TLS verification off
``WORKBOOKS_PROMETHEUS_TIMEOUT``    seconds per request (default 10)
``WORKBOOKS_ARCHIVE``               archive folder (default ``./archive``), or ``s3://bucket/prefix``
``WORKBOOKS_ARCHIVE_CACHE``         local cache folder of an ``s3://`` archive (docs/scale.md)
``WORKBOOKS_NOTEBOOKS``             folder of runbook notebooks (default: the project's)
``WORKBOOKS_NOW``                   pin "now" (ISO 8601 UTC): for reproductions and tests
``WORKBOOKS_WEBHOOK_TOKEN``         bearer token ``workbook serve`` requires on POST /alerts
``WORKBOOKS_REDIS_URL``             run the queue on Redis instead of the archive's SQLite
``WORKBOOKS_DATABASE_URL``          index and intake ledger in PostgreSQL (postgresql://...)
``WORKBOOKS_WORKERS``               how many workbooks run at once (default: the cores)
``WORKBOOKS_NOTIFY``                notification targets, apprise URLs separated by spaces
``WORKBOOKS_SHUTDOWN_GRACE_SECONDS`` how long ``workbook serve`` lets running runs finish (20)
``WORKBOOKS_RECOVERY_INTERVAL_SECONDS`` how often lost or abandoned runs are queued again (60)
``WORKBOOKS_READER_TOKEN``          token the archive pages require (Bearer, or Basic password)
``WORKBOOKS_TRUSTED_USER_HEADER``   header a reverse proxy sets for an authenticated user
==================================  ===================================================

An object-store archive takes ``archive: {url: s3://bucket/prefix, endpoint_url, region}`` in the
file; its credentials come only from the usual AWS variables or files, never from here.

The file's `routing:` rules (:class:`RoutingRule`) send a team's own alerts to runbooks.

Credentials live here and in the environment, never in notebook parameters: papermill writes
parameters into the archived artifact.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from workbooks.core.contacts import (
    Escalation,
    NotificationSettings,
    Settings,
)
from workbooks.core.database import check_database_url
from workbooks.core.errors import ConfigError
from workbooks.core.paths import PROJECT_ROOT

ENV_PREFIX = "WORKBOOKS_"
DEFAULT_CONFIG_FILE = "workbooks.yaml"


class PrometheusSettings(Settings):
    url: str | None = None
    timeout_seconds: float = Field(default=10.0, gt=0)
    bearer_token: str | None = Field(default=None, repr=False)
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    verify_tls: bool = True
    ca_bundle: str | None = None
    max_points: int = Field(default=1000, ge=10, le=11000)
    min_step_seconds: int = Field(default=30, ge=1)


class ServiceSettings(Settings):
    """``workbook serve``: the webhook, its queue and its de-duplication."""

    webhook_token: str | None = Field(default=None, repr=False)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    dedup_window_seconds: float = Field(default=4 * 3600, ge=0)
    redis_url: str | None = Field(default=None, repr=False)
    workers: int | None = Field(default=None, ge=0)
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)
    recovery_interval_seconds: float = Field(default=60.0, gt=0)
    # Who may read the archive's pages off loopback: a reader token (Bearer, or Basic with the
    # token as password), or a reverse proxy's authenticated-user header (docs/archive-access.md).
    reader_token: str | None = Field(default=None, repr=False)
    trusted_user_header: str | None = None


class RoutingRule(Settings):
    """Alerts whose labels equal every value in ``match`` go to ``runbook``.

    ``{match: {alertname: MyP99}, runbook: high-latency}`` routes a team's own alertname;
    ``{match: {team: db, severity: critical}, runbook: database-issues}`` routes by labels.
    """

    match: dict[str, str] = Field(min_length=1)
    runbook: str = Field(min_length=1)

    @field_validator("match", mode="before")
    @classmethod
    def _label_values_as_text(cls, value: Any) -> Any:
        # YAML reads `code: 500` as a number; label values are always text.
        if isinstance(value, Mapping):
            return {str(key): str(item) for key, item in value.items()}
        return value

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(name) == value for name, value in self.match.items())

    def describe(self) -> str:
        """``team=db, severity=critical``: how ``workbook runbooks`` shows the rule."""
        return ", ".join(f"{name}={value}" for name, value in self.match.items())


class RunbookSettings(Settings):
    """One runbook's team settings: ``runbooks: {high-latency: {thresholds: {name: value}}}``.

    Threshold names are the runbook's own (its module declares them with defaults); a name the
    runbook does not know is rejected when the runbook first reads them, naming the known ones.
    """

    thresholds: dict[str, float] = Field(default_factory=dict)


class SLOSettings(Settings):
    """Availability objectives: ``slo: {availability: 0.995, services: {checkout: 0.999}}``.

    The share of requests that must not fail (5xx); error-budget burn rates are read against it.
    """

    availability: float = Field(default=0.995, gt=0, lt=1)
    services: dict[str, Annotated[float, Field(gt=0, lt=1)]] = Field(default_factory=dict)

    def availability_for(self, service: str) -> float:
        """The service's own objective, else the default."""
        return self.services.get(service, self.availability)


class ArchiveStorage(Settings):
    """How an object-store archive is reached; credentials never: the AWS variables hold them."""

    endpoint_url: str | None = None  # else AWS_ENDPOINT_URL, else the provider's default
    region: str | None = None  # else AWS_REGION
    cache: str | None = None  # local cache (index, run copies); default under ~/.cache


class Config(Settings):
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    archive: str = "archive"  # a folder, or s3://bucket/prefix
    archive_storage: ArchiveStorage = Field(default_factory=ArchiveStorage)
    # The index and the intake ledger in PostgreSQL instead of SQLite files in the archive.
    database: str | None = Field(default=None, repr=False)
    notebooks: str | None = None
    escalation: Escalation = Field(default_factory=Escalation)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    queries: dict[str, Any] = Field(default_factory=dict)
    routing: list[RoutingRule] = Field(default_factory=list)
    runbooks: dict[str, RunbookSettings] = Field(default_factory=dict)
    # service -> the services it needs (``dependencies: {inference-api: [model-store]}``):
    # the service-down runbook checks whether one of them went down first.
    dependencies: dict[str, list[str]] = Field(default_factory=dict)
    slo: SLOSettings = Field(default_factory=SLOSettings)
    cell_timeout_seconds: float = Field(default=120.0, gt=0)
    run_timeout_seconds: float = Field(default=600.0, gt=0)
    now: datetime | None = None

    @field_validator("database")
    @classmethod
    def _postgres_only(cls, value: str | None) -> str | None:
        # check_database_url's message never repeats the URL: it may carry a password.
        return check_database_url(value) if value else None

    @model_validator(mode="before")
    @classmethod
    def _archive_as_mapping(cls, data: Any) -> Any:
        # `archive: {url, endpoint_url, region, cache}` in the file; `archive: DIR` still works.
        if isinstance(data, Mapping) and isinstance(data.get("archive"), Mapping):
            data = dict(data)
            options = dict(data.pop("archive"))
            data["archive"] = options.pop("url", "archive")
            data["archive_storage"] = {**data.get("archive_storage", {}), **options}
        return data

    @property
    def archive_url(self) -> str | None:
        """The archive's ``scheme://`` URL when it lives in an object store, else None."""
        return self.archive if "://" in self.archive else None

    @property
    def archive_dir(self) -> Path:
        return Path(self.archive)

    @property
    def notebooks_dir(self) -> Path:
        return Path(self.notebooks) if self.notebooks else PROJECT_ROOT / "notebooks"

    def escalation_for(self, group: str | None) -> Escalation:
        """The contacts of a runbook group: its ``escalation.groups`` block over the default.

        A group without a block, or no group (a runbook whose notebook is not found), gets the
        default block. The result has no ``groups`` of its own: it is one group's contacts.
        """
        override = self.escalation.groups.get(group) if group else None
        given = override.model_dump(exclude_none=True) if override is not None else {}
        return self.escalation.model_copy(update={**given, "groups": {}})


# environment variable (after the prefix) -> where it lands in the config
_ENV_SETTINGS: dict[str, tuple[str, ...]] = {
    "PROMETHEUS_URL": ("prometheus", "url"),
    "PROMETHEUS_TOKEN": ("prometheus", "bearer_token"),
    "PROMETHEUS_USERNAME": ("prometheus", "username"),
    "PROMETHEUS_PASSWORD": ("prometheus", "password"),
    "PROMETHEUS_CA_BUNDLE": ("prometheus", "ca_bundle"),
    "PROMETHEUS_TIMEOUT": ("prometheus", "timeout_seconds"),
    "PROMETHEUS_VERIFY": ("prometheus", "verify_tls"),
    "PROMETHEUS_HEADERS": ("prometheus", "headers"),
    "ARCHIVE": ("archive",),
    "ARCHIVE_CACHE": ("archive_storage", "cache"),
    "NOTEBOOKS": ("notebooks",),
    "NOW": ("now",),
    "WEBHOOK_TOKEN": ("service", "webhook_token"),
    "REDIS_URL": ("service", "redis_url"),
    "DATABASE_URL": ("database",),
    "WORKERS": ("service", "workers"),
    "SHUTDOWN_GRACE_SECONDS": ("service", "shutdown_grace_seconds"),
    "RECOVERY_INTERVAL_SECONDS": ("service", "recovery_interval_seconds"),
    "READER_TOKEN": ("service", "reader_token"),
    "TRUSTED_USER_HEADER": ("service", "trusted_user_header"),
    "NOTIFY": ("notifications", "targets"),
}


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for name, path in _ENV_SETTINGS.items():
        value: Any = env.get(ENV_PREFIX + name)
        if value in (None, ""):
            continue
        if name == "PROMETHEUS_VERIFY":
            value = value.lower() not in ("0", "false", "no", "off")
        elif name == "NOTIFY":
            value = value.split()
        elif name == "PROMETHEUS_HEADERS":
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    f"{ENV_PREFIX}{name} must be a JSON object such as "
                    f'{{"X-Scope-OrgID": "team-a"}}: {exc}'
                ) from exc
        target = overrides
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value
    return overrides


def _env_name(location: tuple[Any, ...], env: Mapping[str, str]) -> str | None:
    """The environment variable that set the setting at ``location``, if one did."""
    for name, path in _ENV_SETTINGS.items():
        if tuple(location[: len(path)]) == path and env.get(ENV_PREFIX + name) not in (None, ""):
            return ENV_PREFIX + name
    return None


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def find_config_file(
    path: str | Path | None = None, *, env: Mapping[str, str] | None = None
) -> Path | None:
    """Which config file applies: ``path``, else ``$WORKBOOKS_CONFIG``, else ``./workbooks.yaml``
    when it exists, else none. Absolute, so a kernel started in another folder reads the same.
    """
    env = os.environ if env is None else env
    chosen = path or env.get(ENV_PREFIX + "CONFIG") or None
    if chosen is None and Path(DEFAULT_CONFIG_FILE).is_file():
        chosen = DEFAULT_CONFIG_FILE
    return Path(chosen).absolute() if chosen is not None else None


# libyaml's parser when PyYAML has it (its wheels do): the same documents, about ten times
# faster. The query catalog's 16 files: 81 -> 7 ms, paid by every run's kernel.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(text: str) -> Any:
    """``yaml.safe_load(text)``, on libyaml's parser where it is available."""
    return yaml.load(text, Loader=_YAML_LOADER)  # a safe loader, C or Python


def load_config(path: str | Path | None = None, *, env: Mapping[str, str] | None = None) -> Config:
    """The configuration from the file (if any) with the environment on top."""
    env = os.environ if env is None else env
    file_path = find_config_file(path, env=env)
    data: dict[str, Any] = {}
    if file_path is not None:
        try:
            loaded = read_yaml(Path(file_path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read the config file {file_path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"the config file {file_path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"the config file {file_path} must hold a mapping at the top")
        data = loaded or {}
    data = _merge(data, _env_overrides(env))
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        variable = _env_name(tuple(error["loc"]), env)
        if variable is not None:
            raise ConfigError(f"bad value in {variable}: {error['msg']}") from None
        origin = f"the config file {file_path}" if file_path else "the environment"
        # from None: pydantic's message repeats the input, which may be a secret.
        raise ConfigError(f"bad setting {where} in {origin}: {error['msg']}") from None


@lru_cache(maxsize=1)
def _cached() -> Config:
    return load_config()


def current_config() -> Config:
    """The process's configuration, read once (notebook cells call this many times)."""
    return _cached()


def configured_database(env: Mapping[str, str] | None = None) -> str | None:
    """The PostgreSQL URL for the index and ledger: WORKBOOKS_DATABASE_URL, else the config
    file's ``database:``, else None (SQLite files in the archive folder, the default)."""
    env = os.environ if env is None else env
    if env.get(ENV_PREFIX + "DATABASE_URL"):
        return check_database_url(env[ENV_PREFIX + "DATABASE_URL"])
    if find_config_file(env=env) is None:
        return None  # no file: nothing to read (and no cached config to go stale)
    return current_config().database


def now(config: Config | None = None) -> datetime:
    """The investigation's "now": real UTC time unless pinned with WORKBOOKS_NOW."""
    pinned = (config or current_config()).now
    if pinned is not None:
        return pinned if pinned.tzinfo else pinned.replace(tzinfo=UTC)
    return datetime.now(UTC)
