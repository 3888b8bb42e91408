"""crmhub: the runtime that moves canonical events between CRM, ERP, SCM and OA systems."""

__version__ = "0.1.0"
