"""Server-side secrets: derivation and credential encryption."""

from __future__ import annotations

import pytest

from keys.access.digests import SecretDigester
from keys.access.vault import Vault, VaultError, new_root_secret


def test_subkeys_differ_by_purpose_and_by_root() -> None:
    vault = Vault(new_root_secret())
    assert vault.derive("a") != vault.derive("b")
    assert vault.key_pepper != Vault(new_root_secret()).key_pepper


def test_encryption_round_trips_and_needs_the_same_root() -> None:
    root = new_root_secret()
    token = Vault(root).encrypt("sk-master")
    assert "sk-master" not in token
    assert Vault(root).decrypt(token) == "sk-master"
    with pytest.raises(VaultError):
        Vault(new_root_secret()).decrypt(token)


@pytest.mark.parametrize("root", ["", "not base64!!", "c2hvcnQ="])
def test_weak_or_broken_roots_are_refused(root: str) -> None:
    with pytest.raises(VaultError):
        Vault(root)


def test_digests_are_keyed_and_compared_in_constant_time() -> None:
    pepper_a, pepper_b = Vault(new_root_secret()).key_pepper, Vault(new_root_secret()).key_pepper
    a, b = SecretDigester(pepper_a), SecretDigester(pepper_b)
    assert a.digest("drwb_x") != b.digest("drwb_x")
    assert a.matches("drwb_x", a.digest("drwb_x")) and not a.matches("drwb_y", a.digest("drwb_x"))
    assert "pepper" in repr(a) and pepper_a.hex() not in repr(a)
    with pytest.raises(ValueError):
        SecretDigester(b"short")
