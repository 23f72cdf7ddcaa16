"""Usage and cost of jobs and workflow steps: the `pricing=` of a `Baton` app (a table of
prices per million tokens, or a callable) and what the usage queries return (`WorkflowUsage`,
`UsageTotals`). Money is `Decimal` throughout; an unpriced model costs None, never 0."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import ValidationError

log = logging.getLogger("baton.usage")

PER = Decimal(1_000_000)  # table prices are per million tokens
PRICE_KEYS = ("input", "output")

PricingCallable = Callable[[str, int, int, dict[str, Any]], Any]


def to_money(field_name: str, value: Any) -> Decimal:
    """`value` (Decimal, int, str, or float, taken by its str) as a finite Decimal >= 0, or a
    ValidationError naming `field_name`."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str | float):
        raise ValidationError(
            field_name,
            f"must be a price as a str, int or Decimal like '2.50', got {type(value).__name__} {value!r:.80}",
        )
    try:
        money = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise ValidationError(field_name, f"must be a number like '2.50', got {value!r:.80}") from None
    if not money.is_finite() or money < 0:
        raise ValidationError(field_name, f"must be a finite number >= 0, got {value!r:.80}")
    return money


class Pricing:
    """How an app prices usage: `{model: {"input": price, "output": price}}` per million
    tokens, or a callable `(model, input_tokens, output_tokens, extra) -> Decimal | None`.

    A model missing from the table costs None (unpriced). A callable that raises or returns
    something that is not a price is logged and the call recorded unpriced: tokens are kept,
    the job does not fail for a pricing bug."""

    def __init__(self, prices: Mapping[str, tuple[Decimal, Decimal]] | None, fn: PricingCallable | None) -> None:
        self._prices = dict(prices or {})
        self._fn = fn

    @classmethod
    def parse(cls, value: Any) -> Pricing | None:
        """Validate `Baton(pricing=...)`, naming the bad entry (`pricing.<model>.input`)."""
        if value is None or isinstance(value, Pricing):
            return value
        if callable(value) and not isinstance(value, Mapping):
            return cls(None, value)
        if not isinstance(value, Mapping):
            raise ValidationError(
                "pricing",
                "must be a dict like {'gpt-4.1': {'input': '2.00', 'output': '8.00'}} (per million tokens) "
                f"or a callable (model, input_tokens, output_tokens, extra) -> Decimal | None; got {value!r:.80}",
            )
        prices: dict[str, tuple[Decimal, Decimal]] = {}
        for model, entry in value.items():
            if not isinstance(model, str) or not model.strip():
                raise ValidationError(
                    "pricing", f"model names must be non-empty strings, got {type(model).__name__} {model!r:.80}"
                )
            where = f"pricing.{model}"
            if not isinstance(entry, Mapping):
                raise ValidationError(
                    where, f"must be a dict like {{'input': '2.00', 'output': '8.00'}}, got {entry!r:.80}"
                )
            for key in entry:
                if key not in PRICE_KEYS:
                    raise ValidationError(
                        f"{where}.{key}", "is not a price this table knows; give 'input' and 'output' per million"
                    )
            for key in PRICE_KEYS:
                if key not in entry:
                    raise ValidationError(f"{where}.{key}", "is missing; give 'input' and 'output' per million tokens")
            prices[model] = (to_money(f"{where}.input", entry["input"]), to_money(f"{where}.output", entry["output"]))
        return cls(prices, None)

    def __call__(self, model: str, input_tokens: int, output_tokens: int, extra: dict[str, Any]) -> Decimal | None:
        """The cost of one recorded call, or None when it is unpriced."""
        if self._fn is None:
            price = self._prices.get(model)
            if price is None:
                return None
            return (input_tokens * price[0] + output_tokens * price[1]) / PER
        try:
            cost = self._fn(model, input_tokens, output_tokens, extra)
            return None if cost is None else to_money("pricing", cost)
        except Exception:
            log.exception(
                "the pricing callable failed for model %r (%d input, %d output tokens); recorded unpriced",
                model,
                input_tokens,
                output_tokens,
            )
            return None


