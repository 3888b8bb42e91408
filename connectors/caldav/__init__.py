"""Follow-up tasks as CalDAV VTODOs (Radicale and other CalDAV servers)."""
