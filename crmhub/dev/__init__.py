"""Development tools: the demo and the sandboxes of the real systems (never imported by the
runtime; the production image leaves this package out)."""
