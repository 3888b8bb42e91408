"""Pure mappings between canonical models and Tryton (ERP) payloads, both ways."""
