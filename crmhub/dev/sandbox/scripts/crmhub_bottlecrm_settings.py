"""crmhub's BottleCRM sandbox: crm.settings for one local test instance."""
import os

from crm.settings import *  # noqa: F401,F403

DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["CRMHUB_BOTTLECRM_DB"],
        # gunicorn threads and the dispatcher write at once: wait for the lock, and take
        # it at BEGIN so that no transaction has to upgrade (and fail) midway
        "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
    }
}
CELERY_BROKER_URL = "memory://"
CELERY_RESULT_BACKEND = "cache+memory://"
CELERY_TASK_ALWAYS_EAGER = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The SSRF guard refuses loopback receivers and ports other than 443/80: a hub under test
# listens on 127.0.0.1 at a free port. Test instances only.
import webhooks.ssrf as _ssrf  # noqa: E402


class _AnyPort:
    def __contains__(self, port: object) -> bool:
        return True


_ssrf.is_blocked = lambda ip: False
_ssrf._allowed_ports = lambda: _AnyPort()
