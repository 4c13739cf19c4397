"""S3 (and S3-compatible: MinIO, Ceph, moto) sources: mirror ``s3://bucket/prefix``.

Credentials come from, in order: ``--credentials-dir`` (a mounted Secret: one
file per key), the ``AWS_*`` environment variables (the sync Job maps the
``credentialsSecret`` keys to them), then boto3's default chain (IRSA, instance
profile). Values are registered for redaction and never logged.

Downloads go through boto3's transfer manager (parallel ranged GETs for big
objects, several objects at once), straight into staging; each file is then
hashed in one pass that also checks the MD5 ETag of single-part uploads, so an
object corrupted in transit is caught even where no checksum is stored.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from s3transfer.subscribers import BaseSubscriber

from tritonfleet.adapters.sources.common import (
    FetchOptions,
    FetchResult,
    check_download_size,
    choose,
    ensure_space,
    register_secret,
)
from tritonfleet.adapters.sources.errors import (
    IntegrityError,
    SourceAccessDenied,
    SourceNotFound,
    SourceUnavailable,
    SyncError,
    UnsafeSource,
)
from tritonfleet.adapters.sources.staging import Progress, Staging, emit, local_error
from tritonfleet.api.model import S3Source
from tritonfleet.desired.triton.repository import Policy, UnsafeMember, safe_relative_path

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_ACCESS_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "AllAccessDisabled",
    "403",
    "401",
}
_NOT_FOUND_CODES = {"NoSuchBucket", "NoSuchKey", "404", "NotFound"}


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → (bucket, ``some/prefix/``)."""
    rest = uri.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/" if prefix else "")


def read_credentials(
    credentials_dir: Path | None, env: Mapping[str, str] | None = None
) -> dict[str, str] | None:
    """Static credentials from a mounted Secret or the environment, if any."""
    env = os.environ if env is None else env
    if credentials_dir is not None:
        found = {}
        for key in CREDENTIAL_KEYS:
            path = credentials_dir / key
            try:
                # `kubectl create secret --from-file` keeps a trailing newline
                found[key] = path.read_text().strip()
            except FileNotFoundError:
                continue
            except OSError as error:
                raise SourceAccessDenied(
                    f"cannot read {path} in --credentials-dir: {error.strerror}"
                ) from None
        if "AWS_ACCESS_KEY_ID" in found and "AWS_SECRET_ACCESS_KEY" in found:
            return found
        if found:
            raise SourceAccessDenied(
                f"--credentials-dir {credentials_dir} needs both AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY"
            )
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return {k: env[k] for k in CREDENTIAL_KEYS if env.get(k)}
    return None


def make_client(spec: S3Source, options: FetchOptions) -> S3Client:
    credentials = read_credentials(options.credentials_dir)
    if credentials is None and spec.credentials_secret:
        raise SourceAccessDenied(
            f"credentialsSecret {spec.credentials_secret!r} is set but no credentials were "
            "given: expected AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment "
            "or as files in --credentials-dir"
        )
    for value in (credentials or {}).values():
        register_secret(value)
    session = boto3.session.Session(
        aws_access_key_id=(credentials or {}).get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=(credentials or {}).get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=(credentials or {}).get("AWS_SESSION_TOKEN"),
    )
    region = spec.region or ("us-east-1" if spec.endpoint else None)
    config = Config(
        region_name=region,
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=min(options.timeout, 15.0),
        read_timeout=options.timeout,
        max_pool_connections=max(10, options.concurrency * 2),
        s3={"addressing_style": "path"} if spec.endpoint else None,
    )
    client: S3Client = session.client("s3", endpoint_url=spec.endpoint, config=config)
    emit(
        log,
        "s3 client",
        endpoint=spec.endpoint or "aws",
        region=region or "default",
        credentials="static" if credentials else "default-chain",
    )
    return client


