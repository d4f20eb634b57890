"""RecordingManager in a cluster: a node records the streams it owns, never the copies it pulls from
another node (record.mode = "all" on an edge or a transcoder), and refuses to delete a recording whose
file lies on another node's disk (the row would go, the file would stay)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from mediaserver.config import RecordConfig
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import StreamKey
from mediaserver.record.catalog import Recording
from mediaserver.record.manager import ElsewhereError, NotRecordable, RecordingManager


class Publisher:
    def __init__(self, peer: str) -> None:
        self.peer = peer

    def close(self, reason: str) -> None:
        pass


class Pull(Publisher):
    """Stands for an edge's OriginPull: a copy of another node's stream."""


@pytest.fixture
async def manager(tmp_path):
    registry = StreamRegistry()
    manager = await RecordingManager.open(registry, RecordConfig(mode="all", path=str(tmp_path / "rec")), "edge-1",
                                          relay=lambda stream: isinstance(stream.publisher, Pull))
    yield manager
    await manager.close()


async def test_mode_all_records_the_streams_published_here_and_not_those_pulled_from_another_node(manager):
    own, pulled = StreamKey("live", "own"), StreamKey("live", "pulled")
    manager.registry.claim_publisher(own, Publisher("127.0.0.1:5000"))
    manager.registry.claim_publisher(pulled, Pull("pull:http://origin-1:8080"))
    assert set(manager.active) == {own}
    with pytest.raises(NotRecordable) as refused:  # an operator asking on the edge is sent to the origin
        manager.start(pulled)
    assert refused.value.status == 409 and "scope=cluster" in refused.value.hint


async def test_a_recording_on_another_nodes_disk_is_deleted_there_not_here(manager):
    theirs = Recording.start("live", "cam", "origin-1", "/srv/rec/live/cam/1.mp4",
                             datetime(2026, 1, 1, tzinfo=timezone.utc), status="complete")
    await manager.catalog.add(theirs)
    with pytest.raises(ElsewhereError) as elsewhere:
        await manager.delete(theirs.id)
    assert elsewhere.value.node == "origin-1"
    assert await manager.catalog.get(theirs.id) is not None  # the row stays with its file
