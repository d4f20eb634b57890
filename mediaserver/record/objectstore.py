"""Object storage for finished recordings (record.storage = "s3"): any S3-compatible store (AWS, MinIO, Ceph).

The only module that imports aiobotocore, and lazily: a server with local storage starts without it.
Credentials are botocore's business (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment, or
its other sources); they are never read, logged or shown here.

An upload sends a file in parts of `part_size_mb` (multipart) when it is larger, each part read in a
thread and sent with its Content-MD5 (the store checks each part); one plain PUT otherwise. It is then
verified with a HEAD: the size must be the file's, and the ETag the MD5 S3 computes (the MD5 of the file,
or of the parts' MD5s followed by "-N") when the store gives one of that form (SSE-KMS and some stores
do not: then the size alone). Reads are ranged GETs streamed in chunks: memory stays bounded whatever
the object's size. Every failure is a StorageError saying what to do; the caller decides when to retry.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import S3Config
from ..errors import MediaServerError, UsageError

INSTALL_HINT = "pip install 'mediaserver[s3]'"
READ_CHUNK = 256 * 1024
"""Bytes read from a GET's body at a time (what a ranged read holds in memory)."""
MAX_SMALL_OBJECT = 16 << 20
"""The largest object get_bytes reads whole (a sidecar: about 45 bytes per fragment, 4 MB for a day)."""
_MD5_ETAG = re.compile(r'^"?([0-9a-f]{32})(?:-(\d+))?"?$')
_HINTS = {
    "NoSuchBucket": "create the bucket, or fix record.s3.bucket",
    "AccessDenied": "check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the bucket's policy",
    "InvalidAccessKeyId": "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the server's environment",
    "SignatureDoesNotMatch": "check AWS_SECRET_ACCESS_KEY in the server's environment, and record.s3.region",
    "EntityTooSmall": "raise record.s3.part_size_mb (S3 wants parts of at least 5 MiB)",
    "NoCredentials": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the server's environment",
}


class StorageError(MediaServerError):
    """The store refused a request or could not be reached. `code` is S3's error code ("NoSuchBucket",
    "NoSuchKey", ...), "Unreachable" for the network, "Mismatch" for an upload that did not verify."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class StorageNotInstalled(UsageError):
    """record.storage = "s3" without aiobotocore."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    etag: str


# ----- pure parts ---------------------------------------------------------------------------------


def object_key(prefix: str, relative: str | Path) -> str:
    """The key of a recording: the prefix, then its path under record.path ('/'-separated)."""
    name = Path(relative).as_posix().lstrip("/")
    return f"{prefix}{name}" if prefix.endswith("/") or not prefix else f"{prefix}/{name}"


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def parse_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of s3://BUCKET/KEY; ValueError for anything else."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// location")
    bucket, _, key = uri[5:].partition("/")
    if not bucket or not key:
        raise ValueError(f"{uri!r} names no bucket or no key")
    return bucket, key


