"""Free text before it is stored (keys/text.py): cleaned for state changes, refused for
creations, and never holding a secret."""

from __future__ import annotations

import pytest

from keys.access.keyformat import KeyFormat
from keys.errors import InvalidInput
from keys.text import REPLACEMENT, checked_strings, checked_text, clean_text, mask_secrets

KEY, TOKEN, OTHER = (
    KeyFormat("drwb").generate(),
    KeyFormat("drwbadm").generate(),
    KeyFormat("acme").generate(),
)


def test_every_checksum_valid_secret_is_cut_to_its_hint() -> None:
    text = f"pasted {KEY}, and {TOKEN}; glued:x{OTHER}! url=%3D{KEY}"
    masked = mask_secrets(text)
    for secret in (KEY, TOKEN, OTHER):
        assert secret not in masked
    assert f"drwb_...{KEY[-4:]}" in masked and f"drwbadm_...{TOKEN[-4:]}" in masked
    assert masked.startswith("pasted drwb_...")


def test_text_that_only_looks_like_a_key_is_left_alone() -> None:
    bad_checksum = KEY[:-1] + ("A" if KEY[-1] != "A" else "B")
    text = f"{bad_checksum} video_{'a' * 33} key_4fJ8abcdEFGH1234"
    assert mask_secrets(text) == text


def test_a_key_after_a_failed_candidate_is_still_found() -> None:
    # The first candidate's 33 characters end inside the real key's prefix.
    text = "ab_" + "x" * 29 + KEY
    assert KEY not in mask_secrets(text)


@pytest.mark.parametrize("raw", ["x\ud800", "nul\x00", "esc\x1b[2J", "c1\x85", "\udfff\ud800"])
def test_cleaning_replaces_what_cannot_be_stored(raw: str) -> None:
    cleaned = clean_text(raw, 100)
    assert REPLACEMENT in cleaned
    cleaned.encode("utf-8")  # no lone surrogate left
    assert "\x00" not in cleaned and "\x1b" not in cleaned


def test_cleaning_keeps_lines_and_tabs_clips_and_masks() -> None:
    assert clean_text("  two\nlines\tand tab  ", 100) == "two\nlines\tand tab"
    assert clean_text("a" * 50, 10) == "aaaaaaa..."
    assert clean_text(f"leaked {KEY}", 100) == f"leaked drwb_...{KEY[-4:]}"
    assert clean_text("one\nline", 100, multiline=False) == f"one{REPLACEMENT}line"


@pytest.mark.parametrize("raw", ["x\ud800", "nul\x00", "new\nline", "bell\x07"])
def test_checking_refuses_what_cannot_be_stored(raw: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        checked_text(raw, "name", 200)
    assert caught.value.param == "name" and caught.value.code == "invalid_value"


def test_checking_refuses_overlong_text_and_masks_secrets() -> None:
    with pytest.raises(InvalidInput):
        checked_text("a" * 201, "name", 200)
    assert checked_text(f"  bot {KEY} ", "name", 200) == f"bot drwb_...{KEY[-4:]}"
    assert checked_text("two\nlines", "note", 200, multiline=True) == "two\nlines"


def test_checked_strings_walks_keys_and_values() -> None:
    assert checked_strings({"a": [f"{KEY}", 1, None]}, "metadata", 100) == {
        "a": [f"drwb_...{KEY[-4:]}", 1, None]
    }
    with pytest.raises(InvalidInput):
        checked_strings({"a\x00": "b"}, "metadata", 100)
