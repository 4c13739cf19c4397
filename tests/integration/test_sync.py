"""``tritonfleet sync`` against real components: moto's S3 server, a local HTTP server, real
files and archives, real signals, and a real tritonserver loading what was published.

Most runs call the command in-process (``tritonfleet.cli.main(["sync", ...])``: same code, no
interpreter start-up); the ones about processes (``python -m tritonfleet sync``, SIGKILL/SIGTERM
mid-download, what reaches stderr) run it as a subprocess.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hack.devtools.http_server import ModelHttpServer
from hack.devtools.s3 import MotoS3
from hack.devtools.triton import TritonProcess
from tests.support.echo_model import ECHO_CONFIG, echo_model_py, infer_echo
from tests.support.tmpfs import tmpfs
from tritonfleet.cli import main as tritonfleet_main

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ".tritonfleet-manifest.json"


# --- helpers ------------------------------------------------------------------------------


@dataclass
class Result:
    rc: int
    out: str
    err: str


def model_doc(
    source: dict[str, Any], name: str = "m", config: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "tritonfleet.io/v1alpha1",
        "kind": "TritonModel",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"source": source, "config": config or {"backend": "python"}},
    }


def policy(kind: str, **values: Any) -> dict[str, Any]:
    return {"backend": "python", "versionPolicy": {kind: values}}


@dataclass
class Env:
    tmp: Path
    repo: Path

    def write(self, doc: dict[str, Any], name: str = "model.yaml") -> Path:
        path = self.tmp / name
        path.write_text(yaml.safe_dump(doc))
        return path

    def sync(self, doc: dict[str, Any], *args: str) -> Result:
        return run(["-f", str(self.write(doc)), "--repository", str(self.repo), *args])

    def files(self, model: str = "m") -> dict[str, bytes]:
        """What Triton would read under <repo>/<model> (manifest excluded)."""
        root = self.repo / model
        out = {}
        for dirpath, _dirs, names in os.walk(root, followlinks=False):
            for name in names:
                path = Path(dirpath) / name
                rel = path.relative_to(root).as_posix()
                if rel != MANIFEST:
                    out[rel] = (
                        path.read_bytes()
                        if not path.is_symlink()
                        else b"->" + str(path.readlink()).encode()
                    )
        return out

    def link(self, model: str = "m") -> str:
        return os.readlink(self.repo / model)  # noqa: PTH115 - the exact link text

    def manifest(self, model: str = "m") -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.repo / model / MANIFEST).read_text())
        return data

    @property
    def state(self) -> Path:
        return self.repo.parent / ".tritonfleet" / self.repo.name

    def staging_entries(self, model: str = "m") -> list[str]:
        staging = self.state / "staging" / model
        return sorted(p.name for p in staging.iterdir()) if staging.exists() else []

    def revisions(self, model: str = "m") -> list[str]:
        return sorted(p.name for p in (self.state / "revisions" / model).iterdir())


def run(argv: list[str]) -> Result:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = tritonfleet_main(["sync", *argv])
        except SystemExit as exit_:  # argparse usage errors
            rc = int(exit_.code or 0)
    return Result(rc, out.getvalue(), err.getvalue())


def sync_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tritonfleet", "sync", *args]


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = str(REPO_ROOT / "operator")
    env.update(extra)
    return env


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_tar(members: list[tuple[str, Any]], gz: bool = True) -> bytes:
    """members: (name, bytes) for files, (name, ("symlink"|"hardlink"|"dir"|"chr", arg))."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as tar:
        for name, spec in members:
            info = tarfile.TarInfo(name)
            if isinstance(spec, bytes):
                info.size = len(spec)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(spec))
                continue
            kind, arg = spec
            info.type = {
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "dir": tarfile.DIRTYPE,
                "chr": tarfile.CHRTYPE,
            }[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = arg
            if kind == "dir":
                info.mode = 0o755
            tar.addfile(info)
    return buffer.getvalue()


def make_zip(
    members: list[tuple[str, bytes]],
    symlinks: dict[str, str] | None = None,
    *,
    deflate: bool = False,
) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name)
            if deflate:
                info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16) | 0
            archive.writestr(info, target)
    return buffer.getvalue()