def part_ranges(size: int, part_size: int) -> list[tuple[int, int]]:
    """(offset, length) of each part of a `size`-byte file; one part when it fits (S3 allows 10 000 parts:
    the parts grow for a file that would need more)."""
    if size <= 0:
        return [(0, 0)]
    part_size = max(part_size, -(-size // 10_000))
    return [(at, min(part_size, size - at)) for at in range(0, size, part_size)]


def expected_etag(part_md5s: list[bytes]) -> str:
    """The ETag S3 gives an object sent as these parts (one part: a plain PUT, its MD5)."""
    if len(part_md5s) == 1:
        return part_md5s[0].hex()
    return f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"


def etag_matches(etag: str, part_md5s: list[bytes]) -> bool | None:
    """Whether the store's ETag is the MD5 of what was sent; None when it is not an MD5-style ETag (the
    store encrypts with KMS or names objects its own way): then only the size can be checked."""
    if not _MD5_ETAG.match(etag.lower()):
        return None
    return etag.lower().strip('"') == expected_etag(part_md5s)


def _read_part(path: Path, offset: int, length: int) -> tuple[bytes, bytes]:
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise OSError(f"{path} is shorter than expected ({offset + len(data)} bytes); it changed during the upload")
    return data, hashlib.md5(data).digest()


# ----- the store ----------------------------------------------------------------------------------


class ObjectStore:
    """One bucket through one aiobotocore client. `await ObjectStore.open(cfg)`; `await close()`."""

    def __init__(self, cfg: S3Config, client: Any, stack: AsyncExitStack, errors: tuple[type, type]) -> None:
        self.cfg = cfg
        self.bucket = cfg.bucket
        self.part_size = max(1, int(cfg.part_size_mb * 1024 * 1024))
        self._client = client
        self._stack = stack
        self._client_error, self._boto_error = errors
        self.where = f"bucket {cfg.bucket!r} at {cfg.endpoint or 'AWS ' + cfg.region}"

    @classmethod
    async def open(cls, cfg: S3Config) -> ObjectStore:
        try:
            from aiobotocore.config import AioConfig
            from aiobotocore.session import get_session
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError as err:
            raise StorageNotInstalled(f"record.storage = \"s3\" needs aiobotocore ({err.name} is missing): "
                                      f"{INSTALL_HINT}, or set record.storage = \"local\"") from None
        config = AioConfig(
            connect_timeout=5, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"},
            # A ranged GET streamed to a viewer holds its connection while the viewer reads: room for many.
            max_pool_connections=256,
            # Content-MD5 on each part is our integrity check; newer default checksums trip some stores.
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
            s3={"addressing_style": "path"} if cfg.endpoint else {},
        )
        stack = AsyncExitStack()
        client = await stack.enter_async_context(get_session().create_client(
            "s3", region_name=cfg.region, endpoint_url=cfg.endpoint or None, config=config))
        return cls(cfg, client, stack, (ClientError, BotoCoreError))

    async def close(self) -> None:
        await self._stack.aclose()

    def uri(self, key: str) -> str:
        return s3_uri(self.bucket, key)

    def _error(self, err: Exception, doing: str) -> StorageError:
        if isinstance(err, StorageError):
            return err
        if isinstance(err, self._client_error):
            info = err.response.get("Error", {})  # type: ignore[attr-defined]
            code = str(info.get("Code") or err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?"))
            if code == "404" and doing.startswith("check"):
                code = "NoSuchBucket"
            reason = info.get("Message") or code
        else:
            name = type(err).__name__
            code = "NoCredentials" if name == "NoCredentialsError" else "Unreachable"
            reason = f"{name}: {err}"
        hint = _HINTS.get(code, "is the store up and reachable? the files are kept locally and retried"
                           if code == "Unreachable" else "see the store's error above")
        return StorageError(f"{self.where}: {doing}: {code}: {reason}; {hint}", code)

    async def check(self) -> None:
        """That the bucket is there and ours (HEAD bucket)."""
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except Exception as err:
            raise self._error(err, "checking the bucket") from None

    async def upload(self, path: Path, key: str) -> StoredObject:
        """Send a file and verify it (see the module docstring). OSError when the file cannot be read."""
        size = (await asyncio.to_thread(path.stat)).st_size
        parts = part_ranges(size, self.part_size)
        try:
            if len(parts) == 1:
                data, md5 = await asyncio.to_thread(_read_part, path, 0, size)
                await self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="video/mp4",
                                              ContentMD5=base64.b64encode(md5).decode())
                md5s = [md5]
            else:
                md5s = await self._multipart(path, key, parts)
            head = await self._client.head_object(Bucket=self.bucket, Key=key)
        except OSError:
            raise
        except Exception as err:
            raise self._error(err, f"uploading {key}") from None
        stored = StoredObject(key, int(head.get("ContentLength", -1)), str(head.get("ETag", "")))
        if stored.size != size:
            raise StorageError(f"{self.where}: {key} holds {stored.size} bytes after the upload, the file "
                               f"{size}; it will be sent again", "Mismatch")
        if etag_matches(stored.etag, md5s) is False:
            raise StorageError(f"{self.where}: {key} has ETag {stored.etag}, not the MD5 of what was sent "
                               f"({expected_etag(md5s)}); it will be sent again", "Mismatch")
        return stored

    async def _multipart(self, path: Path, key: str, parts: list[tuple[int, int]]) -> list[bytes]:
        started = await self._client.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType="video/mp4")
        upload_id = started["UploadId"]
        md5s: list[bytes] = []
        done: list[dict[str, Any]] = []
        try:
            for number, (offset, length) in enumerate(parts, 1):
                data, md5 = await asyncio.to_thread(_read_part, path, offset, length)
                answer = await self._client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data,
                    ContentMD5=base64.b64encode(md5).decode())
                md5s.append(md5)
                done.append({"PartNumber": number, "ETag": answer["ETag"]})
            await self._client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                         MultipartUpload={"Parts": done})
        except BaseException:
            # Parts left behind cost storage until the bucket's lifecycle rule removes them; try to drop them.
            try:  # briefly: a shutdown must not wait on a bucket that is away
                await asyncio.wait_for(self._client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id), 3.0)
            except Exception:
                pass
            raise
        return md5s

    async def put_bytes(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        try:
            await self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type,
                                          ContentMD5=base64.b64encode(hashlib.md5(data).digest()).decode())
        except Exception as err:
            raise self._error(err, f"writing {key}") from None

    async def get_bytes(self, key: str) -> bytes:
        """A small object whole (at most MAX_SMALL_OBJECT)."""
        try:
            answer = await self._client.get_object(Bucket=self.bucket, Key=key)
            body = answer["Body"]
            async with body:
                if int(answer.get("ContentLength", 0)) > MAX_SMALL_OBJECT:
                    raise StorageError(f"{self.where}: {key} is larger than {MAX_SMALL_OBJECT} bytes", "TooLarge")
                return await body.read()
        except Exception as err:
            raise self._error(err, f"reading {key}") from None

    async def read_range(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes start..end (inclusive) of an object, in chunks of at most READ_CHUNK."""
        try:
            answer = await self._client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end}")
        except Exception as err:
            raise self._error(err, f"reading {key}") from None
        body = answer["Body"]
        async with body:
            while True:
                try:
                    chunk = await body.read(READ_CHUNK)
                except Exception as err:
                    raise self._error(err, f"reading {key}") from None
                if not chunk:
                    return
                yield chunk

    async def delete(self, key: str) -> None:
        """Remove an object (S3 answers the same for one that is not there)."""
        try:
            await self._client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as err:
            raise self._error(err, f"deleting {key}") from None

    async def presign(self, key: str, expires_s: int) -> str:
        """A URL that GETs the object without credentials for `expires_s` seconds (made here, no request)."""
        try:
            return await self._client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s)
        except Exception as err:
            raise self._error(err, f"presigning {key}") from None
