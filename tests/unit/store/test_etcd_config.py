"""EtcdConfig: endpoints with their schemes, TLS files and credentials, refused clearly
when they cannot work."""

from __future__ import annotations

import pytest

from kurable.store.etcd import Endpoint, EtcdConfig, EtcdConfigError


def test_every_endpoint_is_kept_with_its_scheme() -> None:
    config = EtcdConfig("https://etcd-0:2379, https://etcd-1:2380,https://[::1]:2381/")
    assert config.endpoint_list() == [
        Endpoint("etcd-0", 2379, tls=True),
        Endpoint("etcd-1", 2380, tls=True),
        Endpoint("::1", 2381, tls=True),
    ]
    assert config.tls and config.endpoint_list()[2].target == "[::1]:2381"


def test_plain_host_ports_are_plaintext_unless_tls_files_are_given() -> None:
    assert not EtcdConfig("127.0.0.1:2379,etcd").tls
    assert EtcdConfig("etcd").endpoint_list() == [Endpoint("etcd", 2379, tls=False)]
    assert EtcdConfig("etcd:2379", cacert="/ca.crt").tls


@pytest.mark.parametrize(
    ("endpoints", "files", "says"),
    [
        ("http://a:2379,https://b:2379", {}, "mix http:// and https://"),
        ("http://a:2379", {"cacert": "/ca.crt"}, "use https://"),
        ("ftp://a:2379", {}, "must be http:// or https://"),
        ("a:port", {}, "port is not a number"),
        (" , ", {}, "no etcd endpoint"),
        ("https://a:2379", {"cert": "/c.crt"}, "both a certificate and its key"),
    ],
)
def test_settings_that_cannot_work_are_refused_saying_what_to_fix(
    endpoints: str, files: dict[str, str], says: str
) -> None:
    with pytest.raises(EtcdConfigError, match=says):
        EtcdConfig(endpoints, **files)


def test_credentials_come_from_the_password_or_etcdctl_style_user() -> None:
    assert EtcdConfig(user="kurable", password="s3cret").credentials() == ("kurable", "s3cret")
    assert EtcdConfig(user="kurable:inline").credentials() == ("kurable", "inline")
    assert EtcdConfig().credentials() == (None, None)
    with pytest.raises(EtcdConfigError, match="needs a password"):
        EtcdConfig(user="kurable").credentials()


def test_the_environment_gives_files_user_and_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    from pathlib import Path

    secret = Path(str(tmp_path)) / "password"
    secret.write_text("from-file\n")
    monkeypatch.setenv("KURABLE_ETCD_ENDPOINTS", "https://e:2379")
    monkeypatch.setenv("KURABLE_ETCD_CACERT", "/ca.crt")
    monkeypatch.setenv("KURABLE_ETCD_CERT", "/c.crt")
    monkeypatch.setenv("KURABLE_ETCD_KEY", "/c.key")
    monkeypatch.setenv("KURABLE_ETCD_USER", "kurable")
    monkeypatch.delenv("KURABLE_ETCD_PASSWORD", raising=False)
    monkeypatch.setenv("KURABLE_ETCD_PASSWORD_FILE", str(secret))
    config = EtcdConfig.from_env()
    assert (config.cacert, config.cert, config.key) == ("/ca.crt", "/c.crt", "/c.key")
    assert config.credentials() == ("kurable", "from-file")
    assert "password" not in config.describe() and "from-file" not in config.describe()
