"""The Django Tasks API: `django.tasks` (Django 6+), else the `django-tasks` backport package
(`django_tasks`, Django 5.2 on Python 3.11)."""

from __future__ import annotations

from typing import Any

from ...errors import MissingExtraError

try:
    from django.tasks import task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
    from django.tasks.exceptions import TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued

    SOURCE = "django.tasks"
except ImportError:
    try:
        from django_tasks import task_backends  # type: ignore[no-redef]
        from django_tasks.backends.base import BaseTaskBackend  # type: ignore[no-redef]
        from django_tasks.base import (  # type: ignore[no-redef]
            Task,
            TaskContext,
            TaskError,
            TaskResult,
            TaskResultStatus,
        )
        from django_tasks.exceptions import TaskResultDoesNotExist  # type: ignore[no-redef]
        from django_tasks.signals import task_enqueued  # type: ignore[no-redef]

        SOURCE = "django_tasks"
    except ImportError as exc:
        raise MissingExtraError(
            f"baton.contrib.django needs Django's tasks framework ({exc}): install the extra, "
            "pip install 'baton-jobs[django]' (Django 6, or Django 5.2 with the django-tasks backport)"
        ) from None

__all__: list[Any] = [
    "SOURCE",
    "BaseTaskBackend",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "task_backends",
    "task_enqueued",
]
