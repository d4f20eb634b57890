"""TLS for the listeners (RTMPS, HTTPS): one server SSLContext per listener, its certificate chain
reloaded in place on SIGHUP, and the accounting of TLS handshakes that fail.

The context object stays the same for the life of the listener: `load_cert_chain` on it again makes new
connections present the new chain while sessions already set up carry on untouched (no stream drops).
A new certificate or key that does not load (a missing file, a key that does not match) is tried on a
scratch context first, so a bad renewal keeps the old chain and says which file to fix.

A failed TLS handshake never reaches the listener's protocol (asyncio calls `connection_made` only after
it), and asyncio itself stays silent about it; `HandshakeFailures` counts them by reason through the
context's `sslobject_class`, and logs one line per reason per interval.

`PausableTlsProtocol` is the TLS layer of the RTMPS listener: a paused app stops the socket reads too.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from asyncio import sslproto
import time
from collections import Counter
from dataclasses import dataclass

from .errors import UsageError
from .log import LogGate, event

log = logging.getLogger(__name__)

HANDSHAKE_ERROR = "handshake_error"
HANDSHAKE_TIMEOUT = "handshake_timeout"


@dataclass(frozen=True, slots=True)
class CertFiles:
    cert_file: str
    key_file: str
    section: str
    """The config section that named them ("rtmps", "http"), for messages."""


class TlsCertificate:
    """A listener's server context and the files its chain comes from."""

    def __init__(self, files: CertFiles, failures: HandshakeFailures | None = None) -> None:
        self.files = files
        self.failures = failures or HandshakeFailures(files.section)
        self.context = _server_context()
        self.context.sslobject_class = self.failures.sslobject_class()
        problem = _load(self.context, files)
        if problem is not None:
            raise UsageError(problem)

    def reload(self) -> bool:
        """Load the files again; on failure keep the chain in use and log one error line."""
        scratch = _server_context()
        problem = _load(scratch, self.files)
        if problem is None:
            problem = _load(self.context, self.files)  # files may change between the two reads
        if problem is not None:
            event(log, "tls_reload_failed", logging.ERROR, listener=self.files.section, error=problem,
                  hint="the previous certificate stays in use; fix the file and send SIGHUP again")
            return False
        event(log, "tls_reloaded", listener=self.files.section, cert_file=self.files.cert_file)
        return True


def _server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _load(context: ssl.SSLContext, files: CertFiles) -> str | None:
    """None, or what is wrong with the files, naming the one to fix."""
    section = files.section
    texts = {}
    for key, path in (("cert_file", files.cert_file), ("key_file", files.key_file)):
        try:
            with open(path, "rb") as f:
                texts[key] = f.read(1 << 20)
        except OSError as err:
            return f"[{section}] {key} = {path!r} cannot be read: {err.strerror}"
    if b"-----BEGIN CERTIFICATE-----" not in texts["cert_file"]:
        return f"[{section}] cert_file = {files.cert_file!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    if b"ENCRYPTED PRIVATE KEY-----" in texts["key_file"] or b"Proc-Type: 4,ENCRYPTED" in texts["key_file"]:
        return (f"[{section}] key_file = {files.key_file!r} is encrypted; store it unencrypted "
                "(openssl pkey -in KEY -out KEY.plain) and readable only by this server")
    if b"PRIVATE KEY-----" not in texts["key_file"]:
        return f"[{section}] key_file = {files.key_file!r} holds no PEM private key (-----BEGIN PRIVATE KEY-----)"
    try:
        context.load_cert_chain(files.cert_file, files.key_file)
    except ssl.SSLError as err:
        reason = err.reason or str(err)
        if reason == "KEY_VALUES_MISMATCH":
            return (f"[{section}] key_file {files.key_file!r} is not the key of cert_file {files.cert_file!r}")
        return (f"[{section}] cert_file {files.cert_file!r} or key_file {files.key_file!r} is not a PEM "
                f"certificate chain and its unencrypted private key ({reason})")
    except OSError as err:
        return f"[{section}] cannot load {files.cert_file!r} / {files.key_file!r}: {err}"
    return None


