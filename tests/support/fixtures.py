"""pytest fixtures for the real components the suite runs against.

The components themselves are dev tooling in ``hack/devtools`` (the demo and the
benchmarks use them too); this module only gives them pytest lifetimes. Each
fixture builds or starts its component on first use and fails, never skips, when
it cannot. Imports of the heavier tooling (boto3 for moto, the pod runner) happen
inside the fixtures, so a unit-test run loads none of it.

Loaded by the root ``tests/conftest.py``, which also marks every test with the
real components its fixtures reach (``testbed``, ``triton``, ``s3``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from hack.devtools.testbed import Sessions, Testbed, TestbedError, start, stop

if TYPE_CHECKING:
    from hack.devtools.http_server import ModelHttpServer
    from hack.devtools.operator import OperatorProcess
    from hack.devtools.pod_runner import PodRunner
    from hack.devtools.s3 import MotoS3
    from hack.devtools.triton import TritonProcess


# ------------------------------------------------------------------------- terminal


def _terminal_writer(config: pytest.Config) -> Callable[[str], None]:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:

        def write(line: str) -> None:
            reporter.write_line(line)

        return write

    def write_stderr(line: str) -> None:
        print(line, file=sys.__stderr__, flush=True)

    return write_stderr


@contextlib.contextmanager
def _uncaptured(config: pytest.Config) -> Iterator[None]:
    """Suspend pytest's output capturing so progress reaches the terminal."""
    capman = config.pluginmanager.get_plugin("capturemanager")
    if capman is None:
        yield
        return
    with capman.global_and_fixture_disabled():
        yield


# ------------------------------------------------------------------------- testbed


@pytest.fixture(scope="session")
def testbed(request: pytest.FixtureRequest) -> Iterator[Testbed]:
    """A running testbed for the whole session.

    Reuses a healthy running testbed (and then leaves it running); otherwise
    runs hack/testbed/up.sh (which builds what is missing) and, at the end of the
    session, hack/testbed/down.sh unless another live pytest session is using it.
    With TRITONFLEET_TESTBED_REUSE=1 the testbed is never torn down.
    A failed build or start fails the tests that use it; it never skips them.
    """
    write = _terminal_writer(request.config)
    reuse = os.environ.get("TRITONFLEET_TESTBED_REUSE", "") not in ("", "0", "false", "no")
    candidate = Testbed.from_environment()
    sessions = Sessions(candidate)
    sessions.register()  # before the health check: an owner finishing now sees us
    if candidate.is_healthy():
        with _uncaptured(request.config):
            write("")
            write(
                f"[testbed] reusing the running testbed ({candidate.kubeconfig}); "
                "it is left running"
            )
        try:
            yield candidate
        finally:
            sessions.unregister()
        return
    error = ""
    try:
        with _uncaptured(request.config):
            write("")
            write("[testbed] starting the Kubernetes testbed (hack/testbed/up.sh)...")
            bed = start(write)
    except TestbedError as exc:
        error = str(exc)
    except OSError as exc:
        error = f"could not run hack/testbed/up.sh: {exc}"
    if error:
        sessions.unregister()
        pytest.fail(error, pytrace=False)
    try:
        yield bed
    finally:
        sessions.unregister()
        with _uncaptured(request.config):
            write("")
            others = sessions.others()
            if reuse:
                write(
                    "[testbed] TRITONFLEET_TESTBED_REUSE set: leaving the testbed running "
                    f"(stop it with hack/testbed/down.sh); kubeconfig {bed.kubeconfig}"
                )
            elif others:
                write(
                    f"[testbed] pytest session(s) {others} still use the testbed: leaving it "
                    "running (stop it with hack/testbed/down.sh)"
                )
            else:
                stop(write)


@pytest.fixture(scope="session")
def tritonfleet_image(request: pytest.FixtureRequest) -> str:
    """The image built from this checkout's Dockerfile (hack/image/build.sh, podman):
    its reference. Built on first use, cached by a hash of its inputs; fails, never
    skips, when it cannot be built."""
    from hack.devtools.image import ImageError, ensure_image

    try:
        with _uncaptured(request.config):
            return ensure_image()
    except ImageError as err:
        pytest.fail(f"the tritonfleet image could not be built: {err}", pytrace=False)


