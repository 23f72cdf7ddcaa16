"""A worker module whose import fails (a dependency is missing), for
tests/test_process_executor.py: the child must report that ImportError, not "cannot be imported"."""

import baton_no_such_dependency  # noqa: F401


def work(job: object) -> None:
    return None