def translate(error: Exception, what: str) -> SyncError:
    """A boto3/botocore failure as the sync error class the user acts on."""
    if isinstance(error, SyncError):
        return error
    if isinstance(error, NoCredentialsError):
        return SourceAccessDenied(
            f"{what}: no AWS credentials found (set spec.source.s3.credentialsSecret, or give "
            "the pod an IAM role)"
        )
    if isinstance(error, ClientError):
        err = error.response.get("Error", {})
        code = str(err.get("Code", "?"))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = str(err.get("Message", "")) or f"HTTP {status}"
        if code in _NOT_FOUND_CODES:
            label = {"NoSuchBucket": "bucket does not exist"}.get(code, "object does not exist")
            return SourceNotFound(f"{what}: {label} ({code})")
        if code in _ACCESS_CODES or status in (401, 403):
            return SourceAccessDenied(f"{what}: access denied ({code}: {message})")
        if status is not None and (status >= 500 or status == 429):
            return SourceUnavailable(f"{what}: S3 error {code} (HTTP {status}): {message}")
        return SyncError(f"{what}: S3 error {code} (HTTP {status}): {message}")
    if isinstance(error, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
        return SourceUnavailable(f"{what}: {error}")
    if isinstance(error, BotoCoreError):
        text = str(error)
        if "checksum" in text.lower():
            return IntegrityError(f"{what}: {text}")
        return SourceUnavailable(f"{what}: {text}")
    if isinstance(error, OSError):
        return SourceUnavailable(f"{what}: {error.strerror or error}")
    return SyncError(f"{what}: {type(error).__name__}: {error}")


@dataclass(frozen=True)
class S3Object:
    key: str
    rel: PurePosixPath
    size: int
    etag: str

    @property
    def fingerprint(self) -> str:
        return f"s3:{self.key}:{self.size}:{self.etag}"


def list_prefix(client: S3Client, bucket: str, prefix: str) -> list[S3Object]:
    where = f"s3://{bucket}/{prefix}"
    objects = []
    try:
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                name = key[len(prefix) :]
                if not name or name.endswith("/"):
                    continue  # "folder" marker objects made by consoles
                try:
                    rel = safe_relative_path(name)
                except UnsafeMember as error:
                    raise UnsafeSource(f"{where}: {error}") from None
                etag = str(item.get("ETag", "")).strip('"')
                objects.append(S3Object(key, rel, int(item.get("Size", 0)), etag))
    except SyncError:
        raise
    except Exception as error:
        raise translate(error, f"listing {where}") from None
    if not objects:
        raise SourceNotFound(f"{where}: no objects under this prefix")
    return objects


class _ProgressSubscriber(BaseSubscriber):
    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        self._progress.add(bytes_transferred)


def fetch_s3(
    spec: S3Source, policy: Policy, staging: Staging, options: FetchOptions
) -> FetchResult:
    bucket, prefix = parse_uri(spec.uri)
    client = make_client(spec, options)
    objects = {o.rel: o for o in list_prefix(client, bucket, prefix)}
    selection = choose(objects, policy, spec.uri)
    wanted = [objects[rel] for rel in selection.fetch]
    todo = [o for o in wanted if not staging.reuse(o.rel, o.fingerprint)]
    if staging.reused_files:
        emit(
            log,
            "reused unchanged objects from the live revision",
            files=staging.reused_files,
            bytes=staging.reused_bytes,
        )
    total = sum(o.size for o in todo)
    check_download_size(total, options, f"s3://{bucket}")
    ensure_space(staging, total)
    emit(log, "s3 download", uri=spec.uri, files=len(todo), total_bytes=total)
    progress = Progress("s3", total, options.progress_interval, files=len(todo))
    config = TransferConfig(
        max_concurrency=options.concurrency,
        multipart_threshold=options.multipart_chunk_bytes,
        multipart_chunksize=options.multipart_chunk_bytes,
        use_threads=True,
    )
    manager = create_transfer_manager(client, config)
    pending: list[tuple[S3Object, Any]] = []
    ok = False
    try:
        for obj in todo:
            target = staging.prepare(obj.rel)
            future = manager.download(
                bucket, obj.key, str(target), subscribers=[_ProgressSubscriber(progress)]
            )
            pending.append((obj, future))
        # Hash each file as soon as it lands, while the rest keep downloading:
        # hashlib releases the GIL, so this overlaps with the network.
        for obj, future in pending:
            try:
                future.result()
            except Exception as error:
                if isinstance(error, OSError) and not isinstance(error, TimeoutError):
                    # s3transfer writes the file itself: ENOSPC and friends land here
                    raise local_error(error, f"writing {obj.rel}", staging.root) from None
                raise translate(error, f"downloading s3://{bucket}/{obj.key}") from None
            check_md5 = len(obj.etag) == 32 and "-" not in obj.etag
            entry, md5 = staging.seal(
                obj.rel, fingerprint=obj.fingerprint, md5=obj.etag if check_md5 else None
            )
            if entry.size != obj.size:
                raise IntegrityError(
                    f"s3://{bucket}/{obj.key}: got {entry.size} bytes, listing said {obj.size}"
                )
            if check_md5 and md5 != obj.etag:
                raise IntegrityError(
                    f"s3://{bucket}/{obj.key}: MD5 mismatch: expected {obj.etag} (ETag), got {md5}"
                )
        ok = True
    finally:
        manager.shutdown(cancel=not ok)
    progress.finish()
    return FetchResult(selection, fetched_bytes=progress.done)
