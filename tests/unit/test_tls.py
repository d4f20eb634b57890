"""Listener certificates: loaded at start with a clear error naming the bad file, reloaded in place (the
same SSLContext, so live sessions carry on), a bad renewal keeping the old chain; TLS handshake failures
counted by reason."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import ssl
import struct
import termios

import pytest

from mediaserver.config import ConfigError, load_config
from mediaserver.errors import UsageError
from mediaserver.tls import (HANDSHAKE_ERROR, HANDSHAKE_TIMEOUT, CertFiles, HandshakeFailures, PausableTlsProtocol,
                             TlsCertificate)
from support.certs import make_cert


def _files(cert, section="rtmps") -> CertFiles:
    return CertFiles(str(cert.cert_file), str(cert.key_file), section)


async def _served(context: ssl.SSLContext, client: ssl.SSLContext) -> bytes:
    """The certificate a server with `context` presents to a client trusting `client`'s CA."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="localhost")
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return der
    finally:
        server.close()


async def test_reload_swaps_the_chain_in_the_same_context(tmp_path):
    first, second = make_cert(tmp_path / "a"), make_cert(tmp_path / "b")
    live = tmp_path / "live"
    live.mkdir()
    files = CertFiles(str(live / "c.pem"), str(live / "k.pem"), "http")
    (live / "c.pem").write_bytes(first.cert_file.read_bytes())
    (live / "k.pem").write_bytes(first.key_file.read_bytes())
    cert = TlsCertificate(files)
    context = cert.context
    assert await _served(context, first.client_context()) == first.der
    (live / "c.pem").write_bytes(second.cert_file.read_bytes())
    (live / "k.pem").write_bytes(second.key_file.read_bytes())
    assert cert.reload() and cert.context is context
    assert await _served(context, second.client_context()) == second.der


