"""One keyframe decoded with PyAV, and a picture scaled and encoded as JPEG.

Synchronous and CPU-bound: callers run these in a thread (`asyncio.to_thread`), never on the event loop.
A keyframe is decoded alone, with the stream's sequence header as the decoder's extradata
(AVCDecoderConfigurationRecord, HEVCDecoderConfigurationRecord, AV1CodecConfigurationRecord; VP9 needs
none), in a fresh decoder with one thread: one picture, so thread start-up would cost more than it saves.

JPEG quality 1-100 is mapped onto the MJPEG encoder's quantiser scale 2-31 (what ffmpeg's `-q:v` sets),
pinned through qmin = qmax: 100 is 2, the finest; 1 is 31. Sizes are even (4:2:0 chroma) and keep the source's aspect ratio.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from ..errors import MediaError, MediaServerError
from ..media import h264
from ..media.frames import MAX_PICTURE_PIXELS, Frame

DECODERS: dict[str, str] = {"h264": "h264", "hevc": "hevc", "av1": "libdav1d", "vp9": "vp9"}
"""Video codec name -> the PyAV (ffmpeg) decoder used for it. ffmpeg's own "av1" decoder needs a
hardware accelerator, so AV1 goes through dav1d."""

MIN_WIDTH = 16
"""The narrowest thumbnail made; a smaller ?width= is refused."""


class ThumbnailError(MediaServerError):
    """A keyframe could not become a picture; `status` is its HTTP answer."""

    status = 422

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


class UnsupportedCodec(ThumbnailError):
    status = 415


class UndecodableKeyframe(ThumbnailError):
    status = 422


@dataclass(frozen=True, slots=True)
class Keyframe:
    """A video keyframe with what decoding it needs, copied out of the hub (a thread reads it)."""

    codec: str
    config: bytes | None
    """The sequence header's codec configuration record (extradata); None for codecs without one."""
    payload: bytes
    dts_ms: int

    @classmethod
    def of(cls, frame: Frame, config: Frame | None) -> Keyframe:
        return cls(frame.codec, bytes(config.payload) if config is not None else None, bytes(frame.payload),
                   frame.dts_ms)

    @property
    def tag(self) -> str:
        """A short identity of this keyframe (ETags): its decode time and a checksum of its bytes."""
        return f"{self.dts_ms:x}-{zlib.crc32(self.payload[:65536]) & 0xFFFFFFFF:08x}"


@dataclass(frozen=True, slots=True)
class Thumbnail:
    jpeg: bytes
    width: int
    height: int


def decode_keyframe(keyframe: Keyframe) -> av.VideoFrame:
    """The picture of `keyframe`. Raises UnsupportedCodec or UndecodableKeyframe."""
    name = DECODERS.get(keyframe.codec)
    if name is None:
        raise UnsupportedCodec(
            f"thumbnails cannot be made from {keyframe.codec} video",
            f"thumbnails are made from {', '.join(sorted(DECODERS))}; publish one of those",
        )
    if not keyframe.payload:  # an empty packet would be taken for the end of the stream
        raise UndecodableKeyframe(f"the newest {keyframe.codec} keyframe is empty",
                                  "the publisher sent an empty keyframe; try again after its next keyframe")
    size = _h264_size(keyframe)
    if size is not None and size[0] * size[1] > MAX_PICTURE_PIXELS:  # said by its SPS: not even decoded
        _too_large(keyframe.codec, *size)
    try:
        ctx = av.CodecContext.create(name, "r")
        if keyframe.config:
            ctx.extradata = keyframe.config
        ctx.thread_count = 1
        pictures = ctx.decode(av.Packet(keyframe.payload))
        pictures += ctx.decode(None)
    except (av.FFmpegError, ValueError) as err:
        raise UndecodableKeyframe(
            f"the newest {keyframe.codec} keyframe could not be decoded: {err}",
            "the publisher sent a damaged keyframe or codec configuration; try again after its next keyframe",
        ) from err
    if not pictures:
        raise UndecodableKeyframe(
            f"the newest {keyframe.codec} keyframe gave no picture",
            "the publisher's keyframe may need frames before it; try again after its next keyframe",
        )
    picture = pictures[0]
    if picture.width * picture.height > MAX_PICTURE_PIXELS:  # not kept: 16000x16000 would hold 384 MB
        _too_large(keyframe.codec, picture.width, picture.height)
    return picture


