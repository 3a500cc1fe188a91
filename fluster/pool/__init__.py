"""Tasks on a pool of warm executor jobs: ``WorkerPool(client, WorkerPoolConfig(...))``, ``submit`` → future.

See ``docs/tasks.md``.
"""

from fluster.errors import TaskLost
from fluster.pool.config import PoolStatus, WorkerPoolConfig
from fluster.pool.future import TaskFuture
from fluster.pool.pool import WorkerPool
from fluster.pool.sync import SyncWorkerPool

__all__ = ["PoolStatus", "SyncWorkerPool", "TaskFuture", "TaskLost", "WorkerPool", "WorkerPoolConfig"]
