"""The operator image's Dockerfile, parsed (no Docker engine is needed to check this;
none runs where these tests run, so the image itself is not built here)."""

from __future__ import annotations

import re

from tests.conftest import ROOT

COMPILERS = ("build-essential", "gcc", "g++", "clang", "make", "cc ", "python3-dev")


def stages() -> list[list[str]]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out: list[list[str]] = [[]]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append([])
        out[-1].append(line)
    return [s for s in out[1:]]


def args() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text()
    return dict(re.findall(r"^ARG (\w+)=(\S+)", text, flags=re.M))


def test_dockerfile_is_multi_stage_on_a_pinned_python_311_slim() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    for stage in all_stages:
        base = stage[0].split()[1]
        base = args().get(base.strip("${}"), base)
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base


def test_final_stage_runs_as_a_non_root_user() -> None:
    final = stages()[-1]
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    if user.isdigit():
        assert int(user) >= 1000  # the chart's pod securityContext uses 10001


def test_final_stage_installs_no_build_tools_and_copies_only_the_environment() -> None:
    final = stages()[-1]
    for line in final:
        assert not any(tool in line for tool in COMPILERS), line
        assert "apt-get install" not in line and "pip install" not in line, line
    copies = [line for line in final if line.upper().startswith("COPY ")]
    assert copies and all("--from=build" in line for line in copies)
    build = stages()[0]
    assert any("build-essential" in line for line in build)  # so the check above can fail


def test_image_runs_the_operator_by_default() -> None:
    final = stages()[-1]
    assert 'ENTRYPOINT ["kurable"]' in final
    assert any(line.startswith("CMD") and '"operator"' in line for line in final)


def test_the_image_carries_no_cryptography_only_the_testing_extra_does() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = [d.split(">")[0].split("=")[0].strip() for d in project["dependencies"]]
    assert "cryptography" not in runtime
    extras = project["optional-dependencies"]
    assert any(d.startswith("cryptography") for d in extras["testing"])
    assert "kurable[testing]" in extras["dev"]
    importers = [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "operator/kurable").rglob("*.py")
        if re.search(r"^\s*(from|import) cryptography", path.read_text(), re.M)
        and "/testing/" not in path.as_posix()
    ]
    assert importers == [], "only kurable.testing may import cryptography"
