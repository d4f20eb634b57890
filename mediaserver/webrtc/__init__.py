"""WebRTC: WHEP playback and WHIP ingest bridged to the hub (aiortc: ICE, DTLS, SRTP)."""
