"""The log redaction filter: no key, token or upstream credential reaches a log line."""

from __future__ import annotations

import json
import logging

from gateway.logs import REDACTED, JsonFormatter, RedactingFilter
from keys.keyformat import KeyFormat

KEYS, TOKENS = KeyFormat("drwb"), KeyFormat("drwbadm")
CREDENTIAL = "sk-upstream-master-credential-0123456789"


def line(message: str, **extra: object) -> str:
    record = logging.makeLogRecord({"msg": message, "levelno": logging.INFO, **extra})
    RedactingFilter([KEYS.embedded, TOKENS.embedded], [CREDENTIAL]).filter(record)
    return JsonFormatter().format(record)


def test_secrets_are_masked_in_the_message_and_in_every_kind_of_extra() -> None:
    key, token = KEYS.generate(), TOKENS.generate()
    written = line(
        f"saw {key}",
        path=f"/v1/videos?x={key}",
        details={"token": token, "nested": [CREDENTIAL]},
        headers=("Authorization", f"Bearer {key}"),
        count=3,
    )
    for secret in (key, token, CREDENTIAL):
        assert secret not in written
    entry = json.loads(written)
    assert entry["count"] == 3 and REDACTED in entry["message"] and REDACTED in entry["path"]
    assert REDACTED in entry["details"] and REDACTED in entry["headers"]


def test_a_key_glued_to_other_text_is_masked_too() -> None:
    key = KEYS.generate()
    assert key not in line(f"value=x{key}y and \\n{key}")
