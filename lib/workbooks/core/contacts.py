"""Who hears of an incident: the escalation contacts and the notification targets, per group.

A runbook group (a notebook's ``metadata.workbooks.group``) may have contacts of its own over the
default block (``escalation.groups.security``) and notification targets of its own
(``notifications.groups.security.targets``): the security runbooks call the security on-call.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from workbooks.core.paths import RUNBOOK_GROUPS


class Settings(BaseModel):
    """A block of the config file: frozen, and a misspelt key is an error, not ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class GroupEscalation(Settings):
    """One group's contacts: only the keys given replace the default block's."""

    primary: str | None = None
    secondary: str | None = None
    escalation: str | None = None
    slack: str | None = None
    pagerduty: str | None = None
    email: str | None = None
    escalate_after_minutes: int | None = None


def known_groups(groups: dict[str, Any]) -> dict[str, Any]:
    """``groups`` unchanged when every key is a runbook group, else a ValueError naming them."""
    unknown = sorted(set(groups) - set(RUNBOOK_GROUPS))
    if unknown:
        raise ValueError(
            f"unknown runbook group {', '.join(unknown)}; "
            f"the groups are {', '.join(RUNBOOK_GROUPS)}"
        )
    return groups


class Escalation(Settings):
    """Who to call; shown in every workbook's Escalation section, used by notifications.

    ``groups`` gives a runbook group its own contacts (``security: {primary: Security on-call,
    slack: "#sec-incidents"}``) on top of this default block: see :meth:`Config.escalation_for`.
    """

    primary: str = "ML Engineering Team"
    secondary: str = "DevOps Team"
    escalation: str = "Engineering Manager"
    slack: str = "#mobile-ml-alerts"
    pagerduty: str = "mobile-ml-oncall"
    email: str = "ml-team@company.com"
    escalate_after_minutes: int = 30
    groups: dict[str, GroupEscalation] = Field(default_factory=dict)

    @field_validator("groups")
    @classmethod
    def _known_groups(cls, groups: dict[str, GroupEscalation]) -> dict[str, GroupEscalation]:
        return known_groups(groups)


EscalationSettings = Escalation  # the name other parts know the contacts by


class GroupNotifications(Settings):
    """Where one runbook group's run summaries go instead of the default targets."""

    targets: list[str] = Field(default_factory=list, repr=False)


class NotificationSettings(Settings):
    """Where run summaries go: apprise URLs (Slack incoming webhooks among them).

    ``groups`` sends one runbook group's summaries to its own targets (``security: {targets:
    [slack://...]}``): see :meth:`targets_for`.
    """

    targets: list[str] = Field(default_factory=list, repr=False)
    template: str | None = None  # a Jinja2 file; default templates/notification.md.j2
    groups: dict[str, GroupNotifications] = Field(default_factory=dict, repr=False)

    @field_validator("groups")
    @classmethod
    def _known_groups(cls, groups: dict[str, GroupNotifications]) -> dict[str, GroupNotifications]:
        return known_groups(groups)

    def targets_for(self, group: str | None) -> list[str]:
        """The group's own targets when it has some, else the default ones."""
        own = self.groups.get(group) if group else None
        return own.targets if own is not None and own.targets else self.targets

    @property
    def any_targets(self) -> bool:
        return bool(self.targets) or any(each.targets for each in self.groups.values())


__all__ = [
    "Escalation",
    "EscalationSettings",
    "GroupEscalation",
    "GroupNotifications",
    "NotificationSettings",
    "Settings",
    "known_groups",
]