@pytest.mark.parametrize("breakage, named", [
    ("garbage key", "key_file"), ("missing key", "key_file"), ("other key", "key_file"),
    ("garbage cert", "cert_file"), ("encrypted key", "encrypted"),
])
async def test_a_bad_renewal_keeps_the_old_chain_with_one_error_naming_the_file(tmp_path, caplog, breakage, named):
    good, other = make_cert(tmp_path / "a"), make_cert(tmp_path / "b")
    live = tmp_path / "live"
    live.mkdir()
    cert_path, key_path = live / "c.pem", live / "k.pem"
    cert_path.write_bytes(good.cert_file.read_bytes())
    key_path.write_bytes(good.key_file.read_bytes())
    cert = TlsCertificate(CertFiles(str(cert_path), str(key_path), "rtmps"))
    if breakage == "garbage key":
        key_path.write_bytes(b"not a key\n")
    elif breakage == "missing key":
        key_path.unlink()
    elif breakage == "other key":
        key_path.write_bytes(other.key_file.read_bytes())
    elif breakage == "garbage cert":
        cert_path.write_bytes(b"-----BEGIN GARBAGE-----\n")
    else:
        key_path.write_bytes(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n")
    with caplog.at_level(logging.INFO, logger="mediaserver.tls"):
        assert not cert.reload()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, caplog.text
    error = errors[0].fields["error"]
    assert named in error and "[rtmps]" in error, error
    assert await _served(cert.context, good.client_context()) == good.der  # still the old chain


def test_a_bad_file_at_start_is_a_usage_error_naming_it(tmp_path):
    good = make_cert(tmp_path)
    with pytest.raises(UsageError, match=r"\[http\] key_file = .*nope.pem.* cannot be read"):
        TlsCertificate(CertFiles(str(good.cert_file), str(tmp_path / "nope.pem"), "http"))
    with pytest.raises(UsageError, match=r"cert_file = .* holds no PEM certificate"):
        TlsCertificate(CertFiles(str(good.key_file), str(good.key_file), "http"))


def test_handshake_failures_are_counted_once_each_by_reason(caplog):
    failures = HandshakeFailures("rtmps", log_interval_s=60)
    with caplog.at_level(logging.INFO, logger="mediaserver.tls"):
        for _ in range(3):
            failures.error("WRONG_VERSION_NUMBER")
        for _ in range(5):  # the 3 failed connections, and 2 that never finished in time
            failures.not_made()
    assert failures.counts == {HANDSHAKE_ERROR: 3, HANDSHAKE_TIMEOUT: 2}
    lines = [(r.getMessage(), r.fields) for r in caplog.records]
    assert len(lines) == 2, lines  # one per reason per interval
    assert lines[0][1]["failed"] == 1 and "rtmps://" in lines[0][1]["hint"]


def test_config_needs_cert_and_key_together_and_a_port_of_its_own():
    config = load_config(None, ["rtmps.cert_file=/c.pem", "rtmps.key_file=/k.pem", "http.trusted_proxies=10.0.0.0/8,::1"])
    assert config.rtmps.enabled and config.rtmps.port == 1936
    assert config.http.trusted_proxies == ("10.0.0.0/8", "::1")
    assert not load_config().rtmps.enabled
    with pytest.raises(ConfigError, match=r"\[rtmps\] needs both cert_file and key_file"):
        load_config(None, ["rtmps.cert_file=/c.pem"])
    with pytest.raises(ConfigError, match=r"\[http\] needs both"):
        load_config(None, ["http.key_file=/k.pem"])
    with pytest.raises(ConfigError, match="also rtmp.port"):
        load_config(None, ["rtmps.cert_file=/c.pem", "rtmps.key_file=/k.pem", "rtmps.port=1935"])
    with pytest.raises(ConfigError, match="'10.0.0.0/99'"):
        load_config(None, ['http.trusted_proxies=["127.0.0.1", "10.0.0.0/99"]'])


class _PausingApp(asyncio.Protocol):
    """Pauses its reading at its first bytes, as a publisher's merged read does."""

    def __init__(self) -> None:
        self.reads: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reads.append(data)
        if len(self.reads) == 1:
            self.transport.pause_reading()


def _kernel_queued(sock) -> int:
    """Bytes waiting in the socket's receive queue, not yet read by the process."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


async def _paused_tls_reads_stay_in_the_kernel(tmp_path) -> None:
    cert = make_cert(tmp_path)
    context = TlsCertificate(_files(cert)).context
    loop = asyncio.get_running_loop()
    app = _PausingApp()
    layers: list[PausableTlsProtocol] = []

    def accept() -> PausableTlsProtocol:
        layers.append(PausableTlsProtocol(loop, app, context, handshake_timeout=5.0))
        return layers[-1]

    server = await loop.create_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=cert.client_context(),
                                                       server_hostname="localhost")
        writer.write(b"first")
        await writer.drain()
        for _ in range(200):
            if app.reads:
                break
            await asyncio.sleep(0.01)
        assert app.reads == [b"first"]
        sock = layers[0]._transport.get_extra_info("socket")
        for i in range(30):  # one TLS record each, like ffmpeg's small writes
            writer.write(b"%02d" % i + b"x" * 98)
            await writer.drain()
            await asyncio.sleep(0.002)
        queued = 0
        for _ in range(200):
            queued = _kernel_queued(sock)
            if queued >= 30 * 100:
                break
            await asyncio.sleep(0.01)
        # Paused all the way down: the records wait in the kernel (uvloop's TLS would have read them all).
        assert queued >= 30 * 100 and app.reads == [b"first"]
        app.transport.resume_reading()
        for _ in range(200):
            if sum(map(len, app.reads)) >= 5 + 3000:
                break
            await asyncio.sleep(0.01)
        assert b"".join(app.reads[1:]) == b"".join(b"%02d" % i + b"x" * 98 for i in range(30))
        assert len(app.reads) <= 3  # taken in one socket read (two if a record was split at the pause)
        assert _kernel_queued(sock) == 0
        writer.close()
    finally:
        server.close()


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_a_paused_tls_connection_stops_reading_the_socket(tmp_path, loop_kind):
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(asyncio.wait_for(_paused_tls_reads_stay_in_the_kernel(tmp_path), 10))
