"""Fuzz the parsers that read what peers send: N inputs per target, report the cases run and the crashes.

    python -m bench.fuzz                         # every target, 100,000 inputs each
    python -m bench.fuzz session amf0 --runs 2000000
    python -m bench.fuzz --list                  # the targets and the error each may raise
    python -m bench.fuzz --make-corpus           # regenerate tests/fuzz/corpus/ (runs ffmpeg)

Each target is a parser fed bytes a peer controls. It may raise its documented error (a PeerError
subclass, or 400 for HTTP); anything else is a crash, and so is an input that takes longer than
--slow-s (a hang) or exhausts the address-space limit of the worker (--max-mb: an unbounded allocation).
Crashes are de-duplicated by exception type and innermost project frame; the first input of each is
written to --crash-dir, and the exit status is 1 if there were any.

Engines: with atheris installed (`pip install -e '.[fuzz]'`) inputs are coverage-guided (libFuzzer,
corpus grown in .fuzz/<target>/); without it, or with --engine random, they are random mutations of the
seed corpus (tests/fuzz/corpus/<target>/). Each target runs in its own worker process, one at a time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import struct
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS_DIR = ROOT / "tests" / "fuzz" / "corpus"
WORK_DIR = ROOT / ".fuzz"


@dataclass(frozen=True, slots=True)
class Target:
    """One parser under fuzzing."""

    name: str
    run: Callable[[bytes], object]
    expected: tuple[type[BaseException], ...]
    """The errors the parser documents for bad input; anything else is a crash."""
    what: str


# ----- targets (built on demand, so atheris can instrument the project's modules as they import) -----


def build_targets() -> dict[str, Target]:
    from multidict import MultiDict
    from urllib.parse import parse_qsl

    from aiohttp import web

    from mediaserver.edge import cmaf as edge_cmaf
    from mediaserver.edge.fastlane import directive, parse_head
    from mediaserver.edge.flv_ingest import read_metadata
    from mediaserver.errors import MediaError, PeerError
    from mediaserver.media import aac, amf0, av1, flv_body, h264, hevc, opus
    from mediaserver.media.amf0 import Amf0Error
    from mediaserver.remux import llhls
    from mediaserver.remux.cmaf import parse_cmaf_name
    from mediaserver.remux.cmaf_window import CmafWindow
    from mediaserver.remux.flv import FlvReader
    from mediaserver.rtmp.chunk import ChunkDecoder
    from mediaserver.rtmp.errors import RtmpProtocolError
    from mediaserver.rtmp.events import PlayRequested, PublishRequested
    from mediaserver.rtmp.session import ServerSession

    handshake = b"\x03" + bytes(1536) * 2  # C0 C1 C2 of the simple handshake

    def steps(data: bytes) -> tuple[int, bytes]:
        """The first byte picks how the rest is cut into reads (1..256 bytes), as TCP would."""
        return (data[0] + 1, data[1:]) if data else (1, data)

    def chunk(data: bytes) -> None:
        step, data = steps(data)
        decoder = ChunkDecoder(max_message_size=1 << 20, max_pending_bytes=1 << 20)
        for i in range(0, len(data), step):
            decoder.feed(data[i : i + step])
            assert decoder.buffered_bytes <= (1 << 20) + 16 + len(data), "decoder holds more than its limits"

    def session(data: bytes) -> None:
        step, data = steps(data)
        server = ServerSession(random_bytes=lambda n: bytes(n), max_message_size=1 << 20)
        server.receive_data(handshake)
        server.data_to_send()
        for i in range(0, len(data), step):
            server.receive_data(data[i : i + step])
            for event in server.events():
                # Accept whatever is asked, so media, data and finishing paths are reached too.
                if isinstance(event, PublishRequested):
                    server.accept_publish(event.request_id)
                elif isinstance(event, PlayRequested):
                    server.accept_play(event.request_id)
                    server.send_media([(9, event.stream_id, 0, b"\x17\x01\x00\x00\x00")])
            server.data_to_send()
        server.connection_lost()

    def amf0_decode(data: bytes) -> None:
        values = amf0.decode_all(data)
        amf0.encode(*values)  # whatever decodes must encode again

    def flv_bodies(data: bytes) -> None:
        if not data:
            return
        body = data[1:]
        if data[0] % 3 == 0:
            flv_body.video_frame(body, 0)
        elif data[0] % 3 == 1:
            flv_body.audio_frame(body, 0)
        else:
            flv_body.data_frame(body, 0)

    def h264_parsers(data: bytes) -> None:
        for run in (
            lambda: [h264.parse_sps(s) for s in h264.parse_avc_config(data).sps],
            lambda: h264.parse_sps(data),
            lambda: h264.avcc_to_annexb(data, 4),
            lambda: h264.annexb_to_avcc(data, 4),
        ):
            try:
                run()
            except MediaError:
                pass

    def hevc_parsers(data: bytes) -> None:
        for run in (
            lambda: [hevc.parse_hevc_sps(s) for s in hevc.parse_hevc_config(data).sps],
            lambda: hevc.parse_hevc_sps(data),
        ):
            try:
                run()
            except MediaError:
                pass

    def av1_parsers(data: bytes) -> None:
        for run in (
            lambda: av1.sequence_header_of(av1.parse_av1_config(data)),
            lambda: list(av1.iter_obus(data)),
            lambda: av1.parse_sequence_header_obu(data),
        ):
            try:
                run()
            except MediaError:
                pass

    def aac_parsers(data: bytes) -> None:
        for run in (
            lambda: aac.parse_audio_specific_config(data).codec_string,
            lambda: aac.parse_adts_header(data),
        ):
            try:
                run()
            except MediaError:
                pass

    def opus_parsers(data: bytes) -> None:
        for run in (lambda: opus.parse_opus_head(data).dops, lambda: opus.packet_samples(data)):
            try:
                run()
            except MediaError:
                pass

    def flv_reader(data: bytes) -> None:
        step, data = steps(data)
        reader = FlvReader(max_tag_size=1 << 20)
        for i in range(0, len(data), step):
            for tag in reader.feed(data[i : i + step]):
                if tag.kind == 18:
                    read_metadata(tag.body)  # documented never to raise
                try:
                    tag.to_frame()
                except MediaError:
                    pass
        reader.feed_eof()

    class _Request:
        """What edge/cmaf reads of an aiohttp request: its query, headers (CORS) and the app's config."""

        def __init__(self, query: MultiDict) -> None:
            from mediaserver.config import Config
            from mediaserver.edge.keys import CONFIG

            self.query = query
            self.headers: dict[str, str] = {}
            self.app = {CONFIG: Config()}

    window = CmafWindow()

    def llhls_query(data: bytes) -> None:
        query, _, file = data.decode("utf-8", "replace").partition("\n")
        request = _Request(MultiDict(parse_qsl(query, keep_blank_values=True)))
        msn = edge_cmaf._directive(request, "_HLS_msn")
        part = edge_cmaf._directive(request, "_HLS_part")
        llhls.playlist_request(window, "video", msn, part)
        parse_cmaf_name(file)

    def http_head(data: bytes) -> None:
        head = parse_head(data)  # documented never to raise: None leaves the request to aiohttp
        if head is not None:
            directive(head.query, "_HLS_msn")
            directive(head.query, "_HLS_part")

    targets = [
        Target("chunk", chunk, (RtmpProtocolError,), "RTMP chunk decoder (rtmp/chunk.py)"),
        Target("session", session, (PeerError,), "RTMP ServerSession after a handshake (rtmp/session.py)"),
        Target("amf0", amf0_decode, (Amf0Error,), "AMF0 decode, then encode (media/amf0.py)"),
        Target("flv_body", flv_bodies, (MediaError,), "FLV tag bodies to frames (media/flv_body.py)"),
        Target("h264", h264_parsers, (MediaError,), "avcC, SPS, AVCC/Annex B (media/h264.py)"),
        Target("hevc", hevc_parsers, (MediaError,), "hvcC and SPS (media/hevc.py)"),
        Target("av1", av1_parsers, (MediaError,), "av1C, OBUs, sequence header (media/av1.py)"),
        Target("aac", aac_parsers, (MediaError,), "AudioSpecificConfig and ADTS header (media/aac.py)"),
        Target("opus", opus_parsers, (MediaError,), "OpusHead and packet TOC (media/opus.py)"),
        Target("flv_reader", flv_reader, (MediaError,), "FLV stream reader of origin pulls (remux/flv.py)"),
        Target("llhls_query", llhls_query, (web.HTTPException,), "_HLS_msn/_HLS_part and CMAF file names"),
        Target("http_head", http_head, (), "request heads the fast lane reads (edge/fastlane.py parse_head)"),
    ]
    return {t.name: t for t in targets}