def _h264_size(keyframe: Keyframe) -> tuple[int, int] | None:
    """The picture size an H.264 keyframe's SPS declares (None: another codec, or no SPS that parses: the
    decoder then says what it finds)."""
    if keyframe.codec != "h264" or not keyframe.config:
        return None
    try:
        sps = h264.parse_sps(h264.parse_avc_config(keyframe.config).sps[0])
    except (MediaError, IndexError):
        return None
    return sps.width, sps.height


def _too_large(codec: str, width: int, height: int) -> None:
    raise UndecodableKeyframe(
        f"the newest {codec} keyframe is {width}x{height}, larger than any codec level allows "
        f"({MAX_PICTURE_PIXELS} pixels)",
        "publish at most 8K (8192x4320)",
    )


def even_size(source_width: int, source_height: int, width: int) -> tuple[int, int]:
    """(width, height) for a picture `width` wide with the source's aspect ratio, both even and >= 2."""
    w = max(2, width - width % 2)
    h = max(2, round(w * source_height / source_width / 2) * 2)
    return w, h


def thumbnail_width(source_width: int, asked: int | None, max_width: int) -> int:
    """The width served for a request: the asked width (or the source's), never wider than the source
    (no upscaling) nor than `max_width`."""
    return min(asked or source_width, source_width, max_width)


def qscale_for(quality: int) -> int:
    """JPEG quality 1-100 -> MJPEG qscale 31-2."""
    quality = min(100, max(1, quality))
    return round(2 + (100 - quality) * 29 / 99)


def encode_jpeg(picture: av.VideoFrame, width: int, height: int, quality: int) -> bytes:
    """`picture` scaled to width x height (bicubic) and encoded as a baseline JPEG."""
    scaled = picture.reformat(width=width, height=height, format="yuvj420p", interpolation="BICUBIC")
    enc = av.CodecContext.create("mjpeg", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuvj420p"
    enc.time_base = Fraction(1, 25)
    enc.qmin = enc.qmax = qscale_for(quality)  # a fixed quantiser: PyAV has no per-frame quality to set
    enc.thread_count = 1
    packets = enc.encode(scaled) + enc.encode(None)
    return b"".join(bytes(p) for p in packets)


def thumbnail_size(picture: av.VideoFrame, width: int | None, max_width: int) -> tuple[int, int]:
    """The size of the JPEG served for a request asking `width` (see thumbnail_width), aspect ratio kept."""
    return even_size(picture.width, picture.height, thumbnail_width(picture.width, width, max_width))


def render_thumbnail(picture: av.VideoFrame, width: int | None, max_width: int, quality: int) -> Thumbnail:
    """A JPEG of `picture`, `width` wide (see thumbnail_width), its aspect ratio kept."""
    w, h = thumbnail_size(picture, width, max_width)
    return Thumbnail(encode_jpeg(picture, w, h, quality), w, h)


def luma_plane(picture: av.VideoFrame, width: int = 160) -> np.ndarray:
    """The picture's luma scaled down to `width` (aspect kept), as a 2-D uint8 array of its own: enough for
    brightness and change measures at a small fraction of the full plane's cost."""
    w, h = even_size(picture.width, picture.height, min(width, picture.width))
    gray = picture.reformat(width=w, height=h, format="gray", interpolation="AREA")
    plane = gray.planes[0]
    rows = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, : plane.width].copy()
