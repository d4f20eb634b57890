"""Listener certificates: loaded at start with a clear error naming the bad file, reloaded in place (the
same SSLContext, so live sessions carry on), a bad renewal keeping the old chain; TLS handshake failures
counted by reason."""

from __future__ import annotations

import asyncio
import logging
import ssl

import pytest

from mediaserver.config import ConfigError, load_config
from mediaserver.errors import UsageError
from mediaserver.tls import HANDSHAKE_ERROR, HANDSHAKE_TIMEOUT, CertFiles, HandshakeFailures, TlsCertificate
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
