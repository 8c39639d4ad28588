"""One bad request fails only itself: when a step raises, find the requests that cause it.

The step is retried on halves of the batch, recursively, so a fault that one
sequence brings fails that sequence alone (about 2 log2(n) extra runner calls),
and every other sequence's results are those of a step that did not include it.
Re-running a part recomputes the same KV into the same slots, so a failed attempt
leaves nothing wrong behind.
"""

from __future__ import annotations

from tether.engine.runner import Runner
from tether.engine.sampler import SampleResult
from tether.engine.scheduler import ScheduledBatch
from tether.engine.sequence import Sequence


def execute_isolating(runner: Runner, batch: ScheduledBatch
                      ) -> tuple[ScheduledBatch, list[SampleResult | None], list[tuple[Sequence, Exception]]]:
    """Run ``batch``; returns the part that ran, its results, and each failing sequence with its error.

    Example::

        ran, results, failed = execute_isolating(runner, batch)
    """
    try:
        return batch, runner.execute(batch), []
    except Exception as e:
        if len(batch.seqs) == 1:
            return ScheduledBatch(), [], [(batch.seqs[0], e)]
    mid = len(batch.seqs) // 2
    ran, results, failed = ScheduledBatch(), [], []
    for part in (slice(0, mid), slice(mid, None)):
        sub = ScheduledBatch(batch.seqs[part], batch.num_new_tokens[part])
        r, res, f = execute_isolating(runner, sub)
        ran.seqs += r.seqs
        ran.num_new_tokens += r.num_new_tokens
        results += res
        failed += f
    return ran, results, failed
