"""BottleCRM (PyPI django-crm): REST client, its payload shapes and signed webhooks."""
