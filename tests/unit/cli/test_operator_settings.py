"""`kurable operator` builds one OperatorSettings from its flags and environment."""

from __future__ import annotations

import pytest

from kurable.cli import build_parser
from kurable.cli._operator import settings
from kurable.executor.settings import OperatorSettings
from kurable.store.journal import EtcdConfig


def parse(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *argv: str) -> OperatorSettings:
    for name in (
        "KURABLE_ETCD_ENDPOINTS",
        "KURABLE_ETCD_PREFIX",
        "KURABLE_ETCD_CACERT",
        "KURABLE_ETCD_CERT",
        "KURABLE_ETCD_KEY",
        "KURABLE_ETCD_USER",
        "KURABLE_ETCD_PASSWORD",
        "KURABLE_ETCD_PASSWORD_FILE",
        "KURABLE_EXECUTOR_ID",
        "KURABLE_RESYNC_INTERVAL",
        "KURABLE_API_TIMEOUT",
        "KURABLE_MAX_VALUE_BYTES",
        "KURABLE_STATE_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return settings(build_parser().parse_args(["operator", *argv]))


def test_without_flags_or_environment_the_defaults_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse(monkeypatch, {}) == OperatorSettings()


def test_the_environment_sets_what_no_flag_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "KURABLE_ETCD_ENDPOINTS": "etcd:2379",
        "KURABLE_ETCD_PREFIX": "team-a",
        "KURABLE_EXECUTOR_ID": "pod-0",
        "KURABLE_RESYNC_INTERVAL": "7",
        "KURABLE_API_TIMEOUT": "9",
    }
    got = parse(monkeypatch, env)
    assert got.etcd == EtcdConfig("etcd:2379", "/team-a/")
    assert (got.executor_id, got.resync_interval, got.api_timeout) == ("pod-0", 7.0, 9.0)


def test_a_flag_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"KURABLE_ETCD_ENDPOINTS": "etcd:2379", "KURABLE_EXECUTOR_ID": "pod-0"}
    argv = ("--etcd-endpoints", "other:2379", "--etcd-prefix", "/b", "--executor-id", "me")
    got = parse(
        monkeypatch,
        env,
        *argv,
        "--lease-ttl",
        "4",
        "--resync-interval",
        "0",
        "-n",
        "team-*",
        "--peering",
        "kurable",
    )
    assert got.etcd == EtcdConfig("other:2379", "/b/")
    assert got.executor_id == "me" and got.lease_ttl == 4 and got.resync_interval == 0
    assert got.namespaces == ("team-*",) and got.peering == "kurable"


@pytest.mark.parametrize(
    "bad",
    [{"outage_backoff": ()}, {"lease_ttl": 0}, {"api_timeout": 0.0}, {"resync_interval": -1.0}],
)
def test_settings_that_cannot_work_are_refused_saying_what_to_fix(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        OperatorSettings(**bad)  # type: ignore[arg-type]


def test_the_value_size_limit_comes_from_the_flag_else_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert parse(monkeypatch, {}).max_value_bytes == 1024 * 1024
    env = {"KURABLE_MAX_VALUE_BYTES": "2097152"}
    assert parse(monkeypatch, env).max_value_bytes == 2 * 1024 * 1024
    assert parse(monkeypatch, env, "--max-value-bytes", "65536").max_value_bytes == 65536


def test_a_value_size_limit_below_one_kib_is_refused() -> None:
    with pytest.raises(ValueError, match="max_value_bytes must be at least 1024"):
        OperatorSettings(max_value_bytes=10)


def test_the_etcd_tls_and_auth_flags_win_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    from pathlib import Path

    secret = Path(str(tmp_path)) / "password"
    secret.write_text("flag-secret\n")
    env = {"KURABLE_ETCD_CACERT": "/env/ca.crt", "KURABLE_ETCD_PASSWORD": "env-secret"}
    argv = ("--etcd-endpoints", "https://a:2379,https://b:2379", "--etcd-cacert", "/ca.crt")
    argv += ("--etcd-cert", "/c.crt", "--etcd-key", "/c.key", "--etcd-user", "kurable")
    got = parse(monkeypatch, env, *argv, "--etcd-password-file", str(secret)).etcd
    assert (got.cacert, got.cert, got.key) == ("/ca.crt", "/c.crt", "/c.key")
    assert got.credentials() == ("kurable", "flag-secret")
    assert len(got.endpoint_list()) == 2


def test_etcd_settings_that_cannot_work_stop_the_command_saying_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kurable.cli._errors import UserError

    with pytest.raises(UserError, match="mix http:// and https://"):
        parse(monkeypatch, {}, "--etcd-endpoints", "http://a:2379,https://b:2379")
