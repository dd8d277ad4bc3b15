"""Alertmanager webhook payloads (version 4) as typed objects.

One delivery is an :class:`AlertGroup`: several alerts, possibly of different alertnames, some
firing and some resolved. Parsing rejects anything else with a :class:`BadAlertError` that names
the offending field, and never touches the archive.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from workbooks.core.errors import BadAlertError

# Alertmanager writes this for "no end yet" (Go's zero time).
_ZERO_TIME_YEAR = 1
# The times an alert may carry: anything else is a broken or hostile sender.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def _parse_time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        text = str(value).strip()
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"not an RFC 3339 time: {text!r}") from exc
    if moment.year <= _ZERO_TIME_YEAR:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if not _EARLIEST <= moment < _LATEST:
        # Outside this, windows and index times overflow or sort wrong: refuse, do not run.
        raise ValueError(f"{_quoted(value)} is outside {_EARLIEST.year}-{_LATEST.year - 1}")
    return moment.astimezone(UTC)


def _quoted(value: Any) -> str:
    return repr(str(value)[:40])


class Alert(BaseModel):
    """One alert of a delivery; ``ends_at`` is None while it is firing."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = ""

    @field_validator("starts_at", mode="before")
    @classmethod
    def _starts(cls, value: Any) -> datetime:
        moment = _parse_time(value)
        if moment is None:
            raise ValueError("startsAt must be a real time")
        return moment

    @field_validator("ends_at", mode="before")
    @classmethod
    def _ends(cls, value: Any) -> datetime | None:
        return _parse_time(value)

    @field_validator("labels")
    @classmethod
    def _has_alertname(cls, labels: dict[str, str]) -> dict[str, str]:
        if not labels.get("alertname"):
            raise ValueError("labels.alertname is required")
        return labels

    @property
    def name(self) -> str:
        return self.labels["alertname"]

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "warning")


class AlertGroup(BaseModel):
    """One webhook delivery: the alerts Alertmanager grouped together."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str = ""
    group_key: str = Field(alias="groupKey")
    alerts: list[Alert] = Field(min_length=1)
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts")

    @property
    def firing(self) -> list[Alert]:
        return [alert for alert in self.alerts if alert.status == "firing"]

    @property
    def starts_at(self) -> datetime:
        """When the group's earliest alert began: with the group key, it names the incident."""
        return min(alert.starts_at for alert in self.alerts)

    def by_alertname(self) -> dict[str, list[Alert]]:
        grouped: dict[str, list[Alert]] = {}
        for alert in self.alerts:
            grouped.setdefault(alert.name, []).append(alert)
        return grouped

    def to_payload(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json(by_alias=True))


def parse_alert_group(payload: str | bytes | dict[str, Any]) -> AlertGroup:
    """Validate a webhook payload; raise :class:`BadAlertError` naming the first bad field."""
    if isinstance(payload, str | bytes):
        try:
            payload = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadAlertError(
                f"the alert is not valid JSON ({exc}); expected an Alertmanager webhook payload"
            ) from exc
        except RecursionError:
            message = "the alert nests too deeply to be an Alertmanager payload"
            raise BadAlertError(message) from None
    try:
        # A lone surrogate (JSON "\\ud800") is valid JSON but no text: it could not be stored.
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadAlertError("the alert holds text that is not valid Unicode") from None
    except (RecursionError, ValueError, TypeError):
        raise BadAlertError("the alert is not a JSON document of an Alertmanager payload") from None
    if not isinstance(payload, dict):
        raise BadAlertError("the alert must be a JSON object (an Alertmanager webhook payload)")
    if "version" in payload and payload["version"] != "4":
        raise BadAlertError(
            f"unsupported webhook version {payload['version']!r}: this tool reads Alertmanager's "
            'version "4" payloads',
            field="version",
        )
    try:
        return AlertGroup.model_validate(payload)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = _field_path(error["loc"], payload)
        raise BadAlertError(f"bad alert field {where}: {error['msg']}", field=where) from exc


def _field_path(location: tuple[Any, ...], payload: dict[str, Any]) -> str:
    parts: list[str] = []
    for part in location:
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
        else:
            parts.append(str(part))
    return ".".join(parts) or "payload"


def read_alert_group(source: str | Path | IO[str]) -> AlertGroup:
    """Read a payload from a path, ``-`` (standard input) or an open file."""
    if hasattr(source, "read"):
        return parse_alert_group(source.read())  # type: ignore[union-attr]
    if str(source) == "-":
        import sys

        return parse_alert_group(sys.stdin.read())
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadAlertError(f"cannot read the alert file {path}: {exc.strerror}") from exc
    return parse_alert_group(text)
