"""Chat robot messages for a notice, in each robot's documented webhook format.

DingTalk and WeCom take markdown; Feishu takes a `post` (rich text). The signing (DingTalk:
timestamp + sign in the query; Feishu: timestamp + sign in the body) and WeCom's key in the
URL are added by connectors/chatbots, which knows the secrets; these payloads are pure.
"""

from __future__ import annotations

from typing import Any

from mappings.oa.notice import Notice


def _markdown(notice: Notice) -> str:
    facts = "\n".join(f"- **{label}**: {value}" for label, value in notice.facts)
    return f"### {notice.subject}\n\n{notice.text.splitlines()[0]}\n\n{facts}"


def dingtalk(notice: Notice, mention: list[str] | None = None) -> dict[str, Any]:
    """DingTalk custom robot: msgtype markdown; `mention` are mobile numbers to @."""
    text = _markdown(notice)
    if mention:
        text += "\n\n" + " ".join(f"@{who}" for who in mention)
    return {"msgtype": "markdown", "markdown": {"title": notice.subject, "text": text},
            "at": {"atMobiles": list(mention or []), "isAtAll": False}}


def wecom(notice: Notice) -> dict[str, Any]:
    """WeCom (企业微信) group robot: msgtype markdown (content at most 4096 bytes)."""
    content = _markdown(notice).replace("### ", "## ", 1)
    encoded = content.encode()
    if len(encoded) > 4096:
        content = encoded[:4090].decode(errors="ignore") + " ..."
    return {"msgtype": "markdown", "markdown": {"content": content}}


def feishu(notice: Notice) -> dict[str, Any]:
    """Feishu (飞书) custom bot: msg_type post, one paragraph per fact."""
    lines: list[list[dict[str, Any]]] = [[{"tag": "text", "text": notice.text.splitlines()[0]}]]
    lines += [[{"tag": "text", "text": f"{label}: {value}"}] for label, value in notice.facts]
    return {"msg_type": "post",
            "content": {"post": {"zh_cn": {"title": notice.subject, "content": lines}}}}
