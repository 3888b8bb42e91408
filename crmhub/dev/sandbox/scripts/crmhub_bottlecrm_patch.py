"""BottleCRM's webhook retry schedule, shortened: loaded by gunicorn and the dispatcher after
Django, every step $CRMHUB_BOTTLECRM_RETRY_SECONDS long."""
import os
from datetime import timedelta

import webhooks.tasks

_STEP = timedelta(seconds=float(os.environ["CRMHUB_BOTTLECRM_RETRY_SECONDS"]))
webhooks.tasks.BACKOFF = tuple(_STEP for _ in webhooks.tasks.BACKOFF)