class HandshakeFailures:
    """TLS handshakes that did not complete on one listener, by reason (HANDSHAKE_ERROR with the TLS
    alert, HANDSHAKE_TIMEOUT). Failures come in from the context's SSLObject (errors, at once) and from
    the listener (`not_made`: a connection whose handshake never completed within its deadline, which
    counts every error once more: those are taken off)."""

    def __init__(self, listener: str, log_interval_s: float = 10.0) -> None:
        self.listener = listener
        self.counts: Counter[str] = Counter()
        self._errors_unmatched = 0
        self._log_gate = LogGate(log_interval_s)

    def sslobject_class(self) -> type[ssl.SSLObject]:
        failures = self

        class CountingSSLObject(ssl.SSLObject):
            def do_handshake(self) -> None:
                try:
                    super().do_handshake()
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    raise
                except ssl.SSLError as err:
                    failures.error(err.reason or type(err).__name__)
                    raise

        return CountingSSLObject

    def error(self, reason: str) -> None:
        self.counts[HANDSHAKE_ERROR] += 1
        self._errors_unmatched += 1
        count = self._log_gate.should_log(reason, time.monotonic())
        if count:
            scheme = "rtmps" if self.listener == "rtmps" else "https"
            hint = (f"a plain (non-TLS) client on the TLS port: use {scheme}:// for this port"
                    if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL")
                    else "the client could not agree on TLS with this server (old client, or it distrusts the certificate)")
            event(log, "tls_handshake_failed", logging.WARNING, listener=self.listener, reason=reason,
                  failed=count, hint=hint)

    def not_made(self) -> None:
        """A connection accepted on the listener never finished its handshake (error or deadline)."""
        if self._errors_unmatched:
            self._errors_unmatched -= 1
            return
        self.counts[HANDSHAKE_TIMEOUT] += 1
        count = self._log_gate.should_log(HANDSHAKE_TIMEOUT, time.monotonic())
        if count:
            event(log, "tls_handshake_timeout", logging.WARNING, listener=self.listener, closed=count,
                  hint="clients connected and did not complete a TLS handshake in time")


class PausableTlsProtocol(sslproto.SSLProtocol):
    """A server-side TLS layer over one accepted TCP connection, whose paused reading really stops reading
    the socket. The app protocol's `connection_made` follows a completed handshake (none if it fails or
    outlasts `handshake_timeout`, as with `create_server(ssl=...)`).

    Why: RTMP publishers' merged reads (rtmp/server.py) pause the transport for a few ms so that one wakeup
    takes many chunks. uvloop's own TLS transport keeps reading every TCP segment under a paused app (ffmpeg
    sends ~200 small TLS records a second), one syscall, allocation and copy each, which made RTMPS ingest
    cost nearly twice plain RTMP's CPU; and it does not expose its TCP transport. So the listener accepts
    plain TCP and wraps it in this: asyncio's own TLS state machine (the same design as uvloop's), whose
    pause also pauses the TCP transport, so the records wait in the kernel and one read takes them all.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, app_protocol: asyncio.BaseProtocol,
                 context: ssl.SSLContext, handshake_timeout: float) -> None:
        super().__init__(loop, app_protocol, context, None, server_side=True,
                         ssl_handshake_timeout=handshake_timeout)

    # The base class only marks the app paused and keeps reading records into its buffer (up to its own
    # high-water mark): stop the socket as well, unless that flow control already did.

    def _pause_reading(self) -> None:
        paused = self._app_reading_paused
        super()._pause_reading()
        if not paused and self._transport is not None and not self._ssl_reading_paused:
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        paused = self._app_reading_paused
        super()._resume_reading()  # what is already buffered is decrypted on the next loop turn
        if paused and self._transport is not None and not self._ssl_reading_paused:
            self._transport.resume_reading()
