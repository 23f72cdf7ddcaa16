"""Chain operations: a chained worker's jobs run one at a time per chain key, in insertion
order; a finished link releases the next (or holds, or halts the chain) in the ack's transaction."""

from __future__ import annotations

from collections.abc import Sequence

from ..engines.base import Conn
from ..job import CHAIN_POLICY_KEY, LEGACY_CHAIN_POLICY_KEY, Job, dumps
from .effects import Effects


def mode_for(job: Job, state: str) -> str:
    """What a link ending in `state` does to its chain: ignore (carry on), hold or halt."""
    if state == "completed":
        return "ignore"
    meta = job.meta if isinstance(job.meta, dict) else {}
    # meta["chain"] only for links inserted by releases before 0.2, which had no key of their own.
    policy = meta[CHAIN_POLICY_KEY] if CHAIN_POLICY_KEY in meta else meta.get(LEGACY_CHAIN_POLICY_KEY)
    mode = policy.get(f"on_{state}", "ignore") if isinstance(policy, dict) else "ignore"
    return mode if mode in ("ignore", "hold", "halt") else "ignore"


async def advance(conn: Conn, links: Sequence[tuple[Job, str]], effects: Effects) -> None:
    """Act on chain links that just reached a terminal state."""
    release: set[str] = set()
    halt: dict[str, int] = {}
    for job, state in links:
        assert job.chain_key is not None
        mode = mode_for(job, state)
        if mode == "ignore":
            release.add(job.chain_key)
        elif mode == "halt":
            halt[job.chain_key] = min(halt.get(job.chain_key, job.id), job.id)
    keys = sorted(release | set(halt))
    if not keys:
        return
    await conn.execute("lock_keys", {"keys": [f"c:{k}" for k in keys]})
    if halt:
        await conn.execute(
            "chain_halt",
            {
                "rows": dumps([{"key": k, "after": after} for k, after in halt.items()]),
                "error": dumps(
                    {"error": "an earlier link of this chain failed and the chain halts", "traceback": None}
                ),
            },
        )
    if release:
        await release_next(conn, sorted(release), effects)


async def release_next(conn: Conn, keys: Sequence[str], effects: Effects) -> list[int]:
    """Release the oldest waiting link of each chain that nothing earlier blocks."""
    rows = await conn.fetch("chain_release", {"keys": list(keys)})
    for r in rows:
        effects.released_ids.append(r["id"])
        if r["state"] == "available":
            effects.released_queues.add(r["queue"])
    return [r["id"] for r in rows]
