"""The independent C2PA reader, tests/readers/c2pa-ts/read.mjs (@trustnxt/c2pa-ts under
node), run on a file as an outside auditor would: the file and the deployment's roots in,
the reader's JSON report out.

c2pa-python's Reader wraps c2pa-rs, the same Rust core that signs, so it cannot catch a
mistake of that core; c2pa-ts is a separate implementation of the specification. Its node
packages come from `make node-packages`; without node or them the tests skip, and fail
under CI=true.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import CI

READER_DIR = Path(__file__).resolve().parents[1] / "readers" / "c2pa-ts"
READER_SCRIPT = READER_DIR / "read.mjs"
READ_TIMEOUT = 60


def require_reader() -> str:
    """node's path, once the reader's packages are installed; else skip (fail under CI)."""
    node = shutil.which("node")
    if node is None:
        problem = "node is not on PATH"
    elif not (READER_DIR / "node_modules" / "@trustnxt" / "c2pa-ts").is_dir():
        problem = f"{READER_DIR / 'node_modules'} is not installed"
    else:
        return node
    message = (
        f"The independent C2PA reader needs node and its npm packages ({problem}): "
        "`make node-packages` installs them with npm; outside CI these tests are skipped."
    )
    if CI:
        pytest.fail(message)
    pytest.skip(message)


def read_independently(node: str, data: bytes, anchors_pem: str, workdir: Path) -> dict[str, Any]:
    """The reader's report on these bytes, validated against these roots (PEM)."""
    workdir.mkdir(parents=True, exist_ok=True)
    media = workdir / "file.mp4"
    anchors = workdir / "anchors.pem"
    media.write_bytes(data)
    anchors.write_text(anchors_pem)
    done = subprocess.run(
        [node, str(READER_SCRIPT), str(media), str(anchors)],
        capture_output=True,
        text=True,
        timeout=READ_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"read.mjs exited {done.returncode}: {done.stderr[-2000:]}"
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def assertion_data(report: dict[str, Any], label: str) -> dict[str, Any]:
    """The data of the active manifest's assertion with this label, as the reader decoded it."""
    assertions = report["active_manifest"]["assertions"]
    for item in assertions:
        if item["label"] == label:
            return dict(item["data"])
    raise AssertionError(f"no {label} in {[a['label'] for a in assertions]}")


def library_codes(report: dict[str, Any], *, success: bool) -> set[str]:
    """c2pa-ts's own status codes, successes or failures."""
    return {
        entry["code"]
        for entry in report["library_validation"]["statuses"]
        if entry["success"] is success
    }
