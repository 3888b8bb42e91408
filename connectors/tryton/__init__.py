"""Tryton 8.0 as the ERP: JSON-RPC client, parties, sales, invoice and payment reads."""
