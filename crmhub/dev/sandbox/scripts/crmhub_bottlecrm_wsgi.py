"""gunicorn's entry for the BottleCRM sandbox: BottleCRM's WSGI app with the retry patch."""
from crm.wsgi import application  # sets Django up, so it comes first

import crmhub_bottlecrm_patch  # noqa: F401  # isort: skip

__all__ = ["application"]
