"""Office automation (OA) mappings: approval rules, notices, chat robot payloads, tasks."""
