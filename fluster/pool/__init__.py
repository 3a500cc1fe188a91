"""Tasks on a pool of warm executor jobs: ``WorkerPool(client, WorkerPoolConfig(...))``, ``submit`` → future.

See ``docs/tasks.md``.
"""

from fluster.errors import TaskLost
from fluster.pool.blocking import BlockingWorkerPool
from fluster.pool.config import PoolStatus, WorkerPoolConfig
from fluster.pool.future import TaskFuture
from fluster.pool.pool import WorkerPool

__all__ = ["PoolStatus", "BlockingWorkerPool", "TaskFuture", "TaskLost", "WorkerPool", "WorkerPoolConfig"]
