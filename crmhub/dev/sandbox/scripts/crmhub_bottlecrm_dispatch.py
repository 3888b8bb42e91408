"""What celery beat does every minute in production, every $CRMHUB_BOTTLECRM_DISPATCH_SECONDS
here: send the webhook deliveries that are due."""
import os
import time

import django

django.setup()
import crmhub_bottlecrm_patch  # noqa: E402,F401
from webhooks.tasks import dispatch_due_deliveries  # noqa: E402

_PAUSE = float(os.environ["CRMHUB_BOTTLECRM_DISPATCH_SECONDS"])
while True:
    try:
        dispatch_due_deliveries()
    except Exception as exc:  # a locked database: next round
        print("dispatch failed:", repr(exc), flush=True)
    time.sleep(_PAUSE)
