from __future__ import annotations

from pathlib import Path

import pytest

from pixelgate.config import load_settings
from pixelgate.errors import ConfigError


def test_defaults() -> None:
    s = load_settings()
    assert s.port == 8080 and s.host == "127.0.0.1" and s.worker is True
    assert s.resolved_database_url.startswith("sqlite+aiosqlite:///")
    assert s.resolved_storage_url.startswith("file://")


def test_precedence_defaults_toml_env_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('port = 9000\nconcurrency = 7\nlog_level = "debug"\n')
    monkeypatch.setenv("PIXELGATE_CONFIG", str(toml))
    s = load_settings()
    assert (s.port, s.concurrency, s.log_level) == (9000, 7, "debug")
    monkeypatch.setenv("PIXELGATE_PORT", "9100")
    assert load_settings().port == 9100
    assert load_settings(port=9200).port == 9200
    assert load_settings(port=9200).concurrency == 7


def test_bad_env_value_is_one_line_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXELGATE_PORT", "abc")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "port" in str(info.value) and "\n" not in str(info.value)


def test_bad_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("port = = 1\n")
    monkeypatch.setenv("PIXELGATE_CONFIG", str(toml))
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings()
    monkeypatch.setenv("PIXELGATE_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="not found"):
        load_settings()


def test_unknown_key_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("prot = 1\n")
    monkeypatch.setenv("PIXELGATE_CONFIG", str(toml))
    with pytest.raises(ConfigError, match="prot"):
        load_settings()


def test_provider_tables_are_validated_by_their_kind() -> None:
    import httpx

    from pixelgate.providers.registry import build_providers

    s = load_settings(providers={"x": {"kind": "placeholder", "latency_ms": "slow"}})
    with pytest.raises(ConfigError, match=r"providers\.x\.latency_ms"):
        build_providers(s, httpx.AsyncClient())
    s = load_settings(providers={"x": {"kind": "warp-drive"}})
    with pytest.raises(ConfigError, match="warp-drive"):
        build_providers(s, httpx.AsyncClient())
    s = load_settings(routing={"default": ["ghost"]})
    with pytest.raises(ConfigError, match="ghost"):
        build_providers(s, httpx.AsyncClient())


def test_provider_keys_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from pixelgate.providers.registry import build_providers

    assert build_providers(load_settings(), httpx.AsyncClient()).default_chain == ["placeholder"]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-env")
    monkeypatch.setenv("PIXELGATE_OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    providers = build_providers(load_settings(), httpx.AsyncClient())
    openai = providers.get("openai")
    assert openai.configured and openai.base_url == "http://127.0.0.1:9/v1"
    assert providers.default_chain == ["openai"]
    assert "sk-test-env" not in repr(openai.settings)
