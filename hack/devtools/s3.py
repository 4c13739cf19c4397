"""A real S3 endpoint for tests and benchmarks: moto's server mode in its own process.

``python -m moto.server`` speaks the S3 wire protocol over HTTP on a free loopback port.
Authentication is switched on (moto's ``/moto-api/reset-auth``) after an IAM user with an
``s3:*`` policy is created, so wrong or missing credentials fail the way they do on AWS
(``InvalidAccessKeyId``, ``SignatureDoesNotMatch``, 403) instead of being waved through.

* :func:`start_moto` → :class:`MotoS3` (``endpoint``, the valid key pair, ``client()``,
  ``env()`` for a subprocess, ``bucket()``, ``put_tree()``, ``stop()``);
* pytest fixture ``moto_server`` (session scope): import it into a test module or list
  ``hack.devtools.s3`` in ``pytest_plugins``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["MotoS3", "start_moto"]

REGION = "us-east-1"
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class MotoS3:
    """A running moto server with authentication enforced."""

    endpoint: str
    access_key_id: str
    secret_access_key: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def client(
        self, access_key_id: str | None = None, secret_access_key: str | None = None
    ) -> S3Client:
        client: S3Client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=access_key_id or self.access_key_id,
            aws_secret_access_key=secret_access_key or self.secret_access_key,
        )
        return client

    def env(self, **overrides: str) -> dict[str, str]:
        """Environment for a ``tritonfleet sync`` subprocess, as the Job gets it."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ACCESS_KEY_ID=self.access_key_id,
            AWS_SECRET_ACCESS_KEY=self.secret_access_key,
            AWS_EC2_METADATA_DISABLED="true",
        )
        env.update(overrides)
        return env

    def bucket(self, prefix: str = "models") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name

    def put_tree(self, bucket: str, prefix: str, files: Mapping[str, bytes | Path]) -> None:
        """Upload ``{relative key: bytes or local file}`` under ``prefix``."""
        client = self.client()
        base = prefix.strip("/")
        for name, body in files.items():
            key = f"{base}/{name}" if base else name
            if isinstance(body, Path):
                client.upload_file(str(body), bucket, key)
            else:
                client.put_object(Bucket=bucket, Key=key, Body=body)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _wait_ready(endpoint: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}")
        try:
            with _opener.open(f"{endpoint}/moto-api/", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"moto server at {endpoint} not ready after {timeout:.0f}s"
                ) from None
            time.sleep(0.1)


def start_moto(host: str = "127.0.0.1", timeout: float = 60.0) -> MotoS3:
    """Start ``python -m moto.server`` on a free port, create an IAM user allowed ``s3:*``,
    then enforce authentication for every later request."""
    log_path = Path(tempfile.mkdtemp(prefix="moto-")) / "moto.log"
    for _attempt in range(3):
        port = _free_port(host)
        endpoint = f"http://{host}:{port}"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            _wait_ready(endpoint, process, timeout)
            break
        except RuntimeError:
            process.kill()
            process.wait()
    else:
        raise RuntimeError(f"moto server would not start; log: {log_path}")
    # Before auth is on, any key pair is accepted: use it to make the real user.
    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
    )
    iam.create_user(UserName="tritonfleet-sync")
    iam.put_user_policy(
        UserName="tritonfleet-sync",
        PolicyName="s3-all",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            }
        ),
    )
    key = iam.create_access_key(UserName="tritonfleet-sync")["AccessKey"]
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "application/octet-stream"},
    )
    with _opener.open(request, timeout=10) as response:
        response.read()
    return MotoS3(endpoint, key["AccessKeyId"], key["SecretAccessKey"], process, log_path)
