"""Settings: defaults < TOML file < DRAWBRIDGE_* environment < explicit overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import Secret, Settings, SettingsError, load_settings, root_secret_of


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "drawbridge.toml"
    path.write_text(text)
    return path


def test_defaults_need_no_file(tmp_path: Path) -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.key_prefix == "drwb" and settings.admin_token_prefix == "drwbadm"


def test_file_tables_flatten_and_environment_wins(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[database]\nurl = "sqlite:///a.db"\n[upstream]\nurl = "http://x/v1"\nread_timeout = 5\n',
    )
    settings = load_settings(path, environ={"DRAWBRIDGE_UPSTREAM_URL": "http://y/v1"})
    assert settings.database_url == "sqlite:///a.db"
    assert settings.upstream_url == "http://y/v1"
    assert settings.upstream_read_timeout == 5.0


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "max_request_bytes = 1024\n")
    settings = load_settings(environ={"DRAWBRIDGE_CONFIG": str(path)})
    assert settings.max_request_bytes == 1024


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("unknown_thing = 1\n", "unknown setting 'unknown_thing'"),
        ('max_request_bytes = "lots"\n', "max_request_bytes"),
        ("[upstream\nurl = 1\n", "line 1"),
        ("access_log = 3\n", "access_log"),
    ],
)
def test_bad_files_are_refused_naming_the_file(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SettingsError) as caught:
        load_settings(path, environ={})
    assert str(path) in str(caught.value) and fragment in str(caught.value)


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="DRAWBRIDGE_UPSTREAM_DEADLINE"):
        load_settings(environ={"DRAWBRIDGE_UPSTREAM_DEADLINE": "soon"})


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no such settings file"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_secrets_never_show_in_reprs() -> None:
    settings = load_settings(
        environ={"DRAWBRIDGE_UPSTREAM_API_KEY": "sk-live-123", "DRAWBRIDGE_ROOT_SECRET": "abc"}
    )
    assert isinstance(settings.upstream_api_key, Secret)
    assert "sk-live-123" not in repr(settings) and "abc" not in repr(settings.root_secret)
    assert settings.upstream_api_key.reveal() == "sk-live-123"


def test_root_secret_from_file_or_refusal(tmp_path: Path) -> None:
    secret_file = tmp_path / "root"
    secret_file.write_text("c2VjcmV0\n")
    assert root_secret_of(load_settings(environ={}, root_secret_file=str(secret_file))) == (
        "c2VjcmV0"
    )
    with pytest.raises(SettingsError, match="no root secret"):
        root_secret_of(load_settings(environ={}))


def test_documented_settings_file_states_the_code_defaults() -> None:
    path = Path(__file__).parents[1] / "config" / "drawbridge.toml"
    assert load_settings(path, environ={}) == Settings()
    text = path.read_text()
    for name in Settings.__dataclass_fields__:
        short = name.split("_", 1)[1] if "_" in name else name
        assert name in text or short in text, f"{name} is not documented in {path}"
