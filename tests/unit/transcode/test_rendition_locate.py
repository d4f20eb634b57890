"""The gate's rendition_locate as the composition root builds it: the pool's refusal becomes a gate
Refusal of kind "abr" with its status; on a node that pulls for its viewers the source is pulled first."""

from __future__ import annotations

from mediaserver.wiring.cluster import rendition_locate
from mediaserver.gate import ABR, LIMIT, Refusal
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import StreamKey
from mediaserver.transcode.service import AbrRefusal


class FakePool:
    def __init__(self, answer) -> None:
        self.answer = answer
        self.asked: list[StreamKey] = []

    async def locate(self, key: StreamKey):
        self.asked.append(key)
        return self.answer


class FakeCluster:
    role = "edge"

    def __init__(self, answer) -> None:
        self.answer = answer
        self.asked: list[StreamKey] = []

    async def locate(self, key: StreamKey, address: str):
        self.asked.append(key)
        return self.answer


async def test_a_pool_refusal_keeps_its_status():
    pool = FakePool(AbrRefusal(415, "undecodable", "cannot decode", "publish H.264"))
    locate = rendition_locate(pool, StreamRegistry(), None)
    refusal = await locate(StreamKey("live", "demo@360p"), "10.0.0.1")
    assert refusal == Refusal(ABR, "undecodable", "cannot decode", "publish H.264", status=415)
    assert pool.asked == [StreamKey("live", "demo@360p")]


async def test_an_edge_pulls_the_source_before_transcoding_it():
    registry = StreamRegistry()
    pool = FakePool("the rendition stream")
    cluster = FakeCluster("the pulled source")
    locate = rendition_locate(pool, registry, cluster)
    assert await locate(StreamKey("live", "demo@360p"), "10.0.0.1") == "the rendition stream"
    assert cluster.asked == [StreamKey("live", "demo")]
    cluster.answer = None  # published nowhere: not found, and no transcode starts
    assert await locate(StreamKey("live", "gone@360p"), "10.0.0.1") is None
    cluster.answer = Refusal(LIMIT, "max_pulls", "too many pulls")
    assert (await locate(StreamKey("live", "busy@360p"), "10.0.0.1")).kind == LIMIT
    assert pool.asked == [StreamKey("live", "demo@360p")]
