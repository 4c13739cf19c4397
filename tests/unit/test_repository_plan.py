"""The pure plan behind ``tritonfleet sync``: path safety, version policy, layout, manifest."""

from __future__ import annotations

import posixpath
from pathlib import PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tritonfleet.api.model import ModelConfigSpec
from tritonfleet.desired.triton.config import render_config
from tritonfleet.desired.triton.repository import (
    CONFIG_NAME,
    MANIFEST_NAME,
    ROOT,
    ExtractionLimits,
    FileEntry,
    Manifest,
    MemberKind,
    Policy,
    RepositoryLayout,
    UnsafeMember,
    check_member,
    default_state_dir,
    plan_versions,
    policy_from_config,
    relative_path,
    revision_dirname,
    revisions_to_collect,
    safe_relative_path,
    select_files,
    strip_single_root,
    symlink_destination,
    version_of,
    wanted,
)

P = PurePosixPath

# --- path safety ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("config.pbtxt", "config.pbtxt"),
        ("1/model.onnx", "1/model.onnx"),
        ("./1/model.py", "1/model.py"),
        ("1//a/./b", "1/a/b"),
        ("1/", "1"),
        ("tokenizer/vocab.json", "tokenizer/vocab.json"),
        ("..data", "..data"),  # a name starting with dots is not a parent reference
        ("a/...", "a/..."),
    ],
)
def test_safe_relative_path_accepts(name: str, expected: str) -> None:
    assert safe_relative_path(name) == P(expected)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("//server/share", "absolute"),
        ("C:/Windows/x", "absolute"),
        ("c:evil", "absolute"),
        ("../x", "'..'"),
        ("1/../../x", "'..'"),
        ("1/..", "'..'"),
        ("..", "'..'"),
        ("a\\..\\..\\x", "backslash"),
        ("a\0b", "NUL"),
        (".", "model directory itself"),
        ("./", "model directory itself"),
    ],
)
def test_safe_relative_path_refuses(name: str, reason: str) -> None:
    with pytest.raises(UnsafeMember, match=reason) as info:
        safe_relative_path(name)
    assert info.value.member == name


@given(st.text(alphabet=st.sampled_from(list("ab./\\\0:C")), max_size=24))
def test_safe_relative_path_never_escapes(name: str) -> None:
    try:
        path = safe_relative_path(name)
    except UnsafeMember:
        return
    assert not path.is_absolute()
    assert all(part not in ("", ".", "..") for part in path.parts)
    joined = posixpath.normpath(posixpath.join("/model", str(path)))
    assert joined.startswith("/model/")


@pytest.mark.parametrize(
    ("member", "target", "lands"),
    [
        ("1/link", "model.onnx", "1/model.onnx"),
        ("1/link", "../2/model.onnx", "2/model.onnx"),
        ("1/a/link", "../../config.pbtxt", "config.pbtxt"),
        ("link", ".", "."),
        ("1/link", "..", "."),
    ],
)
def test_symlink_destination_inside(member: str, target: str, lands: str) -> None:
    assert symlink_destination(P(member), target) == P(lands)


@pytest.mark.parametrize(
    ("member", "target"),
    [
        ("link", ".."),
        ("1/link", "../.."),
        ("1/link", "../../etc/passwd"),
        ("link", "/etc/passwd"),
        ("link", ""),
        ("a/b/link", "../../../x"),
        ("link", "..\\x"),
    ],
)
def test_symlink_destination_outside_is_refused(member: str, target: str) -> None:
    with pytest.raises(UnsafeMember):
        symlink_destination(P(member), target)


@given(
    st.lists(st.sampled_from(["a", "b", ".", ".."]), min_size=1, max_size=5),
    st.lists(st.sampled_from(["a", "b", ".", "..", ""]), min_size=1, max_size=6),
)
def test_symlink_destination_matches_lexical_resolution(
    member_parts: list[str], target_parts: list[str]
) -> None:
    try:
        member = safe_relative_path("/".join(member_parts))
    except UnsafeMember:
        return
    target = "/".join(target_parts)
    resolved = posixpath.normpath(posixpath.join("/m", str(member.parent), target))
    inside = resolved == "/m" or resolved.startswith("/m/")
    if not target:
        inside = False
    try:
        lands = symlink_destination(member, target)
    except UnsafeMember:
        assert not inside
        return
    assert inside
    assert posixpath.normpath(posixpath.join("/m", str(lands))) == resolved


