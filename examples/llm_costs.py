"""Ask three models the same question, let a fourth synthesise their answers, and see what each
model cost: `job.record_usage(...)` in the steps, `Baton(pricing=...)`, `app.workflow_usage()`.

    python examples/llm_costs.py                    # a temporary SQLite database
    python examples/llm_costs.py sqlite:///llm.db   # or any URL (then: baton --url ... workflows show <id>)

The model client is a fake (no network, no API key): it answers deterministically and reports
token counts the way real clients do (`response.usage`). Swap `FakeClient` for your SDK's
client; the Baton part stays the same. The fan-out is fixed (one step per model); with map
grafts the models could come from the workflow's input.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import tempfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import baton

MODELS = ("gpt-4.1", "claude-sonnet-4", "local-llama")  # the last one is self-hosted: no price
SYNTHESIZER = "gpt-4.1-mini"

# Dollars per million tokens (as strings, so they stay exact Decimals).
PRICING = {
    "gpt-4.1": {"input": "2.00", "output": "8.00"},
    "gpt-4.1-mini": {"input": "0.40", "output": "1.60"},
    "claude-sonnet-4": {"input": "3.00", "output": "15.00"},
}


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Response:
    text: str
    usage: Usage


class FakeClient:
    """Answers like an LLM API would, without the network: the same prompt and model always
    give the same answer and token counts."""

    async def complete(self, model: str, prompt: str) -> Response:
        await asyncio.sleep(0.01)
        seed = int(hashlib.sha256(f"{model}:{prompt}".encode()).hexdigest()[:8], 16)
        answer = f"[{model}] {prompt.split('?')[0]}? In short: it depends ({seed % 97})."
        return Response(
            answer, Usage(input_tokens=len(prompt.split()) * 40 + seed % 50, output_tokens=200 + seed % 300)
        )


client = FakeClient()


def build_app(url: str) -> baton.Baton:
    app = baton.Baton(url, queues={"llm": 3}, pricing=PRICING, plugins=[], log_events=False)

    @app.worker(name="llm.ask", queue="llm")
    async def ask(job: baton.Job) -> str:
        """One model's answer to the prompt; its tokens are recorded with the step."""
        response = await client.complete(job.args["model"], job.args["prompt"])
        job.record_usage(
            model=job.args["model"],
            input_tokens=response.usage.input_tokens,
            output_tokens=response.usage.output_tokens,
        )
        return response.text

    @app.worker(name="llm.synthesize", queue="llm")
    async def synthesize(job: baton.Job) -> str:
        """One answer from all of them (a second call would be recorded the same way)."""
        answers = job.upstream_all()
        prompt = "Merge these answers into one:\n" + "\n".join(answers.values())
        response = await client.complete(SYNTHESIZER, prompt)
        job.record_usage(
            model=SYNTHESIZER, input_tokens=response.usage.input_tokens, output_tokens=response.usage.output_tokens
        )
        return response.text

    return app


def fan_out(app: baton.Baton, prompt: str) -> baton.Workflow:
    """ask_<model> for each model, then one synthesize step after all of them."""
    wf = baton.Workflow(label="llm-fan-out")
    names = []
    for model in MODELS:
        name = f"ask_{model}"
        wf.add(name, app.new("llm.ask", {"model": model, "prompt": prompt}))
        names.append(name)
    wf.add("synthesize", app.new("llm.synthesize", {}), deps=names)
    return wf


def money(cost: Decimal | None) -> str:
    return "unpriced" if cost is None else f"${format(cost, 'f')}"


async def main(url: str) -> baton.WorkflowUsage:
    app = build_app(url)
    await app.migrate()
    try:
        wid = await app.insert_workflow(fan_out(app, "Should a small team run its own job queue?"))
        await app.drain()
        usage = await app.workflow_usage(wid)
    finally:
        await app.close()

    print(f"workflow {wid}")
    print(f"{'model':<18}{'calls':>6}{'input':>8}{'output':>8}  cost")
    for model, u in usage.by_model.items():
        print(f"{model:<18}{u.calls:>6}{u.input_tokens:>8}{u.output_tokens:>8}  {money(u.cost)}")
    print(f"{'by step:':<18}" + ", ".join(f"{name} {money(s.cost)}" for name, s in usage.by_step.items()))
    total = money(usage.total_cost)
    if usage.unpriced_models:
        total += f" (not counting {', '.join(usage.unpriced_models)}: no price)"
    print(f"total: {total}")
    return usage


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(main(f"sqlite:///{Path(tmp) / 'llm_costs.db'}"))
