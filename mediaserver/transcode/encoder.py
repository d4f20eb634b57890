"""One rung's encoder: scaled pictures in, FLV video tags out (the codec's sequence header first).

Every rung is encoded without B-frames (dts = pts, composition time 0) at the source's own timestamps in
ms, with a keyframe exactly where the caller says (the source's keyframes) and nowhere else but the
`max_keyframe_interval` limit: scene cut detection is off. Rate control is the rung's bit rate with a VBV
(max rate 1.2x, buffer 2x) so each rung stays near its rate whatever the picture does.

The sequence header comes from the encoder's global header (extradata): Annex B SPS/PPS (x264), VPS/SPS/PPS
(x265) or a sequence header OBU (SVT-AV1) turned into the avcC / hvcC / av1C record the FLV tag carries;
libvpx has none, so the vpcC record is built from the rung's size and rate. H.264 goes out as legacy FLV
(codec id 7), the others as Enhanced FLV (FourCC hvc1, av01, vp09).
"""

from __future__ import annotations

from fractions import Fraction

import av
from av.codec.context import Flags
from av.video.frame import PictureType

from ..errors import MediaError
from ..media import av1 as av1_media
from ..media import hevc as hevc_media
from ..media import vp9 as vp9_media
from ..media.flv_body import build_tag
from ..media.frames import FrameKind
from ..media.h264 import annexb_to_avcc, build_avc_config, iter_annexb_nal_units
from .ladder import Rendition

ENCODERS = {"h264": "libx264", "hevc": "libx265", "av1": "libsvtav1", "vp9": "libvpx-vp9"}
MAXRATE_FACTOR = 1.2
BUFSIZE_FACTOR = 2.0
TIME_BASE = Fraction(1, 1000)
SCALE_INTERPOLATION = "BILINEAR"
"""How pictures are scaled to a rung (swscale); FFMPEG_SCALE_FLAGS is the same for the ffmpeg comparison."""
FFMPEG_SCALE_FLAGS = "bilinear"

_FOURCC = {"hevc": b"hvc1", "av1": b"av01", "vp9": b"vp09"}
_EX_HEADER = 0x80
_EX_SEQUENCE_START = 0
_EX_CODED_FRAMES = 1
_EX_CODED_FRAMES_X = 3  # coded frames without the composition time (it is 0)
_KEY = 1
_INTER = 2

class EncoderError(MediaError):
    """A rung's encoder could not be opened or gave no usable sequence header."""


def encoder_options(rung: Rendition, keyint_frames: int) -> dict[str, str]:
    """The encoder's private and generic options for this rung (bit rate and size are set on the context)."""
    kbps = rung.video_kbps
    vbv = {"maxrate": f"{int(kbps * MAXRATE_FACTOR)}k", "bufsize": f"{int(kbps * BUFSIZE_FACTOR)}k"}
    if rung.codec == "h264":
        return {
            "preset": rung.preset, "forced-idr": "1", **vbv,
            # force-cfr: the SPS then signals the frame rate (ours, estimated) instead of the 1000 Hz clock.
            "x264-params": f"scenecut=0:bframes=0:keyint={keyint_frames}:min-keyint=1:force-cfr=1",
        }
    if rung.codec == "hevc":
        return {
            "preset": rung.preset, "forced-idr": "1", **vbv,
            "x265-params": f"scenecut=0:bframes=0:keyint={keyint_frames}:min-keyint=1:log-level=error",
        }
    if rung.codec == "av1":
        # Low-delay prediction (no reordering), which SVT-AV1 rate-controls in CBR mode only.
        return {
            "preset": rung.preset,
            "svtav1-params": f"pred-struct=1:rc=2:scd=0:keyint={keyint_frames}:lp={max(1, rung.threads)}",
        }
    if rung.codec == "vp9":
        return {
            "deadline": "realtime", "cpu-used": rung.preset, "lag-in-frames": "0", "row-mt": "1",
            "auto-alt-ref": "0", **vbv,
        }
    raise EncoderError(f"rung {rung.label}: codec {rung.codec!r} has no encoder; use h264, hevc, av1 or vp9")


