"""Settings: flags over environment over defaults, and clear errors for bad values."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from chatserver.settings import SettingsError, load


def test_defaults_create_data_dir_and_secret(tmp_path: Path) -> None:
    """First load creates the data folder and a 0600 secret key, reused afterwards."""
    data = tmp_path / "data"
    first = load(environ={"CHATSERVER_DATA_DIR": str(data)})
    assert first.database_url == f"sqlite:///{data.resolve() / 'chat.db'}"
    key = data / "secret.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert load(environ={"CHATSERVER_DATA_DIR": str(data)}).secret_key == first.secret_key
    assert first.retention_days == 365 and first.broadcast_url == "memory://"
    assert first.database_pool_size == 10


def test_flags_override_environment(tmp_path: Path) -> None:
    """A flag wins over the environment variable of the same setting."""
    env = {"CHATSERVER_DATA_DIR": str(tmp_path / "env")}
    settings = load({"data_dir": str(tmp_path / "flag")}, environ=env)
    assert settings.data_dir == (tmp_path / "flag").resolve()


@pytest.mark.parametrize(("name", "value"), [
    ("CHATSERVER_RETENTION_DAYS", "soon"),
    ("CHATSERVER_RETENTION_DAYS", "-1"),
    ("CHATSERVER_ALLOWED_ORIGINS", "shop.example"),
    ("CHATSERVER_ALLOWED_ORIGINS", "https://shop.example/path"),
    ("CHATSERVER_LIMITS_EXEMPT", "not-an-ip"),
    ("CHATSERVER_SECURE_COOKIES", "maybe"),
    ("CHATSERVER_DATABASE_URL", "mysql://db/chat"),
    ("CHATSERVER_DATABASE_URL", "/srv/chat.db"),
    ("CHATSERVER_DATABASE_POOL_SIZE", "0"),
    ("CHATSERVER_DATABASE_POOL_SIZE", "many"),
])
def test_bad_values_are_refused_by_name(tmp_path: Path, name: str, value: str) -> None:
    """A bad value raises an error that names the variable."""
    with pytest.raises(SettingsError, match=name):
        load(environ={"CHATSERVER_DATA_DIR": str(tmp_path), name: value})


def test_exempt_networks(tmp_path: Path) -> None:
    """CHATSERVER_LIMITS_EXEMPT takes single IPs and networks."""
    s = load(environ={"CHATSERVER_DATA_DIR": str(tmp_path),
                      "CHATSERVER_LIMITS_EXEMPT": "127.0.0.1, 10.0.0.0/8"})
    assert s.is_exempt("127.0.0.1") and s.is_exempt("10.2.3.4")
    assert not s.is_exempt("192.0.2.1") and not s.is_exempt(None)


def test_postgres_urls_are_taken_as_written(tmp_path: Path) -> None:
    """postgresql:// and postgres:// select PostgreSQL; the pool size is a setting."""
    for url in ("postgresql://chat@db:5432/chat", "postgres://chat@db/chat"):
        s = load(environ={"CHATSERVER_DATA_DIR": str(tmp_path), "CHATSERVER_DATABASE_URL": url,
                          "CHATSERVER_DATABASE_POOL_SIZE": "3"})
        assert s.database_url == url and s.database_pool_size == 3
