"""The example files shipped with Drawbridge: ``drawbridge examples``."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from gateway.cli.base import emit, main

EXAMPLES = {
    "drawbridge.toml": "every setting, documented (use with --config or DRAWBRIDGE_CONFIG)",
    "policies.toml": "cohort policies (`drawbridge policies apply FILE`)",
    "gunicorn.conf.py": "gunicorn settings (`drawbridge serve --gunicorn-config FILE`)",
    "nginx.conf": "the front proxy: TLS, slow clients buffered, /admin and /metrics kept in",
    "drawbridge.service": "systemd unit for the gateway (docs/deploy.md)",
    "drawbridge-nginx.service": "systemd unit for the front proxy (docs/deploy.md)",
    "drawbridge-usage-prune.service": "systemd unit: delete usage events past their retention",
    "drawbridge-usage-prune.timer": "runs drawbridge-usage-prune.service daily",
}


def examples_dir() -> Path:
    """The example files shipped in the package (the repository's config/ folder)."""
    return Path(__file__).resolve().parents[2] / "examples"


@main.command()
@click.option(
    "--copy-to",
    type=click.Path(file_okay=False),
    default=None,
    help="Copy them into this folder (files already there are kept).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def examples(copy_to: str | None, as_json: bool) -> None:
    """Example settings, cohort policies, gunicorn and nginx configs, systemd units."""
    folder = examples_dir()
    if copy_to is None:
        files = [
            {"name": name, "path": str(folder / name), "purpose": purpose}
            for name, purpose in EXAMPLES.items()
        ]
        emit(
            {"folder": str(folder), "files": files},
            as_json,
            lambda _: "\n".join(
                [f"Example files, installed with Drawbridge in {folder}:"]
                + [f"  {f['path']}\n      {f['purpose']}" for f in files]
                + ["Copy them with `drawbridge examples --copy-to DIR` and edit the copies."]
            ),
        )
        return
    target = Path(copy_to)
    target.mkdir(parents=True, exist_ok=True)
    results = []
    for name in EXAMPLES:
        destination = target / name
        if destination.exists():
            results.append({"path": str(destination), "action": "kept"})
            continue
        shutil.copyfile(folder / name, destination)
        results.append({"path": str(destination), "action": "wrote"})
    emit(
        {"files": results},
        as_json,
        lambda _: "\n".join(
            f"kept {r['path']} (exists)" if r["action"] == "kept" else f"wrote {r['path']}"
            for r in results
        ),
    )
