"""Which finished jobs the controller forgets: the rule is pure, the controller applies it (``_forget_loop``).

A job is forgotten once it has been finished for longer than the retention, and so have all of its
descendants still known (a parent that is still running, or a child still within its retention, keeps its
family: ``children`` and kill cascades look jobs up by parent). Forgetting removes the job's record from the
controller's memory and the ``jobs`` bucket, and its entrypoint and result from the object store; its log
lines age out of the logs stream on their own.
"""

from __future__ import annotations

from collections.abc import Mapping

from fluster.protocol.messages import JobRecord


def expired(
    jobs: Mapping[str, JobRecord], children: Mapping[str, set[str]], now_ms: int, retention_s: float
) -> list[str]:
    """The ids of jobs finished more than ``retention_s`` ago whose known descendants are all expired too."""
    cutoff = now_ms - int(retention_s * 1000)

    def old(job_id: str) -> bool:
        record = jobs.get(job_id)
        if record is None:
            return True
        finished = record.finished_at_ms
        return record.state.is_terminal and finished is not None and finished <= cutoff

    def family_old(job_id: str) -> bool:
        return old(job_id) and all(family_old(child) for child in children.get(job_id, ()))

    return [job_id for job_id in jobs if family_old(job_id)]