@pytest.mark.parametrize(
    ("name", "kind", "link", "problem"),
    [
        ("dev/sda", MemberKind.SPECIAL, None, "device"),
        ("1/fifo", MemberKind.SPECIAL, None, "device"),
        ("../evil", MemberKind.FILE, None, "'..'"),
        ("/abs", MemberKind.FILE, None, "absolute"),
        ("1/link", MemberKind.SYMLINK, "/etc/passwd", "absolute"),
        ("1/link", MemberKind.SYMLINK, "../../outside", "outside"),
        ("1/hard", MemberKind.HARDLINK, "../../etc/passwd", "hard link"),
        ("1/hard", MemberKind.HARDLINK, "/etc/passwd", "hard link"),
    ],
)
def test_check_member_refuses(name: str, kind: MemberKind, link: str | None, problem: str) -> None:
    with pytest.raises(UnsafeMember, match=problem) as info:
        check_member(name, kind, link)
    assert info.value.member == name


@pytest.mark.parametrize(
    ("name", "kind", "link", "path"),
    [
        ("./", MemberKind.DIR, None, ROOT),
        (".", MemberKind.DIR, None, ROOT),
        ("1/", MemberKind.DIR, None, P("1")),
        ("1/model.py", MemberKind.FILE, None, P("1/model.py")),
        ("1/latest", MemberKind.SYMLINK, "model.py", P("1/latest")),
        ("2/model.py", MemberKind.HARDLINK, "1/model.py", P("2/model.py")),
    ],
)
def test_check_member_accepts(
    name: str, kind: MemberKind, link: str | None, path: PurePosixPath
) -> None:
    assert check_member(name, kind, link) == path


@pytest.mark.parametrize(
    ("paths", "root"),
    [
        (["mymodel", "mymodel/config.pbtxt", "mymodel/1/model.py"], "mymodel"),
        (["mymodel/1/model.py"], "mymodel"),
        (["1/model.py", "1"], None),  # a lone version folder is not a wrapper
        (["config.pbtxt", "1/model.py"], None),
        (["a/1/x", "b/1/x"], None),
        (["model.onnx"], None),
        ([], None),
    ],
)
def test_strip_single_root(paths: list[str], root: str | None) -> None:
    assert strip_single_root(P(p) for p in paths) == (P(root) if root else None)


def test_extraction_limits() -> None:
    limits = ExtractionLimits(max_bytes=1000, max_members=3)
    assert limits.check(3, 1000) is None
    assert "members" in (limits.check(4, 0) or "")
    assert "unpacked" in (limits.check(1, 1001) or "")
    assert ExtractionLimits().max_bytes == 200 * 1024**3
    assert ExtractionLimits().max_members == 100_000


# --- version policy -------------------------------------------------------------------


def _pbtxt(**config: object) -> str:
    spec = ModelConfigSpec.model_validate({"backend": "python", **config})
    text, problems = render_config("m", spec)
    assert not problems
    return text


@pytest.mark.parametrize(
    ("config", "policy"),
    [
        ({}, Policy("latest", 1)),
        ({"versionPolicy": {"latest": {"numVersions": 3}}}, Policy("latest", 3)),
        ({"versionPolicy": {"all": {}}}, Policy("all")),
        (
            {"versionPolicy": {"specific": {"versions": [3, 1, 3]}}},
            Policy("specific", versions=(1, 3)),
        ),
        ({"extra": "version_policy { all { } }"}, Policy("all")),
        (
            {"extra": "version_policy { specific { versions: [2] } }"},
            Policy("specific", versions=(2,)),
        ),
    ],
)
def test_policy_from_rendered_config(config: dict[str, object], policy: Policy) -> None:
    assert policy_from_config(_pbtxt(**config)) == policy


