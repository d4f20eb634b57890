"""on_relay_state: a relay's state change becomes a webhook call with the redacted URL and the reason."""

from __future__ import annotations

from mediaserver.config import WebhooksConfig
from mediaserver.edge.webhooks import WebhookClient


def test_a_relay_state_change_is_told_with_its_redacted_url_state_and_error():
    client = WebhookClient(WebhooksConfig(on_relay_state="http://hooks.example/relay"), {})
    assert client.wants("relay_state") and not WebhookClient(WebhooksConfig(), {}).wants("relay_state")
    sent = []
    client.tell = sent.append  # type: ignore[method-assign]
    client.relay_state({"id": "config-0", "stream": "live/cam", "url": "rtmp://a.example:1935/live2/***",
                        "source": "config", "state": "retrying", "error": "NetStream.Publish.BadName: taken",
                        "note": None, "bytes": 1234, "reconnects": 2, "bitrate_kbps": 0})
    (request,) = sent
    assert request.to_json() == {
        "event": "relay_state", "app": "live", "stream": "cam", "client_ip": "", "protocol": "", "params": {},
        "id": "config-0", "url": "rtmp://a.example:1935/live2/***", "source": "config", "state": "retrying",
        "error": "NetStream.Publish.BadName: taken", "bytes": 1234, "reconnects": 2,
    }
