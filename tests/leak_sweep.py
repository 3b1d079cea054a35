"""After the whole suite, every log, dump, export and metrics file the tests wrote is grepped
for raw tester keys, admin tokens and master credentials (tests/conftest.py runs it).

Secrets are found the way ``drawbridge leaks scan`` finds them — by prefix and checksum —
so a key issued by any test counts, not only the ones a test remembered. Files that tests
fill with keys on purpose (the leak scanner's inputs) are not outputs and are not read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from keys.access.keyformat import DEFAULT_ADMIN_TOKEN_PREFIX, DEFAULT_KEY_PREFIX, KeyFormat
from keys.leaks.leaked_keys import scan_file
from tests.helpers import UPSTREAM_CREDENTIAL

# What the product writes: logs, exports (CSV, JSON Lines), dumps, metrics snapshots.
OUTPUT_SUFFIXES = (".log", ".csv", ".jsonl", ".prom", ".dump", ".sql")
OUTPUT_FOLDERS = ("spool", "export", "metrics")
# The integration simulator's master credential starts so (tests/integration/conftest.py).
MASTER_MARKERS = (UPSTREAM_CREDENTIAL.encode(), b"sim-master-")
FAMILIES = {
    "tester key": KeyFormat(DEFAULT_KEY_PREFIX),
    "admin token": KeyFormat(DEFAULT_ADMIN_TOKEN_PREFIX),
}


def outputs(root: Path) -> Iterator[Path]:
    """The files under ``root`` that the product wrote as logs, exports, dumps or metrics."""
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        folders = {part.lower() for part in path.relative_to(root).parts[:-1]}
        if path.suffix.lower() in OUTPUT_SUFFIXES or folders & set(OUTPUT_FOLDERS):
            yield path


def sweep(root: Path) -> list[str]:
    """One line per raw secret found in an output file under ``root``."""
    found = []
    for path in outputs(root):
        for kind, key_format in FAMILIES.items():
            for finding in scan_file(path, key_format):
                found.append(f"{finding.location}: a raw {kind}")
        data = path.read_bytes()
        found += [f"{path}: a master credential" for marker in MASTER_MARKERS if marker in data]
    return found
