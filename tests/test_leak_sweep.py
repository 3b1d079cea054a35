"""The end-of-suite sweep finds raw secrets in outputs, and only there."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from keys.access.keyformat import DEFAULT_ADMIN_TOKEN_PREFIX, DEFAULT_KEY_PREFIX, KeyFormat
from keys.text import mask_secrets
from tests.helpers import UPSTREAM_CREDENTIAL
from tests.leak_sweep import sweep


@pytest.fixture
def planted() -> Iterator[Path]:
    """A folder outside pytest's own temporary tree, which the end-of-suite sweep reads:
    the secrets planted here are meant to be found by these tests only."""
    with tempfile.TemporaryDirectory(prefix="drawbridge-sweep-") as folder:
        yield Path(folder)


def test_the_sweep_finds_raw_secrets_in_logs_exports_and_metrics(planted: Path) -> None:
    key = KeyFormat(DEFAULT_KEY_PREFIX).generate()
    token = KeyFormat(DEFAULT_ADMIN_TOKEN_PREFIX).generate()
    (planted / "gateway.log").write_text(f'{{"message": "Bearer {key}"}}\n')
    (planted / "usage.csv").write_text(f"id,note\n1,{token}\n")
    (planted / "spool").mkdir()
    (planted / "spool" / "123.json").write_text(f'{{"credential": "{UPSTREAM_CREDENTIAL}"}}')

    found = sweep(planted)

    assert any("gateway.log:1:" in line and "tester key" in line for line in found), found
    assert any("usage.csv:2:" in line and "admin token" in line for line in found), found
    assert any("123.json" in line and "master credential" in line for line in found), found


def test_masked_secrets_and_inputs_of_the_leak_scanner_are_not_leaks(planted: Path) -> None:
    key = KeyFormat(DEFAULT_KEY_PREFIX).generate()
    (planted / "gateway.log").write_text(f"revoked: {mask_secrets(key)} [REDACTED]\n")
    (planted / "config.py").write_text(f'API_KEY = "{key}"\n')  # planted for `leaks scan`

    assert sweep(planted) == []
