"""Chat robot webhooks (env prefix CHATBOTS_). An empty webhook turns that robot off."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from connectors.spec import ConnectorSettings


class ChatbotSettings(ConnectorSettings):
    model_config = SettingsConfigDict(env_prefix="CHATBOTS_", extra="ignore")

    dingtalk_webhook: SecretStr = Field(
        default=SecretStr(""), description="DingTalk custom robot URL "
        "(https://oapi.dingtalk.com/robot/send?access_token=...); empty = off")
    dingtalk_secret: SecretStr = Field(default=SecretStr(""),
                                       description="its signing secret (SEC...); empty = unsigned")
    wecom_webhook: SecretStr = Field(
        default=SecretStr(""), description="WeCom group robot URL "
        "(https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...); empty = off")
    feishu_webhook: SecretStr = Field(
        default=SecretStr(""), description="Feishu custom bot URL "
        "(https://open.feishu.cn/open-apis/bot/v2/hook/...); empty = off")
    feishu_secret: SecretStr = Field(default=SecretStr(""),
                                     description="its signing secret; empty = unsigned")
    timeout_seconds: float = Field(default=10.0, gt=0, description="per-request timeout")
