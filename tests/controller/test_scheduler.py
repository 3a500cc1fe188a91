from fluster.controller.scheduler import JobDemand, WorkerSupply, find_assignments, fits

G = 1 << 30


def job(job_id: str, cpu: float = 1, memory: int = G, **kw: object) -> JobDemand:
    return JobDemand(job_id=job_id, cpu=cpu, memory=memory, **kw)  # type: ignore[arg-type]


def worker(worker_id: str, cpu: float = 4, memory: int = 16 * G, **kw: object) -> WorkerSupply:
    return WorkerSupply(worker_id=worker_id, cpu=cpu, memory=memory, **kw)  # type: ignore[arg-type]


def test_worker_can_fit_job_cpu_constraint() -> None:
    assert fits(job("a", cpu=4), worker("w", cpu=4))
    assert not fits(job("a", cpu=5), worker("w", cpu=4))
    assert not fits(job("a", cpu=2), worker("w", cpu=4, used_cpu=3))


def test_worker_can_fit_job_memory_constraint() -> None:
    assert not fits(job("a", memory=17 * G), worker("w"))
    assert not fits(job("a", memory=2 * G), worker("w", used_memory=15 * G))


def test_worker_can_fit_job_device_type_mismatch() -> None:
    assert not fits(job("a", device_type="gpu", count=1), worker("w"))
    assert not fits(job("a"), worker("w", device_type="gpu", variant="A100", count=8))


def test_worker_can_fit_job_gpu_variant_match_and_auto() -> None:
    gpu_worker = worker("w", device_type="gpu", variant="A100", count=8)
    assert fits(job("a", device_type="gpu", variant="A100", count=2), gpu_worker)
    assert not fits(job("a", device_type="gpu", variant="H100", count=2), gpu_worker)
    assert fits(job("a", device_type="gpu", variant=None, count=2), gpu_worker)


def test_worker_can_fit_job_gpu_count() -> None:
    gpu_worker = worker("w", device_type="gpu", variant="A100", count=2, used_count=1)
    assert fits(job("a", device_type="gpu", count=1), gpu_worker)
    assert not fits(job("a", device_type="gpu", count=2), gpu_worker)


def test_scheduler_skips_jobs_that_dont_fit() -> None:
    result = find_assignments([job("big", cpu=100), job("small")], [worker("w")], now_ms=0)
    assert result.assignments == [("small", "w")]
    assert result.timed_out == []


def test_scheduler_big_job_skipped_while_small_runs() -> None:
    busy = worker("w", used_cpu=3)
    result = find_assignments([job("big", cpu=4), job("small", cpu=1)], [busy], now_ms=0)
    assert result.assignments == [("small", "w")]


def test_scheduler_marks_job_unschedulable_on_timeout() -> None:
    pending = [
        job("a", cpu=100, queued_at_ms=0, timeout_ms=1000),
        job("b", cpu=100, queued_at_ms=0, timeout_ms=5000),
    ]
    result = find_assignments(pending, [worker("w")], now_ms=1500)
    assert result.timed_out == ["a"]
    assert result.assignments == []


def test_scheduler_timeout_zero_or_none_never_expires() -> None:
    pending = [job("a", cpu=100, timeout_ms=0), job("b", cpu=100, timeout_ms=None)]
    result = find_assignments(pending, [worker("w")], now_ms=10**12)
    assert result.timed_out == []


def test_scheduler_fifo_ordering_preserved() -> None:
    result = find_assignments([job(f"j{i}") for i in range(4)], [worker("w", cpu=2), worker("v", cpu=2)], now_ms=0)
    assert [a[0] for a in result.assignments] == ["j0", "j1", "j2", "j3"]


def test_scheduler_commits_resources_within_a_pass() -> None:
    w = worker("w", cpu=4)
    result = find_assignments([job(f"j{i}", cpu=2) for i in range(3)], [w], now_ms=0)
    assert [a[0] for a in result.assignments] == ["j0", "j1"]
    assert w.used_cpu == 4


def test_scheduler_never_over_commits() -> None:
    workers = [worker(f"w{i}", cpu=3, memory=3 * G) for i in range(3)]
    result = find_assignments([job(f"j{i}", cpu=1, memory=G) for i in range(20)], workers, now_ms=0)
    assert len(result.assignments) == 9
    for w in workers:
        assert w.used_cpu <= w.cpu and w.used_memory <= w.memory


def test_scheduler_counts_running_jobs_and_skips_unhealthy_workers() -> None:
    result = find_assignments(
        [job("a", cpu=2)],
        [worker("sick", healthy=False), worker("full", cpu=2, used_cpu=1), worker("ok", cpu=2)],
        now_ms=0,
    )
    assert result.assignments == [("a", "ok")]


def test_scheduler_honours_max_concurrent_jobs() -> None:
    result = find_assignments([job(f"j{i}", cpu=0) for i in range(5)], [worker("w", slots=2)], now_ms=0)
    assert len(result.assignments) == 2


def test_scheduler_with_no_workers_assigns_nothing() -> None:
    assert find_assignments([job("a")], [], now_ms=0).assignments == []
