"""The shape of Drawbridge secrets: ``<prefix>_<random base62><base62 CRC32 of the random part>``.

The checksum lets the gateway and the leak scanner reject a mistyped or made-up key without a
storage lookup, and lets a scanner tell real keys from random text with no false positives
worth mentioning (one in 56 billion).
"""

from __future__ import annotations

import re
import secrets
import zlib
from dataclasses import dataclass
from functools import cached_property

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_LENGTH = 27  # 62**27 > 2**160
CHECKSUM_LENGTH = 6  # 62**6 > 2**32
BODY_LENGTH = RANDOM_LENGTH + CHECKSUM_LENGTH
PREFIX_PATTERN = re.compile(r"[a-z][a-z0-9]{1,15}")

DEFAULT_KEY_PREFIX = "drwb"
DEFAULT_ADMIN_TOKEN_PREFIX = "drwbadm"  # noqa: S105 (a prefix, not a secret)

_BODY = re.compile(rf"[0-9A-Za-z]{{{BODY_LENGTH}}}")


def base62(number: int, width: int) -> str:
    """Encode a non-negative integer in base62, left-padded with zeros to ``width``."""
    digits = []
    while number:
        number, rest = divmod(number, 62)
        digits.append(BASE62[rest])
    return "".join(reversed(digits)).rjust(width, "0")


def checksum(random_part: str) -> str:
    """The 6-character base62 CRC32 of the random part of a key."""
    return base62(zlib.crc32(random_part.encode("ascii")), CHECKSUM_LENGTH)


@dataclass(frozen=True)
class KeyFormat:
    """A key family, told apart by its prefix (tester keys, admin tokens)."""

    prefix: str

    def __post_init__(self) -> None:
        if not PREFIX_PATTERN.fullmatch(self.prefix):
            raise ValueError(
                f"key prefix {self.prefix!r} must be 2-16 lowercase letters or digits, "
                "starting with a letter"
            )

    def generate(self) -> str:
        """A new random secret of this family."""
        random_part = "".join(secrets.choice(BASE62) for _ in range(RANDOM_LENGTH))
        return f"{self.prefix}_{random_part}{checksum(random_part)}"

    def is_well_formed(self, candidate: str) -> bool:
        """True when the candidate has this prefix, the right length and a valid checksum."""
        prefix, sep, body = candidate.partition("_")
        if prefix != self.prefix or not sep or not _BODY.fullmatch(body):
            return False
        return checksum(body[:RANDOM_LENGTH]) == body[RANDOM_LENGTH:]

    def hint(self, secret: str) -> str:
        """What may be shown of a secret after it is issued: prefix and last four."""
        return f"{self.prefix}_...{secret[-4:]}"

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        """A regex that finds candidate secrets of this family in free text."""
        return re.compile(
            rf"(?<![0-9A-Za-z_]){re.escape(self.prefix)}_([0-9A-Za-z]{{{BODY_LENGTH}}})"
            r"(?![0-9A-Za-z])"
        )

    @cached_property
    def embedded(self) -> re.Pattern[str]:
        """Like ``pattern``, but also inside longer words (``x_drwb_...``, ``...drwb_...9f``):
        what redaction must mask, since such text still holds the whole secret."""
        return re.compile(rf"{re.escape(self.prefix)}_[0-9A-Za-z]{{{BODY_LENGTH}}}")
