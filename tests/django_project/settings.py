"""Settings of the Django project the Django integration tests run (databases from the env)."""

import os
from urllib.parse import urlsplit

try:
    import django.tasks  # noqa: F401 - Django 6 has the tasks framework built in

    TASKS_APPS: list[str] = []
except ImportError:
    TASKS_APPS = ["django_tasks"]  # the backport on Django 5.2

SECRET_KEY = "baton-tests"
USE_TZ = True
INSTALLED_APPS = [*TASKS_APPS, "baton.contrib.django", "shop"]

_pg = urlsplit(os.environ["BATON_DJANGO_PG_URL"])
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["BATON_DJANGO_SQLITE"],
        # Django's test runner (shop/runner_tests.py): a file, as Baton needs one (not in-memory).
        "TEST": {"NAME": os.environ.get("BATON_DJANGO_SQLITE_TEST")},
    },
    "pg": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _pg.path.lstrip("/"),
        "USER": _pg.username or "",
        "PASSWORD": _pg.password or "",
        "HOST": _pg.hostname or "",
        "PORT": str(_pg.port or ""),
        "OPTIONS": {"application_name": "django-test"},
    },
}

TASKS = {
    "default": {"BACKEND": "baton.contrib.django.BatonBackend", "OPTIONS": {"DATABASE": "default"}},
    "pg": {
        "BACKEND": "baton.contrib.django.BatonBackend",
        "OPTIONS": {"DATABASE": "pg", "MAX_ATTEMPTS": 2, "BATON": {"log_events": False}},
    },
    # Baton's tables in a schema of their own, in the same PostgreSQL database as Django's data.
    "pg_schema": {
        "BACKEND": "baton.contrib.django.BatonBackend",
        "OPTIONS": {"DATABASE": "pg", "SCHEMA": "baton_dj", "BATON": {"log_events": False}},
    },
}
