"""DingTalk, WeCom and Feishu group robots: their webhook payloads and signing."""
