"""fluster.bus.blobs: the fast object-store path stays compatible with the object store's own format."""

from __future__ import annotations

import os

import anyio
import pytest

from fluster.bus.blobs import (
    delete_blob,
    from_payload,
    get_blob,
    put_blob,
    to_payload,
)
from fluster.client.cluster import ClusterClient
from fluster.errors import ObjectLost


@pytest.mark.parametrize("size", [0, 1, 128 * 1024, 3 * 1024 * 1024 + 5])
async def test_blob_round_trip_and_nats_py_reads_it(client: ClusterClient, size: int) -> None:
    objects = client.assets.objects
    data = os.urandom(size)
    await put_blob(objects, "blobs/a", data)
    assert await get_blob(objects, "blobs/a") == data
    assert (await objects.get("blobs/a")).data == data  # nats-py's reader checks the digest too


async def test_replacing_a_blob_drops_the_old_chunks(client: ClusterClient) -> None:
    objects = client.assets.objects
    await put_blob(objects, "blobs/r", b"1" * 300_000)
    first = await objects.get_info("blobs/r")
    await put_blob(objects, "blobs/r", b"2" * 10)
    assert await get_blob(objects, "blobs/r") == b"2" * 10
    stream = f"OBJ_{client.subjects.object_bucket}"
    old_chunks = f"$O.{client.subjects.object_bucket}.C.{first.nuid}"
    info = await client.js.stream_info(stream, subjects_filter=old_chunks)
    assert not info.state.subjects


async def test_missing_and_deleted_blobs_raise_blob_not_found(client: ClusterClient) -> None:
    objects = client.assets.objects
    with pytest.raises(ObjectLost):
        await get_blob(objects, "blobs/none")
    await put_blob(objects, "blobs/d", b"x")
    await delete_blob(objects, "blobs/d")
    await delete_blob(objects, "blobs/d")  # twice is fine
    with pytest.raises(ObjectLost):
        await get_blob(objects, "blobs/d")


async def test_a_blob_deleted_while_it_is_read_raises_blob_not_found_soon(client: ClusterClient) -> None:
    objects = client.assets.objects
    await put_blob(objects, "blobs/v", b"v" * 300_000)

    class DeletedAfterLookup:  # the real store; the object is deleted between the lookup and the chunk read
        def __init__(self) -> None:
            self._name, self._js, self.first = objects._name, objects._js, True

        async def get_info(self, name: str) -> object:
            info = await objects.get_info(name)
            if self.first:
                self.first = False
                await delete_blob(objects, name)
            return info

    with anyio.fail_after(20):  # not the 60 s stall timeout
        with pytest.raises(ObjectLost, match="deleted while it was read"):
            await get_blob(DeletedAfterLookup(), "blobs/v")  # type: ignore[arg-type]


async def test_payloads_inline_small_values_and_store_large_ones(client: ClusterClient) -> None:
    objects = client.assets.objects
    small = await to_payload(objects, "blobs/p1", b"abc")
    assert small.inline == b"abc" and small.ref is None
    big_data = os.urandom(600_000)
    big = await to_payload(objects, "blobs/p2", big_data)
    assert big.inline is None and big.ref == "blobs/p2" and big.size == len(big_data)
    assert await from_payload(objects, big) == big_data
    assert await from_payload(objects, small) == b"abc"
