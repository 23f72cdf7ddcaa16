"""What the parts of a node (producers, the acker, the leader loop) may use of the `Node` that
owns them. They depend on this protocol, so `node.py` imports them and none imports it back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..engines.base import Engine
    from ..host import Host
    from ..store.jobs import Ack
    from .executor import Executor


class AckSink(Protocol):
    """Where a finished attempt's outcome goes (the node's group-commit acker)."""

    def push(self, ack: Ack) -> None: ...


class NodeParts(Protocol):
    """The node as its parts see it."""

    @property
    def app(self) -> Host: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def name(self) -> str: ...

    @property
    def instance(self) -> str: ...

    @property
    def executor(self) -> Executor: ...

    @property
    def acker(self) -> AckSink: ...

    async def flush_acks(self, batch: list[Ack]) -> None:
        """Write a batch of acks in one transaction and act on its effects."""
        ...