@pytest.mark.parametrize(
    ("policy", "available", "keep", "drop", "missing"),
    [
        (Policy("latest", 1), [1, 2, 3], (3,), (1, 2), ()),
        (Policy("latest", 2), [3, 1, 2], (2, 3), (1,), ()),
        (Policy("latest", 5), [1, 2], (1, 2), (), ()),
        (Policy("latest", 1), [], (), (), ()),
        (Policy("all"), [2, 10, 1], (1, 2, 10), (), ()),
        (Policy("specific", versions=(1, 3)), [1, 2, 3], (1, 3), (2,), ()),
        (Policy("specific", versions=(1, 5)), [1, 2], (1,), (2,), (5,)),
        (Policy("latest", 1), [9, 10], (10,), (9,), ()),  # numeric, not lexical, order
    ],
)
def test_plan_versions(
    policy: Policy,
    available: list[int],
    keep: tuple[int, ...],
    drop: tuple[int, ...],
    missing: tuple[int, ...],
) -> None:
    plan = plan_versions(policy, available)
    assert (plan.keep, plan.drop, plan.missing) == (keep, drop, missing)


policies = st.one_of(
    st.builds(lambda n: Policy("latest", n), st.integers(1, 5)),
    st.just(Policy("all")),
    st.builds(
        lambda vs: Policy("specific", versions=tuple(sorted(vs))),
        st.sets(st.integers(1, 12), min_size=1, max_size=5),
    ),
)


@given(policies, st.sets(st.integers(1, 12), max_size=8))
def test_plan_versions_properties(policy: Policy, available: set[int]) -> None:
    plan = plan_versions(policy, available)
    assert set(plan.keep) | set(plan.drop) == available
    assert not set(plan.keep) & set(plan.drop)
    if policy.kind == "latest":
        assert len(plan.keep) == min(policy.num_versions, len(available))
        assert all(k > d for k in plan.keep for d in plan.drop)
    if policy.kind == "all":
        assert plan.drop == ()
    if policy.kind == "specific":
        assert set(plan.keep) | set(plan.missing) == set(policy.versions)


def test_select_files_applies_policy_and_keeps_the_rest() -> None:
    listing = [
        P(CONFIG_NAME),
        P(MANIFEST_NAME),
        P("labels.txt"),
        P("1/model.onnx"),
        P("2/model.onnx"),
        P("2/extra/weights.bin"),
        P("notes/readme.md"),
    ]
    selection = select_files(listing, Policy("latest", 1))
    assert selection.source_config
    assert selection.ignored == (P(MANIFEST_NAME),)
    assert selection.fetch == (
        P("labels.txt"),
        P("2/model.onnx"),
        P("2/extra/weights.bin"),
        P("notes/readme.md"),
    )
    assert selection.plan.keep == (2,)
    assert selection.plan.drop == (1,)


def test_wanted_and_version_of() -> None:
    plan = plan_versions(Policy("latest", 1), [1, 2])
    assert wanted(P("2"), plan)
    assert wanted(P("2/a"), plan)
    assert not wanted(P("1"), plan)
    assert not wanted(P("1/a"), plan)
    assert not wanted(P(CONFIG_NAME), plan)
    assert wanted(P("labels.txt"), plan)
    assert version_of(P("12/x")) == 12
    assert version_of(P("12")) is None  # a bare folder name is not a file in a version
    assert version_of(P("v1/x")) is None


# --- layout ---------------------------------------------------------------------------


def test_default_layout_puts_state_beside_the_repository() -> None:
    layout = RepositoryLayout.for_repository(P("/pv/models"))
    assert layout.state == P("/pv/.tritonfleet/models") == default_state_dir(P("/pv/models"))
    assert not layout.state_inside_repository
    assert layout.model_path("echo") == P("/pv/models/echo")
    assert layout.revision_dir("echo", "abc") == P("/pv/.tritonfleet/models/revisions/echo/abc")
    assert layout.staging_dir("echo") == P("/pv/.tritonfleet/models/staging/echo")
    assert layout.lock_path("echo") == P("/pv/.tritonfleet/models/locks/echo.lock")
    assert layout.tmp_dir == P("/pv/.tritonfleet/models/tmp")
    # relative, so it resolves wherever the volume is mounted
    assert layout.link_target("echo", "abc") == P("../.tritonfleet/models/revisions/echo/abc")