def _config_record(codec: str, extradata: bytes | None, width: int, height: int, fps: float) -> bytes:
    if codec == "vp9":
        return vp9_media.build_vpcc(width, height, fps)
    if not extradata:
        raise EncoderError(f"the {ENCODERS[codec]} encoder gave no global header to build the {codec} sequence header from")
    if codec == "av1":
        return av1_media.build_av1_config(extradata)
    nals = [bytes(n) for n in iter_annexb_nal_units(extradata)]
    if codec == "h264":
        return build_avc_config([n for n in nals if n[0] & 0x1F == 7], [n for n in nals if n[0] & 0x1F == 8])
    by_type: dict[int, list[bytes]] = {}
    for nal in nals:
        by_type.setdefault(hevc_media.nal_type(nal), []).append(nal)
    return hevc_media.build_hevc_config(
        by_type.get(hevc_media.NAL_VPS, []), by_type.get(hevc_media.NAL_SPS, []), by_type.get(hevc_media.NAL_PPS, [])
    )


def video_body_header(codec: str, keyframe: bool, config: bool = False) -> bytes:
    """The FLV video tag body's header bytes before the payload."""
    frame_type = _KEY if keyframe or config else _INTER
    if codec == "h264":
        return bytes(((frame_type << 4) | 7, 0 if config else 1, 0, 0, 0))
    if config:
        packet_type = _EX_SEQUENCE_START
    elif codec == "hevc":
        packet_type = _EX_CODED_FRAMES_X
    else:
        packet_type = _EX_CODED_FRAMES
    return bytes((_EX_HEADER | (frame_type << 4) | packet_type,)) + _FOURCC[codec]


class RungEncoder:
    """Encodes one rung; `encode` returns complete FLV tags, the sequence header before the first frame."""

    def __init__(self, rung: Rendition, fps: Fraction, max_keyframe_interval_ms: int) -> None:
        self.rung = rung
        name = ENCODERS.get(rung.codec)
        if name is None:
            raise EncoderError(f"rung {rung.label}: codec {rung.codec!r} has no encoder; use h264, hevc, av1 or vp9")
        keyint = max(1, int(max_keyframe_interval_ms * float(fps) / 1000))
        ctx = av.CodecContext.create(name, "w")
        ctx.width = rung.width
        ctx.height = rung.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = TIME_BASE
        ctx.framerate = fps
        ctx.bit_rate = rung.video_kbps * 1000
        ctx.thread_count = rung.threads
        # PyAV defaults to slice threads, which make libx264 cut every picture into slices (more CPU, less
        # quality per bit); frame threads are what ffmpeg uses, at a frame or two more delay.
        ctx.thread_type = "FRAME"
        ctx.max_b_frames = 0
        ctx.gop_size = keyint
        ctx.flags |= Flags.global_header
        ctx.options = encoder_options(rung, keyint)
        try:
            ctx.open()
        except av.FFmpegError as exc:
            raise EncoderError(f"rung {rung.label}: {name} refused its settings: {exc}") from exc
        self._ctx = ctx
        self._codec = rung.codec
        self._config = _config_record(rung.codec, ctx.extradata, rung.width, rung.height, float(fps))
        self._config_sent = False
        self.frames_out = 0
        self.last_ms: int | None = None
        """The time of the last frame sent out (the audio released between rungs waits for it)."""

    def encode(self, frame: av.VideoFrame | None, keyframe: bool = False) -> list[tuple[int, bytes]]:
        """Encode one picture (None flushes the encoder at the end); the FLV tags ready so far, with their times."""
        if frame is not None:
            frame.pict_type = PictureType.I if keyframe else PictureType.NONE
        tags: list[tuple[int, bytes]] = []
        for packet in self._ctx.encode(frame):
            tags.extend(self._tags(packet))
        return tags

    def _tags(self, packet: av.Packet) -> list[tuple[int, bytes]]:
        pts = packet.pts
        if pts is None:
            return []
        data = bytes(packet)
        if self._codec in ("h264", "hevc"):
            data = annexb_to_avcc(data)
        elif self._codec == "av1":
            data = bytes(av1_media.strip_temporal_delimiter(memoryview(data)))
        if not data:
            return []
        out = []
        if not self._config_sent:
            out.append((pts, build_tag(FrameKind.VIDEO, pts, video_body_header(self._codec, True, config=True) + self._config)))
            self._config_sent = True
        out.append((pts, build_tag(FrameKind.VIDEO, pts, video_body_header(self._codec, packet.is_keyframe) + data)))
        self.frames_out += 1
        self.last_ms = pts
        return out
