"""When a forming batch stops waiting (private to ``pipelines/serve.py``): only for requests known to be coming.

``@serve.batch`` alone holds every batch open for ``batch_wait_timeout_s`` unless it fills up, so at concurrency 1
each request waited the whole timeout for batch-mates that never came (20 ms with ``conf/serve/tiny.yaml``). Here
the replica counts the requests it is still preparing (decoding, marking, tokenizing) and the batches it is
generating. A forming batch goes at once when the replica is otherwise idle (nothing being prepared, no batch in the
engine): a lone request never waits. Otherwise it waits as before (up to the timeout or a full batch), so under
load the requests that arrive while a batch generates still go together and the batching gain stays.

The rule rides on ``@serve.batch``'s ``batch_size_fn`` (the only early exit of its wait loop is "batch full"):
:func:`batch_size` reports a batch as full when the replica is otherwise idle. Serve's ``serve_batch_size``
metric therefore shows ``max_batch_size`` for such batches; the true size is in every response (``batch_size``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class BatchGate:
    """Mutable state of one replica's batching, read by :func:`batch_size` (one event loop: no locking).

    Attributes:
        max_batch_size: the replica's current ``max_batch_size`` (from ``user_config``).
        preparing: requests between arrival and the batch queue (being decoded in worker threads).
        running: batches inside the engine (generating) now.
    """

    max_batch_size: int = 8
    preparing: int = 0
    running: int = 0

    @property
    def idle(self) -> bool:
        """Nothing is being prepared and no batch is generating: no batch-mate is on its way."""
        return self.preparing == 0 and self.running == 0


@dataclass(frozen=True)
class Ticket:
    """One prepared request on its way into a batch, with the gate of the replica it belongs to."""

    prepared: Any  # a PreparedRequest
    gate: BatchGate


def batch_size(tickets: list[Ticket]) -> int:
    """``batch_size_fn`` of the replica's ``@serve.batch``: the number of tickets, or ``max_batch_size`` (so the
    batch goes now) when the replica is otherwise idle (:attr:`BatchGate.idle`)."""
    n = len(tickets)
    gate = tickets[0].gate
    return max(n, gate.max_batch_size) if gate.idle else n
