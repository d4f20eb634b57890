"""mediaserver: a live-streaming server. RTMP in; HTTP-FLV and HLS out."""

__version__ = "0.1.0"