def test_link_target_resolves_to_revision_dir() -> None:
    for repo, state in [
        ("/pv/models", None),
        ("/a/b/repo", "/a/state"),
        ("/x/repo", "/x/repo/.tf"),
        ("/x/repo", "/y/z/state"),
    ]:
        layout = RepositoryLayout.for_repository(P(repo), P(state) if state else None)
        link = layout.link_target("m", "r1")
        resolved = posixpath.normpath(posixpath.join(repo, str(link)))
        assert resolved == str(layout.revision_dir("m", "r1"))
        assert layout.revision_from_link("m", str(link)) == "r1"


def test_revision_from_link_rejects_foreign_links() -> None:
    layout = RepositoryLayout.for_repository(P("/pv/models"))
    assert layout.revision_from_link("m", "/somewhere/else") is None
    assert layout.revision_from_link("m", "../.tritonfleet/models/revisions/other/r1") is None
    assert layout.revision_from_link("m", "r1") is None


def test_state_inside_repository_is_detected() -> None:
    assert RepositoryLayout.for_repository(P("/r"), P("/r/.tf")).state_inside_repository
    assert RepositoryLayout.for_repository(P("/r"), P("/r/a/b")).state_inside_repository
    assert not RepositoryLayout.for_repository(P("/r"), P("/rr")).state_inside_repository


def test_layout_needs_absolute_paths_and_a_parent() -> None:
    with pytest.raises(ValueError, match="absolute"):
        RepositoryLayout.for_repository(P("models"))
    with pytest.raises(ValueError, match="root"):
        RepositoryLayout.for_repository(P("/"))


@given(
    st.lists(st.sampled_from(["a", "b", "c"]), max_size=4),
    st.lists(st.sampled_from(["a", "b", "c"]), max_size=4),
)
def test_relative_path_property(target: list[str], start: list[str]) -> None:
    t, s = P("/", *target), P("/", *start)
    rel = relative_path(t, s)
    assert posixpath.normpath(posixpath.join(str(s), str(rel))) == str(t)


def test_revision_dirnames_and_collection() -> None:
    assert revision_dirname("abc", []) == "abc"
    assert revision_dirname("abc", ["abc"]) == "abc.1"
    assert revision_dirname("abc", ["abc", "abc.1", "abc.2"]) == "abc.3"
    names = ["r1", "r2", "r3", "unmanaged-1"]
    assert revisions_to_collect(names, live="r3", previous="r2") == ["r1", "unmanaged-1"]
    assert revisions_to_collect(names, live="r3", previous=None) == ["r1", "r2", "unmanaged-1"]


# --- manifest -------------------------------------------------------------------------


def test_manifest_round_trip() -> None:
    manifest = Manifest(
        model="echo",
        revision="abc",
        source="s3",
        files={
            "config.pbtxt": FileEntry(10, "a" * 64),
            "1/model.onnx": FileEntry(5, "b" * 64, fingerprint="s3:k:5:etag"),
            "1/latest": FileEntry(0, "", kind="symlink", target="model.onnx"),
        },
        created="2024-01-01T00:00:00+00:00",
        versions=(1,),
        dropped_versions=(0,),
        source_fingerprint="http:sha256=x:tgz",
    )
    again = Manifest.from_json(manifest.to_json())
    assert again == manifest
    assert again.total_bytes == 15
    assert list(Manifest.from_json(manifest.to_json()).files) == sorted(manifest.files)


@pytest.mark.parametrize(
    "text",
    [
        '{"format": 2}',
        "[]",
        '{"format": 1, "model": "m", "revision": "r", "source": "s", '
        '"files": {"a": {"size": 1, "sha256": "x", "kind": "device"}}}',
    ],
)
def test_manifest_refuses_unknown_formats(text: str) -> None:
    with pytest.raises(ValueError):
        Manifest.from_json(text)
