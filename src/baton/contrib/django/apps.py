"""The Django app config of `baton.contrib.django` (add the package to INSTALLED_APPS)."""

from __future__ import annotations

from django.apps import AppConfig


class BatonConfig(AppConfig):
    """Gives Django the `manage.py baton worker|migrate` command."""

    name = "baton.contrib.django"
    label = "baton"
    verbose_name = "Baton"
