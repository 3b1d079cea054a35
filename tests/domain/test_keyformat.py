"""Key format: shape, checksum, and refusal of malformed keys without storage."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys.access.keyformat import BASE62, BODY_LENGTH, KeyFormat, base62, checksum

FORMAT = KeyFormat("drwb")


def test_generated_key_has_prefix_length_and_valid_checksum() -> None:
    key = FORMAT.generate()
    assert re.fullmatch(rf"drwb_[0-9A-Za-z]{{{BODY_LENGTH}}}", key)
    assert FORMAT.is_well_formed(key)


def test_random_part_carries_at_least_160_bits() -> None:
    assert 62**27 > 2**160


def test_keys_are_unique() -> None:
    assert len({FORMAT.generate() for _ in range(2000)}) == 2000


def test_checksum_is_base62_crc32_of_the_random_part() -> None:
    # Fixed vectors: a scanner in another language must compute the same (crc32 0x816710bc).
    assert checksum("0" * 27) == "2MvMGi"
    assert checksum("abcdefghijklmnopqrstuvwxyzA") == "1s7RMY"


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_base62_round_trips(number: int) -> None:
    encoded = base62(number, 6)
    decoded = 0
    for char in encoded:
        decoded = decoded * 62 + BASE62.index(char)
    assert decoded == number


def test_single_character_change_fails_checksum() -> None:
    key = FORMAT.generate()
    for position in range(5, len(key)):
        replacement = "A" if key[position] != "A" else "B"
        assert not FORMAT.is_well_formed(key[:position] + replacement + key[position + 1 :])


@pytest.mark.parametrize(
    "candidate",
    [
        "",
        "drwb_",
        "drwb",
        "xxxx_" + "A" * BODY_LENGTH,
        "drwb_" + "A" * (BODY_LENGTH - 1),
        "drwb_" + "A" * (BODY_LENGTH + 1),
        "drwb_" + "-" * BODY_LENGTH,
        "drwbadm_" + "A" * 33,
    ],
)
def test_malformed_candidates_are_refused(candidate: str) -> None:
    assert not FORMAT.is_well_formed(candidate)


@given(st.text(max_size=80))
def test_arbitrary_text_is_never_well_formed_by_accident(text: str) -> None:
    if not text.startswith("drwb_"):
        assert not FORMAT.is_well_formed(text)


def test_hint_shows_only_prefix_and_last_four() -> None:
    key = FORMAT.generate()
    assert FORMAT.hint(key) == f"drwb_...{key[-4:]}"


def test_pattern_finds_keys_in_text_but_not_inside_longer_tokens() -> None:
    key = FORMAT.generate()
    text = f'{{"token": "{key}"}} url=https://x.test/?k={key}&a=1 x{key}'
    found = [match.group(0) for match in FORMAT.pattern.finditer(text)]
    assert found == [key, key]


@pytest.mark.parametrize("prefix", ["", "a", "A_b", "has space", "x" * 17, "9abc"])
def test_invalid_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError):
        KeyFormat(prefix)