TARGET_NAMES = (
    "chunk", "session", "amf0", "flv_body", "h264", "hevc", "av1", "aac", "opus", "flv_reader", "llhls_query",
    "http_head",
)  # fmt: skip


# ----- crash bookkeeping and the mutation engine (shared with tests/fuzz) -----------------------------


class Hang(Exception):
    """An input took longer than the slow-input limit."""


@dataclass(slots=True)
class Crash:
    signature: str
    error: str
    trace: str
    data: bytes
    count: int = 1


def crash_signature(err: BaseException) -> str:
    """Exception type plus the innermost frame inside the project: one signature per distinct bug."""
    frames = traceback.extract_tb(err.__traceback__)
    inner = next((f for f in reversed(frames) if "mediaserver" in f.filename), frames[-1] if frames else None)
    where = f"{Path(inner.filename).name}:{inner.lineno}" if inner else "?"
    return f"{type(err).__name__}@{where}"


class Runner:
    """Runs one target's inputs, counting them and keeping the first input of each distinct crash."""

    def __init__(self, target: Target, slow_s: float = 2.0) -> None:
        self.target = target
        self.slow_s = slow_s
        self.runs = 0
        self.crashes: dict[str, Crash] = {}

    def __call__(self, data: bytes) -> None:
        self.runs += 1
        started = time.perf_counter()
        try:
            self.target.run(data)
        except self.target.expected:
            pass
        except (Exception, RecursionError, MemoryError) as err:  # everything else is a crash
            self._record(crash_signature(err), f"{type(err).__name__}: {err}"[:300], traceback.format_exc(), data)
        elapsed = time.perf_counter() - started
        if elapsed > self.slow_s:
            self._record(f"Hang@{self.target.name}", f"input took {elapsed:.2f} s", "", data)

    def _record(self, signature: str, error: str, trace: str, data: bytes) -> None:
        crash = self.crashes.get(signature)
        if crash is None:
            self.crashes[signature] = Crash(signature, error, trace, bytes(data))
        else:
            crash.count += 1
            if len(data) < len(crash.data):
                crash.data = bytes(data)  # keep the smallest input for the regression corpus