@pytest.fixture
def pod_runner(testbed: Testbed, tritonfleet_image: str) -> Iterator[PodRunner]:
    """A running PodRunner on the session testbed: Triton pods as local tritonserver
    processes, the project's pods as containers of ``tritonfleet_image``."""
    from hack.devtools.pod_runner import PodRunner

    runner = PodRunner(
        testbed.kubeconfig, testbed.state_dir, project_image=tritonfleet_image
    ).start()
    try:
        yield runner
    finally:
        runner.stop()


# ------------------------------------------------------------------------- operator


@pytest.fixture(scope="session")
def crds(testbed: Testbed) -> None:
    """The generated CRDs (crds/) applied once and Established."""
    from hack.devtools.operator import apply_crds

    apply_crds(testbed)


@pytest.fixture(scope="module")
def operator_process(
    testbed: Testbed, crds: None, request: pytest.FixtureRequest
) -> Iterator[OperatorProcess]:
    """An operator watching ``op<id>-*`` namespaces for the whole test module.

    A module sets ``OPERATOR_ENV`` (a dict) to give the operator extra settings.
    """
    from hack.devtools.operator import OperatorProcess

    prefix = f"op{uuid.uuid4().hex[:4]}"
    env = getattr(request.module, "OPERATOR_ENV", {})
    proc = OperatorProcess(
        testbed, [f"{prefix}-*"], env={"TRITONFLEET_RECONCILE_INTERVAL_SECONDS": "5", **env}
    )
    proc.prefix = prefix
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        if os.environ.get("TRITONFLEET_KEEP_LOGS") is None:
            with contextlib.suppress(OSError):
                proc.log_path.unlink()


@pytest.fixture
def ns(testbed: Testbed, operator_process: OperatorProcess) -> Iterator[str]:
    """A fresh namespace the module's operator watches; its models are deleted (and
    released by the operator) before the namespace goes."""
    from hack.devtools.operator import delete_models

    with testbed.namespace(operator_process.prefix) as name:
        yield name
        delete_models(testbed, name)  # while the operator runs: finalizers released
    testbed.recycle_volumes()


# ------------------------------------------------------------------------- prometheus


@pytest.fixture(scope="session")
def prometheus_binary() -> Path:
    """The real Prometheus server's binary; built on first use. Fails (never skips)."""
    from hack.devtools.prometheus import PrometheusInstallError, ensure_prometheus

    try:
        return ensure_prometheus()
    except PrometheusInstallError as err:
        pytest.fail(f"prometheus is not available: {err}", pytrace=False)


# ------------------------------------------------------------------------- triton


@pytest.fixture(scope="session")
def triton_launcher() -> Path:
    """Path of the tritonserver launcher; installs it on first use. Fails (never skips)."""
    from hack.devtools.triton import TritonInstallError, ensure_triton

    try:
        return ensure_triton()
    except TritonInstallError as err:
        pytest.fail(f"tritonserver is not available: {err}", pytrace=False)


@pytest.fixture
def triton_model_repo(tmp_path: Path) -> Path:
    """A fresh copy of hack/devtools/triton_models for this test."""
    from hack.devtools.triton import copy_model_repository

    return copy_model_repository(tmp_path / "model_repository")


@pytest.fixture
def triton_factory(triton_launcher: Path, tmp_path: Path) -> Iterable[Callable[..., TritonProcess]]:
    """factory(model_repository, **TritonProcess.start kwargs) -> started TritonProcess;
    every process started through it is stopped at teardown."""
    from hack.devtools.triton import TritonProcess

    started: list[TritonProcess] = []

    def factory(model_repository: Path | str, **kwargs: Any) -> TritonProcess:
        proc = TritonProcess(triton_launcher, log_dir=tmp_path / "triton-logs")
        started.append(proc)
        return proc.start(model_repository, **kwargs)

    yield factory
    for proc in started:
        try:
            proc.stop(timeout=15)
        except Exception:
            proc.kill()


# ------------------------------------------------------------------------- sources


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoS3]:
    """moto's S3 server with auth enforced; stopped at the end of the session."""
    from hack.devtools.s3 import start_moto

    server = start_moto()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def http_server() -> Iterator[ModelHttpServer]:
    """A local HTTP(S)-like file server for the sync's HTTP source."""
    from hack.devtools.http_server import ModelHttpServer

    server = ModelHttpServer()
    try:
        yield server
    finally:
        server.stop()
