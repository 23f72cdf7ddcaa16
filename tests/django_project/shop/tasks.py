"""Django tasks of the test project."""

from typing import Any

from django.db import connections

try:
    from django.tasks import task
except ImportError:
    from django_tasks import task

USED_CONNECTIONS: list[Any] = []


@task()
def add(a: int, b: int) -> int:
    return a + b


@task()
async def add_async(a: int, b: int) -> int:
    return a + b


@task()
def fail(message: str) -> None:
    raise ValueError(message)


@task()
def count_orders(alias: str) -> int:
    """Queries Django's database from the worker thread and remembers that thread's connection."""
    wrapper = connections[alias]
    USED_CONNECTIONS.append(wrapper)
    with wrapper.cursor() as cur:
        cur.execute("SELECT count(*) FROM shop_order")
        return int(cur.fetchone()[0])


@task(takes_context=True)
def with_context(context: Any, tag: str) -> dict[str, Any]:
    return {"id": context.task_result.id, "attempt": context.attempt, "tag": tag}