def money_text(cost: Decimal) -> str:
    """A cost as stored: plain notation (never exponent form), exact."""
    return format(cost, "f")


def _money(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


# --------------------------------------------------------------------------- query results


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Usage summed over some calls. `cost` sums the priced calls and is None when none was
    priced; `unpriced_calls` counts the calls that had no price."""

    cost: Decimal | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0
    unpriced_calls: int = 0

    def __add__(self, other: UsageTotals) -> UsageTotals:
        costs = [c for c in (self.cost, other.cost) if c is not None]
        cost = sum(costs, Decimal(0)) if costs else None
        return UsageTotals(
            cost,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.calls + other.calls,
            self.unpriced_calls + other.unpriced_calls,
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> UsageTotals:
        """From a grouped usage row: calls, priced, input_tokens, output_tokens, cost."""
        calls, priced = int(row["calls"]), int(row["priced"])
        return cls(
            _money(row["cost"]) if priced else None,
            int(row["input_tokens"] or 0),
            int(row["output_tokens"] or 0),
            calls,
            calls - priced,
        )

    def as_dict(self) -> dict[str, Any]:
        """The totals as a plain dict (what `usage_by_model` returns per model)."""
        return {
            "cost": self.cost,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "calls": self.calls,
            "unpriced_calls": self.unpriced_calls,
        }


@dataclass(frozen=True, slots=True)
class StepUsage(UsageTotals):
    """A workflow step's usage, with its split by model and by attempt (a retried step's
    failed attempts count too: their usage is under their attempt number)."""

    by_model: dict[str, UsageTotals] = field(default_factory=dict)
    by_attempt: dict[int, UsageTotals] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WorkflowUsage:
    """Usage of one workflow: totals, by step and by model. `total_cost` sums the priced
    calls (None when no call was priced); `unpriced_models` names models of unpriced calls,
    so a total that leaves some out says so."""

    workflow_id: str
    total_cost: Decimal | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0
    unpriced_calls: int = 0
    unpriced_models: list[str] = field(default_factory=list)
    by_step: dict[str, StepUsage] = field(default_factory=dict)
    by_model: dict[str, UsageTotals] = field(default_factory=dict)

    @property
    def totals(self) -> UsageTotals:
        """The workflow's totals as a `UsageTotals` (cost = `total_cost`)."""
        return UsageTotals(self.total_cost, self.input_tokens, self.output_tokens, self.calls, self.unpriced_calls)

    @classmethod
    def from_rows(cls, workflow_id: str, rows: Iterable[Mapping[str, Any]]) -> WorkflowUsage:
        """From rows grouped by step, model and attempt."""
        total = UsageTotals()
        by_model: dict[str, UsageTotals] = {}
        steps: dict[str, tuple[UsageTotals, dict[str, UsageTotals], dict[int, UsageTotals]]] = {}
        for row in rows:
            part = UsageTotals.from_row(row)
            model, step, attempt = row["model"], row["step"] or "", int(row["attempt"])
            total += part
            by_model[model] = by_model.get(model, UsageTotals()) + part
            sums, models, attempts = steps.setdefault(step, (UsageTotals(), {}, {}))
            models[model] = models.get(model, UsageTotals()) + part
            attempts[attempt] = attempts.get(attempt, UsageTotals()) + part
            steps[step] = (sums + part, models, attempts)
        by_step = {
            name: StepUsage(
                s.cost,
                s.input_tokens,
                s.output_tokens,
                s.calls,
                s.unpriced_calls,
                dict(sorted(models.items())),
                dict(sorted(attempts.items())),
            )
            for name, (s, models, attempts) in sorted(steps.items())
        }
        return cls(
            workflow_id,
            total.cost,
            total.input_tokens,
            total.output_tokens,
            total.calls,
            total.unpriced_calls,
            sorted(m for m, u in by_model.items() if u.unpriced_calls),
            by_step,
            dict(sorted(by_model.items())),
        )


__all__ = ["Pricing", "StepUsage", "UsageTotals", "WorkflowUsage", "money_text", "to_money"]
