"""Every ``drawbridge`` command docs/deploy.md tells an operator to run exists, with the options
it is given: in the shell blocks and in the prose. (tests/integration/test_deploy_guide.py
runs the guide itself; this keeps the commands it only shows honest too.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from gateway.cli import main

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
# ``drawbridge`` where a shell runs it: at the start of a command, or by its path.
_COMMAND = re.compile(r"(?:^|[;&|(]\s*|/bin/)drawbridge\s+(.*)$")
_SHELL_END = re.compile(r"\s(?:#|&&|\|\|?|;|<|>|\))(?:\s|$)")


def commands_in_guide() -> list[str]:
    text = GUIDE.read_text()
    found = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            match = _COMMAND.search(line.strip())
            if match and not line.strip().startswith("drawbridge()"):
                found.append(_SHELL_END.split(" " + match[1] + " ")[0].strip())
    for inline in re.findall(r"`drawbridge ([^`]+)`", text):
        found.append(inline)
    return found


def resolve(words: list[str]) -> str | None:
    """What is wrong with ``drawbridge *words`` (None: nothing)."""
    command: click.Command = main
    path = ["drawbridge"]
    index = 0
    while index < len(words):
        word = words[index]
        if word.startswith("--"):
            name = word.split("=", 1)[0]
            options = {
                opt: param
                for param in command.params
                if isinstance(param, click.Option)
                for opt in param.opts + param.secondary_opts
            }
            if name not in options:
                return f"{' '.join(path)} has no option {name}"
            if not options[name].is_flag and "=" not in word:
                index += 1
        elif isinstance(command, click.Group):
            # The CLI loads a command's module when it runs (``get_command``, not ``commands``).
            sub = command.get_command(click.Context(command), word)
            if sub is None:
                return f"{' '.join(path)} has no command {word!r}"
            command, path = sub, [*path, word]
        index += 1
    if isinstance(command, click.Group):
        return f"{' '.join(path)} needs a command"
    return None


def test_the_guide_names_commands() -> None:
    assert len(commands_in_guide()) >= 15


@pytest.mark.parametrize("command", commands_in_guide())
def test_every_command_of_the_guide_exists(command: str) -> None:
    assert resolve(shlex.split(command)) is None, command
