"""What the OA flows share: their settings (APPROVAL_*, NOTIFY_*) and their two sinks.

- `ApprovalDesk`: the Matrix bot plus the approval rules (sink of order_approval, source of
  the approval_replies feed).
- `Notifier`: mail, chat robots and the task list, plus who gets what (sink of the notice
  flows).
Not a flow itself: the flows are the modules listed in flows/__init__.py.
"""

from __future__ import annotations

import functools
import logging
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from connectors.caldav.client import TaskList
from connectors.chatbots.client import ChatRobots
from connectors.matrix.client import MatrixClient
from connectors.smtp.client import Mailer
from connectors.spec import ConnectorSettings
from mappings.oa import chatbot
from mappings.oa.approval import ApprovalRules
from mappings.oa.notice import Notice
from mappings.oa.text import Language
from schemas.envelope import Event

log = logging.getLogger(__name__)
_MAIL_NAMESPACE = uuid.UUID("3a9d5f7e-2c41-4b8e-9f0a-6d1e2b7c4a55")


class ApprovalSettings(ConnectorSettings, ApprovalRules):
    """The approval gate's rules (env prefix APPROVAL_, TOML table [approval]); see
    ApprovalRules for each field.

    APPROVAL_APPROVERS is comma-separated; APPROVAL_AMOUNT_LIMITS is JSON
    ({"EUR": "50000", "CNY": "350000"}). No approvers = the gate is off.
    """

    model_config = SettingsConfigDict(env_prefix="APPROVAL_", extra="ignore")

    approvers: Annotated[list[str], NoDecode] = []

    @field_validator("approvers", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    def rules(self) -> ApprovalRules:
        return ApprovalRules.model_validate(self.model_dump(include=set(
            ApprovalRules.model_fields)))


@functools.cache
def approval_rules() -> ApprovalRules:
    """The rules from the environment, read once per process (tests: cache_clear())."""
    return ApprovalSettings().rules()


class NotifySettings(ConnectorSettings):
    """Who hears about what (env prefix NOTIFY_, TOML table [notify])."""

    model_config = SettingsConfigDict(env_prefix="NOTIFY_", extra="ignore")

    finance_email: str = ""
    """Finance's address: payments received, invoices paid (empty: finance gets no mail)."""
    fallback_email: str = ""
    """Who gets an owner's mail when the order or customer names no owner (empty: nobody)."""
    language: Language = "en"
    """Language of mails, robot messages and tasks (en, zh)."""


@dataclass
class ApprovalDesk:
    matrix: MatrixClient
    rules: ApprovalRules

    @classmethod
    def from_env(cls) -> ApprovalDesk:
        return cls(MatrixClient.from_env(), approval_rules())

    async def aclose(self) -> None:
        await self.matrix.aclose()


@dataclass
class Notifier:
    mailer: Mailer
    robots: ChatRobots
    tasks: TaskList
    settings: NotifySettings

    @classmethod
    def from_env(cls) -> Notifier:
        return cls(Mailer.from_env(), ChatRobots.from_env(), TaskList.from_env(),
                   NotifySettings())

    async def aclose(self) -> None:
        await self.robots.aclose()
        await self.tasks.aclose()

    async def mail(self, cause: Event[Any], notice: Notice, to: list[str]) -> str:
        """Mail a notice; the Message-ID is derived from the event and the notice kind."""
        message_id = f"<{uuid.uuid5(_MAIL_NAMESPACE, f'{cause.event_id}:{notice.kind}')}@crmhub>"
        return await self.mailer.send(to=to, subject=notice.subject, text=notice.text,
                                      html=notice.html, message_id=message_id)

    async def chat(self, robot: str, notice: Notice) -> str:
        payload = {"dingtalk": chatbot.dingtalk, "wecom": chatbot.wecom,
                   "feishu": chatbot.feishu}[robot](notice)
        return await self.robots.send(robot, payload)


def recipients(*addresses: str | None) -> list[str]:
    """Distinct non-empty addresses, in order."""
    return list(dict.fromkeys(a for a in addresses if a))
