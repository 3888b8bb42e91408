"""Notification mail over SMTP: plain text + HTML, one deterministic Message-ID per notice."""
