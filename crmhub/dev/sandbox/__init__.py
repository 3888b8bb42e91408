"""Sandboxes of the real external systems (cached virtualenvs, template databases, servers)."""
