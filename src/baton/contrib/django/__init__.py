"""Django integration: a Django Tasks backend that runs `@task` functions on Baton nodes, with
enqueue inside `transaction.atomic()` on Django's own connection (the job commits or rolls back
with the caller's data), and `manage.py baton worker|migrate`.

    INSTALLED_APPS = [..., "baton.contrib.django"]
    TASKS = {"default": {"BACKEND": "baton.contrib.django.BatonBackend"}}

See docs/integrations.md for the OPTIONS."""

from __future__ import annotations

from typing import Any

__all__ = ["BatonBackend", "get_app"]


def __getattr__(name: str) -> Any:
    # Lazy: Django imports this package while loading apps, before the tasks framework is ready.
    if name in __all__:
        from . import backend

        return getattr(backend, name)
    raise AttributeError(name)