@pytest.fixture
def env(tmp_path: Path) -> Env:
    volume = tmp_path / "volume"
    volume.mkdir()
    return Env(tmp_path, volume / "repository")


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, moto_server: MotoS3) -> MotoS3:
    """Credentials in the environment, as the sync Job receives them from the Secret."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_server.secret_access_key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    return moto_server


def s3_source(server: MotoS3, bucket: str, prefix: str, **extra: Any) -> dict[str, Any]:
    return {"s3": {"uri": f"s3://{bucket}/{prefix}", "endpoint": server.endpoint, **extra}}


# --- S3 ------------------------------------------------------------------------------------


def test_s3_mirrors_the_prefix_and_applies_the_version_policy(env: Env, aws: MotoS3) -> None:
    bucket = aws.bucket()
    aws.put_tree(
        bucket,
        "models/m",
        {
            "config.pbtxt": b'name: "from-the-bucket"',
            "1/model.py": b"v1",
            "labels.txt": b"cat\ndog\n",
        },
    )
    source = s3_source(aws, bucket, "models/m", credentialsSecret="s3-creds")
    first = env.sync(model_doc(source, config=policy("all")))
    assert first.rc == 0, first.err
    assert "source config.pbtxt ignored" in first.err
    files = env.files()
    assert set(files) == {"config.pbtxt", "1/model.py", "labels.txt"}
    assert b"from-the-bucket" not in files["config.pbtxt"]  # the spec is the source of truth
    assert b'backend: "python"' in files["config.pbtxt"]
    manifest = env.manifest()
    assert manifest["files"]["1/model.py"]["sha256"] == sha(b"v1")
    assert manifest["versions"] == [1]

    # A second version pushed later; the spec is unchanged, so re-sync with --force.
    aws.put_tree(bucket, "models/m", {"2/model.py": b"v2"})
    second = env.sync(model_doc(source, config=policy("all")), "--force")
    assert second.rc == 0, second.err
    assert {"1/model.py", "2/model.py"} <= set(env.files())
    assert "reused unchanged objects" in second.err  # version 1 was hard-linked, not fetched
    revisions = env.revisions()
    assert len(revisions) == 2

    # latest 1: only version 2 published; version 1 gone only from the new revision.
    third = env.sync(model_doc(source, config=policy("latest", numVersions=1)))
    assert third.rc == 0, third.err
    assert set(env.files()) == {"config.pbtxt", "2/model.py", "labels.txt"}
    assert "removed_versions=1" in third.err
    assert env.manifest()["droppedVersions"] == [1]
    # live + previous are kept, older revisions collected
    assert len(env.revisions()) == 2
    assert env.staging_entries() == []


def test_s3_multipart_download_is_checked(env: Env, aws: MotoS3) -> None:
    bucket = aws.bucket()
    big = os.urandom(11 * 1024 * 1024)
    aws.put_tree(bucket, "m", {"1/weights.bin": big, "1/model.py": b"small"})
    source = s3_source(aws, bucket, "m")
    result = env.sync(model_doc(source), "--multipart-chunk-size", "5MiB", "--concurrency", "4")
    assert result.rc == 0, result.err
    assert env.manifest()["files"]["1/weights.bin"]["sha256"] == sha(big)
    assert (env.repo / "m" / "1" / "weights.bin").read_bytes() == big
    assert "mbps=" in result.err and "event=fetched source=s3" in result.err


@pytest.fixture
def s3_published(env: Env, aws: MotoS3) -> tuple[str, dict[str, bytes], str]:
    """A model already published from S3: the 'previous version' failures must not touch."""
    bucket = aws.bucket()
    aws.put_tree(bucket, "m", {"1/model.py": b"good"})
    result = env.sync(model_doc(s3_source(aws, bucket, "m")))
    assert result.rc == 0, result.err
    return bucket, env.files(), env.link()


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("missing-bucket", 3, "bucket does not exist"),
        ("empty-prefix", 3, "no objects under this prefix"),
        ("missing-version", 3, "asks for version(s) 7"),
        ("wrong-secret", 4, "SignatureDoesNotMatch"),
        ("unknown-key", 4, "InvalidAccessKeyId"),
        ("no-credentials", 4, "credentialsSecret 's3-creds' is set but no credentials"),
        ("endpoint-down", 8, "listing s3://"),
    ],
)
def test_s3_failures_leave_the_previous_version(
    env: Env,
    aws: MotoS3,
    monkeypatch: pytest.MonkeyPatch,
    s3_published: tuple[str, dict[str, bytes], str],
    case: str,
    code: int,
    message: str,
) -> None:
    bucket, before_files, before_link = s3_published
    prefix, config, extra = "m", policy("latest", numVersions=1), {}
    endpoint = aws.endpoint
    if case == "missing-bucket":
        bucket = "no-such-bucket-here"
    elif case == "empty-prefix":
        prefix = "nothing/here"
    elif case == "missing-version":
        config = policy("specific", versions=[1, 7])
    elif case == "wrong-secret":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-but-long-enough")
    elif case == "unknown-key":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNUNKNOWN00")
    elif case == "no-credentials":
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        extra = {"credentialsSecret": "s3-creds"}
    elif case == "endpoint-down":
        endpoint = "http://127.0.0.1:9"  # discard port: connection refused
    source = {"s3": {"uri": f"s3://{bucket}/{prefix}", "endpoint": endpoint, **extra}}
    result = env.sync(model_doc(source, config=config), "--timeout", "5")
    assert result.rc == code, result.err
    assert message in result.err
    assert env.link() == before_link
    assert env.files() == before_files
    assert env.staging_entries() == []
    for secret in (aws.secret_access_key, "not-the-secret-but-long-enough"):
        assert secret not in result.err + result.out


def test_s3_credentials_from_a_mounted_secret_dir(
    env: Env, aws: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    secret = env.tmp / "secret"
    secret.mkdir()
    (secret / "AWS_ACCESS_KEY_ID").write_text(aws.access_key_id + "\n")
    (secret / "AWS_SECRET_ACCESS_KEY").write_text(aws.secret_access_key + "\n")
    bucket = aws.bucket()
    aws.put_tree(bucket, "m", {"1/model.py": b"x"})
    doc = model_doc(s3_source(aws, bucket, "m", credentialsSecret="s3-creds"))
    result = env.sync(doc, "--credentials-dir", str(secret))
    assert result.rc == 0, result.err
    assert "credentials=static" in result.err


def test_cli_subprocess_logs_progress_and_never_secrets(env: Env, aws: MotoS3) -> None:
    bucket = aws.bucket()
    aws.put_tree(bucket, "m", {"1/model.py": b"x" * 1000})
    path = env.write(model_doc(s3_source(aws, bucket, "m", credentialsSecret="s3-creds")))
    proc = subprocess.run(
        sync_cmd("-f", str(path), "--repository", str(env.repo)),
        env=subprocess_env(
            AWS_ACCESS_KEY_ID=aws.access_key_id,
            AWS_SECRET_ACCESS_KEY=aws.secret_access_key,
            AWS_EC2_METADATA_DISABLED="true",
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "revision" in proc.stdout and "published" in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert all(line.startswith("time=") and " level=" in line for line in lines), proc.stderr
    assert any("event=published" in line and "mbps=" in line for line in lines)
    for secret in (aws.access_key_id, aws.secret_access_key):
        assert secret not in proc.stderr + proc.stdout


def test_verify_detects_on_disk_corruption(env: Env, aws: MotoS3) -> None:
    bucket = aws.bucket()
    aws.put_tree(bucket, "m", {"1/model.py": b"pristine"})
    doc = model_doc(s3_source(aws, bucket, "m"))
    assert env.sync(doc).rc == 0
    published = env.repo / "m" / "1" / "model.py"
    published.write_bytes(b"PRISTINE")  # same size: only a digest can tell
    assert "already at revision" in env.sync(doc).err  # cheap check: sizes match
    result = env.sync(doc, "--verify")
    assert result.rc == 0, result.err
    assert "published revision damaged" in result.err and "sha256" in result.err
    assert published.read_bytes() == b"pristine"
    assert env.link().endswith(".1")  # a fresh directory; the damaged one was live


# --- HTTP ----------------------------------------------------------------------------------


@pytest.fixture
def http_published(env: Env, http_server: ModelHttpServer) -> tuple[dict[str, bytes], str]:
    url = http_server.add("/v1/model.py", b"print('v1')")
    result = env.sync(model_doc({"http": {"url": url, "sha256": sha(b"print('v1')")}}))
    assert result.rc == 0, result.err
    assert env.files()["1/model.py"] == b"print('v1')"
    return env.files(), env.link()


def test_http_file_with_path(env: Env, http_server: ModelHttpServer) -> None:
    body = os.urandom(300_000)
    url = http_server.add("/dl/weights.bin", body) + "?sig=SECRETSIG"
    source = {"http": {"url": url, "sha256": sha(body), "path": "3/model.onnx"}}
    result = env.sync(model_doc(source))
    assert result.rc == 0, result.err
    assert env.files()["3/model.onnx"] == body
    assert "SECRETSIG" not in result.err  # query strings (presigned URLs) are not logged


@pytest.mark.parametrize(
    ("route", "code", "messages"),
    [
        (
            {"body": b"print('v2')"},
            5,
            ["sha256 mismatch", "expected " + "0" * 64, "got " + sha(b"print('v2')")],
        ),
        (
            {"body": b"x" * 100_000, "truncate_at": 40_000},
            5,
            ["truncated transfer", "of 100000 bytes"],
        ),
        ({"body": b"", "status": 404}, 3, ["HTTP 404"]),
        ({"body": b"", "status": 403}, 4, ["HTTP 403"]),
        ({"body": b"", "status": 503}, 8, ["HTTP 503"]),
    ],
    ids=["wrong-sha256", "truncated", "404", "403", "503"],
)
def test_http_failures_leave_the_previous_version(
    env: Env,
    http_server: ModelHttpServer,
    http_published: tuple[dict[str, bytes], str],
    route: dict[str, Any],
    code: int,
    messages: list[str],
) -> None:
    before_files, before_link = http_published
    url = http_server.add("/v2/model.py", **route)
    source: dict[str, Any] = {"url": url}
    if code == 5 and "truncate_at" not in route:
        source["sha256"] = "0" * 64
    result = env.sync(model_doc({"http": source}))
    assert result.rc == code, result.err
    for message in messages:
        assert message in result.err
    assert env.link() == before_link
    assert env.files() == before_files
    assert env.staging_entries() == []


def test_http_archives_unpack(env: Env, http_server: ModelHttpServer) -> None:
    tgz = make_tar(
        [
            ("mymodel/", ("dir", None)),
            ("mymodel/config.pbtxt", b"ignored"),
            ("mymodel/1/model.py", b"one"),
            ("mymodel/2/model.py", b"two"),
            ("mymodel/2/alias.py", ("symlink", "model.py")),
            ("mymodel/2/copy.py", ("hardlink", "mymodel/2/model.py")),
            ("mymodel/labels.txt", b"a\nb\n"),
        ]
    )
    url = http_server.add("/m.tgz", tgz)
    result = env.sync(model_doc({"http": {"url": url, "sha256": sha(tgz), "archive": "tgz"}}))
    assert result.rc == 0, result.err
    assert "one top-level directory" in result.err
    files = env.files()
    assert files == {
        "config.pbtxt": files["config.pbtxt"],
        "2/model.py": b"two",
        "2/alias.py": b"->model.py",
        "2/copy.py": b"two",
        "labels.txt": b"a\nb\n",
    }
    assert (env.repo / "m" / "2" / "alias.py").read_bytes() == b"two"

    zipped = make_zip([("1/model.py", b"z1"), ("2/model.py", b"z2"), ("2/sub/x.bin", b"xx")])
    url = http_server.add("/m.zip", zipped)
    doc = model_doc({"http": {"url": url, "archive": "zip"}}, config=policy("all"))
    result = env.sync(doc)
    assert result.rc == 0, result.err
    assert {k: v for k, v in env.files().items() if k != "config.pbtxt"} == {
        "1/model.py": b"z1",
        "2/model.py": b"z2",
        "2/sub/x.bin": b"xx",
    }

    plain_tar = make_tar([("./", ("dir", None)), ("./1/model.py", b"t1")], gz=False)
    url = http_server.add("/m.tar", plain_tar)
    result = env.sync(model_doc({"http": {"url": url, "archive": "tar"}}))
    assert result.rc == 0, result.err
    assert env.files()["1/model.py"] == b"t1"


MALICIOUS: dict[str, tuple[str, bytes, str]] = {
    "dotdot": (
        "tgz",
        make_tar([("1/model.py", b"ok"), ("../../evil.py", b"x")]),
        "'../../evil.py'",
    ),
    "absolute": ("tgz", make_tar([("/tmp/evil.py", b"x")]), "'/tmp/evil.py'"),
    "symlink-out": (
        "tgz",
        make_tar([("1/model.py", b"ok"), ("1/leak", ("symlink", "../../../etc/passwd"))]),
        "'1/leak'",
    ),
    "symlink-abs": ("tgz", make_tar([("1/leak", ("symlink", "/etc/passwd"))]), "'1/leak'"),
    "hardlink-out": (
        "tgz",
        make_tar([("1/model.py", b"ok"), ("1/h", ("hardlink", "../../../etc/passwd"))]),
        "'1/h'",
    ),
    "device": (
        "tar",
        make_tar([("1/model.py", b"ok"), ("1/sda", ("chr", None))], gz=False),
        "'1/sda'",
    ),
    "through-symlink": (
        "tgz",
        make_tar(
            [("1/model.py", b"ok"), ("1/up", ("symlink", "..")), ("1/up/x", ("symlink", ".."))]
        ),
        "written through symlink 1/up",
    ),
    "zip-dotdot": ("zip", make_zip([("1/model.py", b"ok"), ("../evil.py", b"x")]), "'../evil.py'"),
    "zip-absolute": ("zip", make_zip([("/etc/cron.d/evil", b"x")]), "'/etc/cron.d/evil'"),
    "zip-symlink-out": (
        "zip",
        make_zip([("1/model.py", b"ok")], {"1/leak": "../../.."}),
        "'1/leak'",
    ),
    "zip-bomb": (
        "zip",
        make_zip([("1/model.py", b"ok"), ("1/zeros.bin", bytes(24 * 1024 * 1024))]),
        "'1/zeros.bin'",
    ),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_archives_are_refused(
    env: Env,
    http_server: ModelHttpServer,
    http_published: tuple[dict[str, bytes], str],
    case: str,
) -> None:
    before_files, before_link = http_published
    kind, data, member = MALICIOUS[case]
    url = http_server.add(f"/{case}.{kind}", data)
    result = env.sync(
        model_doc({"http": {"url": url, "archive": kind}}), "--max-extract-bytes", "16MiB"
    )
    assert result.rc == 6, result.err
    assert member in result.err
    assert env.link() == before_link
    assert env.files() == before_files
    assert env.staging_entries() == []
    assert not (env.tmp / "evil.py").exists()
    assert not (env.repo / "evil.py").exists()


def test_member_count_limit(env: Env, http_server: ModelHttpServer) -> None:
    data = make_tar([(f"1/f{i}", b"x") for i in range(20)])
    url = http_server.add("/many.tgz", data)
    result = env.sync(model_doc({"http": {"url": url, "archive": "tgz"}}), "--max-members", "10")
    assert result.rc == 6
    assert "more than 10 members" in result.err and "'1/f10'" in result.err


def test_an_archive_expanding_beyond_the_ratio_is_refused_by_default(
    env: Env, http_server: ModelHttpServer, http_published: tuple[dict[str, bytes], str]
) -> None:
    """A 100 KiB zip of 100 MiB of zeros (1000:1): refused at the default ratio 100
    once past the 64 MiB floor, without any flag, and nothing changes."""
    before = env.files(), env.link()
    data = make_zip(
        [("1/model.py", b"ok"), ("1/zeros.bin", bytes(100 * 1024 * 1024))], deflate=True
    )
    assert len(data) < 200 * 1024
    url = http_server.add("/bomb.zip", data)
    result = env.sync(model_doc({"http": {"url": url, "archive": "zip"}}))
    assert result.rc == 6, result.err
    assert "limit --max-expansion-ratio" in result.err and "'1/zeros.bin'" in result.err
    assert (env.files(), env.link()) == before
    assert env.staging_entries() == []
    # The same archive with the check turned off (and room for it) goes through.
    result = env.sync(
        model_doc({"http": {"url": url, "archive": "zip"}}), "--max-expansion-ratio", "0"
    )
    assert result.rc == 0, result.err


def test_a_zip_with_too_many_members_is_refused_from_its_end_record(
    env: Env, http_server: ModelHttpServer
) -> None:
    data = make_zip([(f"1/f{i}", b"") for i in range(3000)])
    url = http_server.add("/many.zip", data)
    result = env.sync(model_doc({"http": {"url": url, "archive": "zip"}}), "--max-members", "1000")
    assert result.rc == 6, result.err
    assert "declares 3000 members, more than 1000" in result.err


def test_a_download_over_the_size_limit_is_refused_with_or_without_a_length(
    env: Env, http_server: ModelHttpServer, http_published: tuple[dict[str, bytes], str]
) -> None:
    before = env.files(), env.link()
    body = os.urandom(3 * 1024 * 1024)
    for send_length in (True, False):
        url = http_server.add(f"/big-{send_length}.bin", body, send_length=send_length)
        doc = model_doc({"http": {"url": url, "path": "1/model.py"}})
        result = env.sync(doc, "--max-download-bytes", "1MiB")
        assert result.rc == 6, result.err
        assert "limit --max-download-bytes" in result.err
        assert (env.files(), env.link()) == before
        assert env.staging_entries() == []


def test_a_source_sending_more_than_its_length_publishes_exactly_its_length(
    env: Env, http_server: ModelHttpServer
) -> None:
    body = os.urandom(256 * 1024)
    url = http_server.add("/extra.bin", body, extra_bytes=b"TRAILING GARBAGE" * 1000)
    result = env.sync(model_doc({"http": {"url": url, "sha256": sha(body), "path": "1/model.py"}}))
    assert result.rc == 0, result.err
    assert env.files()["1/model.py"] == body
    without_digest = model_doc({"http": {"url": url, "path": "2/model.py"}})
    result = env.sync(without_digest)
    assert result.rc == 0, result.err
    assert env.files()["2/model.py"] == body


def test_a_member_name_too_long_for_any_filesystem_is_unsafe_not_a_disk_error(
    env: Env, http_server: ModelHttpServer
) -> None:
    data = make_tar([("1/model.py", b"ok"), ("1/" + "n" * 300, b"x")])
    url = http_server.add("/long.tgz", data)
    result = env.sync(model_doc({"http": {"url": url, "archive": "tgz"}}))
    assert result.rc == 6, result.err
    assert "longer than 255 bytes" in result.err


def test_rollback_republishes_without_fetching(env: Env, http_server: ModelHttpServer) -> None:
    url_a = http_server.add("/a.py", b"A")
    url_b = http_server.add("/b.py", b"B")
    doc_a = model_doc({"http": {"url": url_a, "path": "1/model.py"}})
    doc_b = model_doc({"http": {"url": url_b, "path": "1/model.py"}})
    assert env.sync(doc_a).rc == 0
    assert env.sync(doc_b).rc == 0
    assert env.files()["1/model.py"] == b"B"
    result = env.sync(doc_a)
    assert result.rc == 0, result.err
    assert "already staged" in result.err
    assert env.files()["1/model.py"] == b"A"
    assert http_server.hits("/a.py") == 1  # the kept previous revision was re-used


def test_rerun_of_an_unchanged_revision_touches_nothing(
    env: Env,
    http_server: ModelHttpServer,
) -> None:
    url = http_server.add("/m.py", b"same")
    doc = model_doc({"http": {"url": url, "sha256": sha(b"same"), "path": "1/model.py"}})
    assert env.sync(doc).rc == 0

    def stamps() -> dict[str, int]:
        out = {}
        for root in (env.repo, env.state / "revisions"):
            for dirpath, dirs, names in os.walk(root):
                for name in [*dirs, *names]:
                    path = Path(dirpath) / name
                    out[str(path)] = path.lstat().st_mtime_ns
        return out

    before = stamps()
    time.sleep(0.05)
    started = time.monotonic()
    result = env.sync(doc)
    assert result.rc == 0
    assert time.monotonic() - started < 2.0
    assert "already at revision" in result.err
    assert stamps() == before
    assert http_server.hits("/m.py") == 1


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _staged_bytes(env: Env) -> int:
    total = 0
    staging = env.state / "staging" / "m"
    if staging.exists():
        for dirpath, _dirs, names in os.walk(staging):
            total += sum((Path(dirpath) / n).stat().st_size for n in names)
    return total


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_interrupted_sync_leaves_the_previous_version(
    env: Env,
    http_server: ModelHttpServer,
    http_published: tuple[dict[str, bytes], str],
    sig: signal.Signals,
) -> None:
    before_files, before_link = http_published
    body = os.urandom(24 * 1024 * 1024)
    url = http_server.add("/slow/model.bin", body, rate=2_000_000)
    path = env.write(model_doc({"http": {"url": url, "sha256": sha(body), "path": "1/model.py"}}))
    proc = subprocess.Popen(
        sync_cmd("-f", str(path), "--repository", str(env.repo), "--progress-interval", "0.5"),
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: _staged_bytes(env) > 1_000_000, 60, "the download to start")
        # mid-download: Triton's view is still the previous revision, complete
        assert env.link() == before_link
        assert env.files() == before_files
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert env.link() == before_link
    assert env.files() == before_files
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert "sync interrupted" in err
        assert env.staging_entries() == []  # cleaned up on the way out
    else:
        assert proc.returncode == -signal.SIGKILL
        assert env.staging_entries() != []  # a kill -9 cannot clean up ...
        http_server.add("/slow/model.bin", body)  # ... the next sync does
        result = run(["-f", str(path), "--repository", str(env.repo)])
        assert result.rc == 0, result.err
        assert "removed leftovers of an interrupted sync" in result.err
        assert env.staging_entries() == []
        assert env.files()["1/model.py"] == body


# --- inline, PVC, removal, invalid -----------------------------------------------------------


def test_inline_source(env: Env) -> None:
    doc = model_doc({"inline": {"files": {"1/model.py": "one", "2/model.py": "two"}}})
    result = env.sync(doc)
    assert result.rc == 0, result.err
    assert set(env.files()) == {"config.pbtxt", "2/model.py"}  # default policy: latest 1


def test_pvc_source(env: Env) -> None:
    claim = env.tmp / "claim"
    (claim / "models" / "m" / "1").mkdir(parents=True)
    (claim / "models" / "m" / "1" / "model.onnx").write_bytes(b"onnx")
    (claim / "models" / "m" / "1" / "alias.onnx").symlink_to("model.onnx")
    (claim / "models" / "m" / "tok.json").write_text("{}")
    doc = model_doc({"pvc": {"claimName": "weights", "path": "/models/m"}})
    result = env.sync(doc, "--pvc-root", str(claim))
    assert result.rc == 0, result.err
    assert env.files() == {
        "config.pbtxt": env.files()["config.pbtxt"],
        "1/model.onnx": b"onnx",
        "1/alias.onnx": b"onnx",  # followed: it resolves inside the source dir
        "tok.json": b"{}",
    }

    (claim / "models" / "m" / "1" / "leak").symlink_to("/etc/passwd")
    result = env.sync(doc, "--pvc-root", str(claim), "--force")
    assert result.rc == 6 and "1/leak" in result.err

    missing = model_doc({"pvc": {"claimName": "weights", "path": "/nope"}})
    result = env.sync(missing, "--pvc-root", str(claim))
    assert result.rc == 3 and "is not a directory" in result.err
    assert env.files()["1/model.onnx"] == b"onnx"


def test_remove(env: Env) -> None:
    assert env.sync(model_doc({"inline": {"files": {"1/model.py": "x"}}})).rc == 0
    result = run(["--remove", "--model-name", "m", "--repository", str(env.repo)])
    assert result.rc == 0, result.err
    assert not (env.repo / "m").exists() and not (env.repo / "m").is_symlink()
    assert not (env.state / "revisions" / "m").exists()
    again = run(["--remove", "--model-name", "m", "--repository", str(env.repo)])
    assert again.rc == 0 and "nothing to remove" in again.err


def test_a_hand_made_model_directory_is_replaced_atomically(env: Env) -> None:
    (env.repo / "m" / "1").mkdir(parents=True)
    (env.repo / "m" / "1" / "model.py").write_text("hand-made")
    result = env.sync(model_doc({"inline": {"files": {"1/model.py": "synced"}}}))
    assert result.rc == 0, result.err
    assert (env.repo / "m").is_symlink()
    assert env.files()["1/model.py"] == b"synced"
    kept = [r for r in env.revisions() if r.startswith("unmanaged-")]
    assert kept and (env.state / "revisions" / "m" / kept[0] / "1" / "model.py").exists()


def test_invalid_model_is_refused_with_every_problem(env: Env) -> None:
    config = {
        "backend": "python",
        "maxBatchSize": 0,
        "inputs": [
            {"name": "x", "dataType": "TYPE_FP32", "dims": [4], "reshape": [3]},
            {"name": "x", "dataType": "TYPE_FP32", "dims": [1]},
        ],
    }
    result = env.sync(model_doc({"inline": {"files": {"1/model.py": "x"}}}, config=config))
    assert result.rc == 1
    assert "inputs[0].reshape" in result.err and "declared twice as required" in result.err
    assert not (env.repo / "m").exists()
    schema = model_doc({"inline": {"files": {"../x": "x"}}})
    result = env.sync(schema)
    assert result.rc == 1 and "relative path" in result.err


def test_a_url_without_a_file_name_needs_a_path(
    env: Env,
    http_server: ModelHttpServer,
) -> None:
    url = http_server.add("/dir/", b"x")
    result = env.sync(model_doc({"http": {"url": url}}))
    assert result.rc == 1 and "set spec.source.http.path" in result.err


def test_a_second_sync_of_the_same_model_waits_for_the_lock(env: Env) -> None:
    doc = model_doc({"inline": {"files": {"1/model.py": "x"}}})
    assert env.sync(doc).rc == 0
    lock = env.state / "locks" / "m.lock"
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        result = env.sync(doc, "--lock-timeout", "0.5")
    assert result.rc == 9 and "still holds" in result.err
    assert env.sync(doc).rc == 0  # released: the next one goes through


def test_usage_errors(env: Env) -> None:
    assert run(["--repository", str(env.repo)]).rc == 2
    assert run(["-f", str(env.tmp / "missing.yaml"), "--repository", str(env.repo)]).rc == 2
    assert run(["--remove", "--model-name", "../etc", "--repository", str(env.repo)]).rc == 2
    doc = model_doc({"inline": {"files": {"1/model.py": "x"}}})
    two = env.tmp / "two.yaml"
    two.write_text(yaml.safe_dump_all([doc, {**doc, "metadata": {"name": "n"}}]))
    result = run(["-f", str(two), "--repository", str(env.repo)])
    assert result.rc == 2 and "2 models found (m, n)" in result.err
    result = run(["-f", str(two), "--repository", str(env.repo), "--model-name", "n"])
    assert result.rc == 0, result.err
    assert (env.repo / "n").is_symlink()
    bad_revision = ["-f", str(two), "--repository", str(env.repo), "--model-name", "n"]
    assert run([*bad_revision, "--revision", "../../x"]).rc == 2
    result = run([*bad_revision, "--revision", "hand-picked_1"])
    assert result.rc == 0 and env.link("n").endswith("/hand-picked_1")


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs as the repository volume (root only: the machine's own mount)."""
    with tmpfs(tmp_path / "small", "size=8m") as mount:
        yield mount


