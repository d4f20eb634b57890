"""Relays: pushing a live stream to other RTMP/RTMPS servers (restreaming)."""
