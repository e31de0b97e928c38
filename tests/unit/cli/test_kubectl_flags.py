"""kubectl's flags on every command: `--kubeconfig`, `--context`, `-n`, `-o json|yaml`."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kurable.cli import _commands, build_parser
from kurable.cli._kube import use_kubectl_flags
from kurable.cli._output import print_rows

NO_CLUSTER = {"dev", "completion", "crds", "etcd-auth", "etcd-snapshot"}
"""Commands that talk to no cluster of yours: no kubectl flags."""
NO_DATA = {"operator", "endpoint", "watch"}
"""Commands that print no data: servers, a stream of progress lines."""


def commands() -> dict[str, argparse.ArgumentParser]:
    root = build_parser()
    return {p.prog.removeprefix("kurable "): p for p in _commands(root) if p is not root}


def test_every_command_that_talks_to_a_cluster_has_kubeconfig_and_context() -> None:
    found = commands()
    assert {"schedule trigger", "schedule backfill", "watch", "command", "history"} <= set(found)
    for name, command in found.items():
        flags = command._option_string_actions
        for flag in ("--kubeconfig", "--context"):
            assert (flag in flags) == (name not in NO_CLUSTER), f"kurable {name}: {flag}"


def test_every_namespaced_command_has_n() -> None:
    for name, command in commands().items():
        if name not in NO_CLUSTER and name != "endpoint":  # the endpoint serves them all
            assert "-n" in command._option_string_actions, f"kurable {name} has no -n"


def test_commands_that_print_data_take_o_json_or_yaml_and_the_others_do_not() -> None:
    for name, command in commands().items():
        flags = command._option_string_actions
        if name in NO_DATA | NO_CLUSTER:
            assert "-o" not in flags or name == "crds", f"kurable {name} prints no data"
        elif name in ("history", "query"):  # a table by default
            assert set(flags["-o"].choices or ()) == {"table", "json", "yaml"}, name
        else:
            assert set(flags["-o"].choices or ()) == {"json", "yaml"}, name


def test_a_command_added_later_gets_the_flags_too() -> None:
    from kurable.cli import add_kubectl_flags

    parser = argparse.ArgumentParser(prog="kurable")
    sub = parser.add_subparsers()
    sub.add_parser("publish")
    add_kubectl_flags(parser)
    args = parser.parse_args(["publish", "--context", "c", "-n", "ns", "-o", "yaml"])
    assert (args.context, args.namespace, args.output) == ("c", "ns", "yaml")


def test_rows_print_as_a_table_or_as_json_and_yaml_objects(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = [("started", "nightly-1", "tick 1")]
    print_rows(argparse.Namespace(output=None), ("RESULT", "RUN", "COMMAND ID"), rows)
    assert capsys.readouterr().out.splitlines()[0].split() == ["RESULT", "RUN", "COMMAND", "ID"]
    print_rows(argparse.Namespace(output="json"), ("RESULT", "RUN", "COMMAND ID"), rows)
    assert json.loads(capsys.readouterr().out) == [
        {"result": "started", "run": "nightly-1", "commandId": "tick 1"}
    ]
    print_rows(argparse.Namespace(output="yaml"), ("RESULT", "RUN", "COMMAND ID"), rows)
    assert capsys.readouterr().out.startswith("- result: started\n  run: nightly-1\n")


KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "current-context": "one",
    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
    "contexts": [
        {"name": "one", "context": {"cluster": "c", "user": "u", "namespace": "ns-one"}},
        {"name": "two", "context": {"cluster": "c", "user": "u", "namespace": "ns-two"}},
    ],
}

PROBE = """
import json, sys
from kurable.cli import build_parser
from kurable.cli._kube import use_kubectl_flags
use_kubectl_flags(build_parser().parse_args(sys.argv[1:]))
from kubernetes import config  # reads $KUBECONFIG at import, as `kurable` does: after
_, active = config.list_kube_config_contexts()
print(json.dumps(active["context"]["namespace"]))
"""


@pytest.mark.parametrize(("flags", "namespace"), [([], "ns-one"), (["--context", "two"], "ns-two")])
def test_context_chooses_the_kubeconfig_context_for_the_python_clients(
    tmp_path: Path, flags: list[str], namespace: str
) -> None:
    path = tmp_path / "config"
    path.write_text(json.dumps(KUBECONFIG))
    argv = ["watch", "workflow/x", "--kubeconfig", str(path), *flags]
    env = {**os.environ, "KUBECONFIG": "/nonexistent"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env, check=True
    )
    assert json.loads(result.stdout) == namespace


def test_context_chooses_it_for_kubectl_and_kopf_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config"
    path.write_text(json.dumps(KUBECONFIG))
    monkeypatch.setenv("KUBECONFIG", str(path))
    use_kubectl_flags(argparse.Namespace(kubeconfig=None, context="two"))
    first = os.environ["KUBECONFIG"].split(os.pathsep)[0]  # kubectl and kopf: first wins
    assert json.loads(Path(first).read_text())["current-context"] == "two"


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_complete_every_command_and_kubectls_flags(shell: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kurable", "completion", shell],
        capture_output=True,
        text=True,
        check=True,
    )
    script = result.stdout
    for name in commands():
        assert name.split()[-1] in script, f"{shell} completion lacks {name}"
    assert "--kubeconfig" in script and "--context" in script