def test_disk_full_is_reported_and_cleaned_up(
    small_volume: Path,
    http_server: ModelHttpServer,
    aws: MotoS3,
    tmp_path: Path,
) -> None:
    env = Env(tmp_path, small_volume / "repository")
    assert env.sync(model_doc({"inline": {"files": {"1/model.py": "small"}}})).rc == 0
    before = env.files(), env.link()
    big = os.urandom(12 * 1024 * 1024)
    url = http_server.add("/big.bin", big, send_length=False)
    result = env.sync(model_doc({"http": {"url": url, "path": "1/model.py"}}))
    assert result.rc == 7, result.err
    assert "disk full" in result.err
    assert (env.files(), env.link()) == before
    assert env.staging_entries() == []

    bucket = aws.bucket()  # S3 knows sizes up front: refused before downloading
    aws.put_tree(bucket, "m", {"1/model.py": big})
    result = env.sync(model_doc(s3_source(aws, bucket, "m")))
    assert result.rc == 7 and "the model needs 12.0 MiB" in result.err
    assert (env.files(), env.link()) == before


def test_repository_at_the_root_of_its_volume_keeps_state_inside(small_volume: Path) -> None:
    # How the operator's Jobs mount the claim today: the volume *is* the repository.
    env = Env(small_volume.parent, small_volume)
    result = env.sync(model_doc({"inline": {"files": {"1/model.py": "x"}}}))
    assert result.rc == 0, result.err
    assert "state directory is inside the repository" in result.err
    (revision,) = (small_volume / ".tritonfleet" / "revisions" / "m").iterdir()
    assert env.link() == f".tritonfleet/revisions/m/{revision.name}"
    assert env.files()["1/model.py"] == b"x"


