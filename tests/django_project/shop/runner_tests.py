"""Tests for Django's own test runner (`manage.py test shop.runner_tests`, run by
tests/test_contrib_django.py): the runner creates the test databases before them and destroys
them after, which PostgreSQL refuses while Baton still holds connections to them."""

from __future__ import annotations

import asyncio

from django.core.management import call_command
from django.db import transaction
from django.test import TestCase, TransactionTestCase

from baton import testing
from baton.contrib.django import get_app
from baton.errors import BatonError
from shop.tasks import add


class _Transactional:
    """Outside atomic blocks: enqueues commit at once on Baton's own connections."""

    alias = ""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()  # type: ignore[misc]
        call_command("baton", "migrate", "--backend", cls.alias)

    def test_enqueue_and_result(self) -> None:
        result = add.using(backend=self.alias).enqueue(1, 2)
        self.assertEqual(add.using(backend=self.alias).get_result(result.id).status, "READY")
        testing.assert_enqueued(get_app(self.alias), args={"args": [1, 2]})

    def test_inline_runs_the_task(self) -> None:
        with testing.inline(get_app(self.alias)):
            result = add.using(backend=self.alias).enqueue(2, 3)
            with transaction.atomic(using=self.alias):
                pending = add.using(backend=self.alias).enqueue(3, 4)
        self.assertEqual(add.using(backend=self.alias).get_result(result.id).return_value, 5)
        self.assertEqual(add.using(backend=self.alias).get_result(pending.id).return_value, 7)

    def test_async_api_left_open(self) -> None:
        # Pools opened on an event loop that ended without closing the app.
        self.assertIsInstance(asyncio.run(get_app(self.alias).count_jobs()), dict)


class _InTestCase:
    """A TestCase runs each test inside a transaction that is never committed."""

    alias = ""

    @classmethod
    def setUpClass(cls) -> None:
        call_command("baton", "migrate", "--backend", cls.alias)
        super().setUpClass()  # type: ignore[misc]

    def test_result_of_a_task_enqueued_in_the_test(self) -> None:
        result = add.using(backend=self.alias).enqueue(1, 2)
        self.assertEqual(add.using(backend=self.alias).get_result(result.id).status, "READY")

    def test_inline_fails_at_once(self) -> None:
        # Before: a 25 s wait for SQLite's write lock, then DatabaseUnavailable; on PostgreSQL
        # the task silently never ran. Now the inline block's exit says what to do.
        with self.assertRaisesRegex(BatonError, "TransactionTestCase"), testing.inline(get_app(self.alias)):
            add.using(backend=self.alias).enqueue(1, 2)


class PgTransactionalTests(_Transactional, TransactionTestCase):
    alias = "pg"
    databases = {"pg"}


class SqliteTransactionalTests(_Transactional, TransactionTestCase):
    alias = "default"
    databases = {"default"}


class PgTestCaseTests(_InTestCase, TestCase):
    alias = "pg"
    databases = {"pg"}


class SqliteTestCaseTests(_InTestCase, TestCase):
    alias = "default"
    databases = {"default"}