_INTERESTING = (0, 1, 2, 3, 4, 7, 8, 0x0F, 0x10, 0x3F, 0x40, 0x7F, 0x80, 0xFE, 0xFF)
_INTERESTING32 = (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x10000, 0xFFFFFF, 0x7FFFFFFF, 0xFFFFFFFF)
_TOKENS = (b"\xc2\xb2", b"\xd9\xa1", b"\xef\xbc\x91", b"%", b"&", b"=", b"\n", b"-", b"+", b" ", b"\x00", b"\xff")
"""Text pieces that trip string parsers: non-ASCII digits (superscript two, Arabic-Indic one, fullwidth one)."""


def mutate(data: bytes, rng: random.Random, pool: list[bytes], max_len: int = 16384) -> bytes:
    """One to four random edits: bit flips, interesting bytes and lengths, insertions, deletions,
    duplications and splices with another seed."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        n = len(out)
        op = rng.randrange(10)
        if op == 0 and n:
            out[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            out[rng.randrange(n)] = rng.choice(_INTERESTING)
        elif op == 2 and n >= 4:
            i = rng.randrange(n - 3)
            value = rng.choice(_INTERESTING32) + rng.randint(-2, 2)
            out[i : i + 4] = struct.pack(rng.choice((">I", "<I")), value & 0xFFFFFFFF)
        elif op == 3 and n >= 2:
            i = rng.randrange(n - 1)
            out[i : i + 2] = struct.pack(">H", rng.choice(_INTERESTING32) & 0xFFFF)
        elif op == 4:
            i = rng.randint(0, n)
            out[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 5 and n:
            i = rng.randrange(n)
            del out[i : i + rng.randint(1, max(1, n // 4))]
        elif op == 6 and n:
            i = rng.randrange(n)
            piece = out[i : i + rng.randint(1, 64)]
            j = rng.randint(0, n)
            out[j:j] = piece * rng.randint(1, 8)
        elif op == 7 and pool:
            other = rng.choice(pool)
            if other:
                i, j = rng.randint(0, n), rng.randrange(len(other))
                out[i:] = other[j:]
        elif op == 8 and n:
            del out[rng.randint(0, n - 1) :]  # truncate
        elif op == 9:
            i = rng.randint(0, n)
            out[i:i] = rng.choice(_TOKENS)
    return bytes(out[:max_len])


def load_corpus(target: str) -> list[bytes]:
    directory = CORPUS_DIR / target
    if not directory.is_dir():
        return []
    return [p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()]


def random_inputs(seeds: list[bytes], count: int, seed: int, max_len: int = 16384):
    """The seeds themselves, then `count` mutations of them (and a little pure noise)."""
    rng = random.Random(seed)
    yield from seeds
    pool = seeds or [b""]
    for i in range(count):
        if i % 50 == 0:
            yield rng.randbytes(rng.randint(0, 512))
        else:
            yield mutate(rng.choice(pool), rng, pool, max_len)


# ----- worker (one target, in its own process) --------------------------------------------------------


def _write_summary(path: Path, runner: Runner, engine: str, started: float) -> None:
    summary = {
        "target": runner.target.name,
        "engine": engine,
        "runs": runner.runs,
        "seconds": round(time.monotonic() - started, 1),
        "crashes": [
            {"signature": c.signature, "error": c.error, "count": c.count, "trace": c.trace, "input": c.data.hex()}
            for c in runner.crashes.values()
        ],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary))
    tmp.replace(path)


def worker(args: argparse.Namespace) -> None:
    import resource

    limit = args.max_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.setrecursionlimit(5000)
    name = args.targets[0]
    summary_path = Path(args.summary)
    started = time.monotonic()
    engine = args.engine
    if engine in ("auto", "atheris"):
        try:
            import atheris
        except ImportError:
            if engine == "atheris":
                raise SystemExit("atheris is not installed: pip install -e '.[fuzz]' (or use --engine random)")
            engine = "random"
        else:
            engine = "atheris"
    if engine == "atheris":
        with atheris.instrument_imports(include=["mediaserver"]):
            targets = build_targets()
    else:
        targets = build_targets()
    runner = Runner(targets[name], args.slow_s)

    if engine == "random":
        for i, data in enumerate(random_inputs(load_corpus(name), args.runs, args.seed, args.max_len)):
            runner(data)
            if i % 20000 == 0:
                _write_summary(summary_path, runner, engine, started)
        _write_summary(summary_path, runner, engine, started)
        return

    grown = WORK_DIR / name
    grown.mkdir(parents=True, exist_ok=True)

    def one_input(data: bytes) -> None:
        runner(data)
        if runner.runs % 20000 == 0:
            _write_summary(summary_path, runner, engine, started)

    import atexit

    atexit.register(lambda: _write_summary(summary_path, runner, engine, started))
    fuzz_args = [
        sys.argv[0], f"-runs={args.runs}", f"-max_len={args.max_len}", f"-seed={args.seed or 1}",
        "-timeout=30", "-print_final_stats=1", str(grown), str(CORPUS_DIR / name),
    ]  # fmt: skip
    dictionary = CORPUS_DIR.parent / f"{name}.dict"
    if dictionary.exists():
        fuzz_args.insert(1, f"-dict={dictionary}")  # libFuzzer tokens: text pieces coverage alone rarely finds
    atheris.Setup(fuzz_args, one_input)
    atheris.Fuzz()


# ----- driver ---------------------------------------------------------------------------------------


def run_target(name: str, args: argparse.Namespace) -> dict:
    summary = WORK_DIR / f"{name}.summary.json"
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "bench.fuzz", name, "--worker", "--runs", str(args.runs), "--engine", args.engine,
        "--seed", str(args.seed), "--max-len", str(args.max_len), "--slow-s", str(args.slow_s),
        "--max-mb", str(args.max_mb), "--summary", str(summary),
    ]  # fmt: skip
    log = WORK_DIR / f"{name}.log"
    with open(log, "wb") as out:
        code = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode
    result = json.loads(summary.read_text()) if summary.exists() else {"target": name, "runs": 0, "crashes": []}
    result["exit"] = code
    if code not in (0,) and not result["crashes"]:
        # The worker died outside the Python-level checks (e.g. libFuzzer's timeout or out of memory).
        tail = log.read_text(errors="replace")[-2000:]
        crash = {"signature": f"worker-exit-{code}", "error": tail, "count": 1, "trace": "", "input": ""}
        result["crashes"].append(crash)
    return result


def save_crashes(result: dict, crash_dir: Path) -> None:
    for crash in result["crashes"]:
        if not crash["input"]:
            continue
        data = bytes.fromhex(crash["input"])
        target_dir = crash_dir / result["target"]
        target_dir.mkdir(parents=True, exist_ok=True)
        (target_dir / f"crash-{hashlib.sha1(data).hexdigest()[:12]}").write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("targets", nargs="*", help=f"targets (default: all): {', '.join(TARGET_NAMES)}")
    parser.add_argument("--runs", type=int, default=100_000, help="inputs per target (default 100000)")
    parser.add_argument("--engine", choices=("auto", "atheris", "random"), default="auto")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-len", type=int, default=16384, help="largest input in bytes")
    parser.add_argument("--slow-s", type=float, default=2.0, help="an input slower than this is a hang")
    parser.add_argument("--max-mb", type=int, default=2048, help="address space of a worker (MiB)")
    parser.add_argument("--crash-dir", type=Path, default=WORK_DIR / "crashes")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--make-corpus", action="store_true", help="regenerate the seed corpus with ffmpeg")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--summary", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.list:
        for target in build_targets().values():
            errors = ", ".join(e.__name__ for e in target.expected) or "errors caught inside the target"
            print(f"{target.name:12} {target.what}; may raise {errors}")
        return 0
    if args.make_corpus:
        from bench._fuzz_corpus import make_corpus

        make_corpus(CORPUS_DIR)
        return 0
    unknown = [t for t in args.targets if t not in TARGET_NAMES]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGET_NAMES)}")
    if args.worker:
        worker(args)
        return 0

    total_runs = total_crashes = 0
    print(f"{'target':12} {'engine':8} {'runs':>10} {'seconds':>8} {'runs/s':>8} crashes")
    for name in args.targets or TARGET_NAMES:
        result = run_target(name, args)
        save_crashes(result, args.crash_dir)
        runs, seconds = result["runs"], result.get("seconds", 0) or 0
        total_runs += runs
        total_crashes += len(result["crashes"])
        rate = runs / seconds if seconds else 0
        engine = result.get("engine", "?")
        print(f"{name:12} {engine:8} {runs:>10} {seconds:>8} {rate:>8.0f} {len(result['crashes'])}", flush=True)
        for crash in result["crashes"]:
            print(f"    {crash['signature']} x{crash['count']}: {crash['error'][:200]}")
    where = f" (inputs in {args.crash_dir})" if total_crashes else ""
    print(f"total: {total_runs} inputs, {total_crashes} distinct crashes{where}")
    return 1 if total_crashes else 0


if __name__ == "__main__":
    raise SystemExit(main())