# --- a real tritonserver loads what sync publishes ---------------------------------------------


def test_triton_loads_the_published_layout_and_reloads_new_revisions(
    env: Env, triton_factory: Callable[..., TritonProcess]
) -> None:
    def doc(factor: int) -> dict[str, Any]:
        files = {"1/model.py": echo_model_py(factor)}
        return model_doc({"inline": {"files": files}}, name="echo", config=ECHO_CONFIG)

    assert env.sync(doc(2)).rc == 0
    triton = triton_factory(env.repo, load_models=["echo"])
    triton.wait_model_ready("echo")
    assert infer_echo(triton) == [2.0, 4.0, 6.0]

    result = env.sync(doc(3))
    assert result.rc == 0, result.err
    assert len(env.revisions("echo")) == 2  # the new one and the previous, beside the repo
    names = sorted(entry["name"] for entry in triton.index())
    assert names == ["echo"]  # no state, staging or revision directory is a model
    assert infer_echo(triton) == [2.0, 4.0, 6.0]  # Triton serves what it loaded until told
    status, body = triton.load("echo")
    assert status == 200, body
    triton.wait_model_ready("echo")
    assert infer_echo(triton) == [3.0, 6.0, 9.0]


def test_an_ensemble_is_published_after_its_members(env: Env) -> None:
    """The ensemble's config is checked against the members given with it and
    published with the empty version directory Triton requires."""
    runnable = Path(__file__).resolve().parents[2] / "manifests" / "samples" / "runnable"
    result = run(["-f", str(runnable), "--all", "--repository", str(env.repo)])
    assert result.rc == 0, result.err
    published = [line.split(":")[0] for line in result.out.splitlines()]
    assert published.index("toy_rag") > published.index("toy_llm")
    assert (env.repo / "toy_rag" / "1").is_dir()
    config = (env.repo / "toy_rag" / "config.pbtxt").read_text()
    assert 'platform: "ensemble"' in config
    assert "tritonfleet.revision" in config
    # Alone, the ensemble cannot be checked, so it is refused and nothing is published.
    alone = run(
        [
            "-f",
            str(runnable / "toy-rag.yaml"),
            "--model-name",
            "toy-rag",
            "--repository",
            str(env.tmp / "other"),
        ]
    )
    assert alone.rc == 1
    assert "TritonModel 'toy-llm' not found" in alone.err
    assert not (env.tmp / "other" / "toy_rag").exists()
