"""Adaptive bitrate and the media pipeline: the rendition ladder (pure), transcoder worker processes (PyAV),
the asyncio side that feeds them and publishes their renditions into the hub, thumbnails and stream health.

Nothing here decodes or encodes on the event loop: codec work runs in worker processes (transcodes) or in
a thread (one keyframe for a thumbnail or a health sample).
"""
