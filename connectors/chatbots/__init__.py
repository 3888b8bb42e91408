"""DingTalk, WeCom and Feishu group robots: their webhook payloads and signing."""

from connectors.chatbots.settings import ChatbotSettings
from connectors.spec import ConnectorSpec

SPEC = ConnectorSpec(
    slug="chatbots", settings=ChatbotSettings, status="experimental",
    summary="OA chat robots: signed notices to DingTalk, WeCom and Feishu group webhooks")
