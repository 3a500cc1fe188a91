"""Records and dispatches encoded with their job's request packed once decode to what ``codec.encode`` makes,
through a job's whole life, and a job's packed request is held only while it is active."""

from __future__ import annotations

import msgpack
from test_book import report, submit

from fluster.controller import state as st
from fluster.controller.packing import RequestBytes
from fluster.protocol.codec import decode, encode
from fluster.protocol.messages import JobRecord, JobState, RunJob


def same_as_codec(packing: RequestBytes, record: JobRecord) -> None:
    data = packing.record(record)
    assert decode(data, JobRecord) == decode(encode(record), JobRecord) == record


def test_a_job_encodes_as_the_codec_does_from_submit_to_its_end() -> None:
    packing = RequestBytes()
    record = submit("a", 1, 1, "1g")
    same_as_codec(packing, record)
    assert len(packing) == 0  # queued: nothing held
    record = st.assign(record, "w", "i", 2, host="h")
    same_as_codec(packing, record)
    assert len(packing) == 1
    run = RunJob(job_id="a", attempt=0, incarnation="i", request=record.request, task_hosts=["h"])
    assert decode(packing.dispatch(run), RunJob) == decode(encode(run), RunJob) == run
    for state in (JobState.RUNNING, JobState.SUCCEEDED):
        nxt = st.apply_update(record, report(record, state))
        assert nxt is not None
        record = nxt
        same_as_codec(packing, record)
    assert len(packing) == 0  # ended: its request is no longer held


def test_a_multi_task_job_and_a_forgotten_one() -> None:
    packing = RequestBytes()
    record = submit("g", 1, 1, "1g", replicas=3, coschedule=True)
    record = st.assign_gang(record, [(i, f"w{i}", "i", f"h{i}") for i in range(3)], 2)
    same_as_codec(packing, record)
    # a request that is not the one held (a re-submitted job) is packed afresh, not taken from the cache
    other = submit("g", 2, 2, "2g", replicas=3, coschedule=True)
    same_as_codec(packing, other)
    packing.forget("g")
    assert len(packing) == 0
    killed = st.finish(record, JobState.KILLED, 3, "killed")
    same_as_codec(packing, killed)
    assert len(packing) == 0


def test_fields_at_their_defaults_are_left_out_and_filled_in_again() -> None:
    record = submit("d", 1, 1, "1g")
    sent = msgpack.unpackb(encode(record))
    assert set(sent) == {"job_id", "token", "request", "submitted_at_ms", "seq"}
    assert "environment" not in sent["request"] and "error" not in sent
    assert len(RequestBytes().record(record)) == len(encode(record))
    # a record whose fields are all set (to other than their defaults) keeps them all
    ended = st.finish(st.assign(record, "w", "i", 2, host="h"), JobState.FAILED, 3, "it broke")
    assert {"attempts", "error", "finished_at_ms"} <= set(msgpack.unpackb(encode(ended)))
    assert decode(encode(ended), JobRecord) == ended
