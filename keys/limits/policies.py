"""Cohort policies: what a tester may spend, which values they may ask for, and which prompts
are denied or held for an approver.

A policy is plain data (a frozen dataclass); cohorts keep theirs in the database so a change
takes effect on every worker at once, and ``config/policies.toml`` is the documented way to
write them (``drawbridge policies apply``). Errors in a file name the file and the line.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from keys.errors import InvalidInput
from keys.text import checked_text, mask_secrets

# The values the OpenAI Videos API knows; a policy can only narrow them.
KNOWN_MODELS = ("sora-2", "sora-2-pro")
KNOWN_SIZES = ("720x1280", "1280x720", "1024x1792", "1792x1024")
KNOWN_SECONDS = (4, 8, 12)
DEFAULT_MODEL, DEFAULT_SIZE, DEFAULT_SECONDS = "sora-2", "720x1280", 4
MAX_LIMIT = 10**9
MAX_PROMPT_CHARS = 10_000
SHARING_MODES = ("approval", "off")
RULE_ACTIONS = ("deny", "hold")

LIMIT_FIELDS = (
    "requests_per_minute",
    "requests_per_day",
    "generations_per_day",
    "video_seconds_per_day",
    "video_seconds_per_month",
    "concurrent_jobs",
    "share_link_seconds",
)
# Anomaly detection (keys/leaks/anomalies.py), each with its allowed range; 0 switches a rule off
# where the range starts at 0. A triggered rule suspends the key and alerts.
ANOMALY_FIELDS = {
    "anomaly_window_seconds": (60, 86_400),
    "anomaly_max_client_ips": (0, 100_000),
    "anomaly_rate_factor": (0, 1_000),
    "anomaly_rate_floor": (1, MAX_LIMIT),
    "proof_alert_after": (0, MAX_LIMIT),
}
BOOLEAN_FIELDS = (
    "hold_generations",
    "content_requires_approval",
    "require_proof",
    "suspend_on_missing_proof",
)


class PolicyError(ValueError):
    """A policy that cannot be used; ``field`` names the offending setting."""

    def __init__(
        self,
        message: str,
        field: str | None = None,
        *,
        rule: int | None = None,
        rule_setting: str | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        # For a bad prompt rule: its index and the offending key, so a file error can point
        # at the line of that entry rather than at the first rule of the cohort.
        self.rule = rule
        self.rule_setting = rule_setting


@dataclass(frozen=True)
class PromptRule:
    pattern: str
    action: Literal["deny", "hold"]
    reason: str

    @cached_property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern)


@dataclass(frozen=True)
class Policy:
    requests_per_minute: int = 60
    requests_per_day: int = 5_000
    generations_per_day: int = 20
    video_seconds_per_day: int = 240
    video_seconds_per_month: int = 2_400
    concurrent_jobs: int = 2
    models: tuple[str, ...] = KNOWN_MODELS
    sizes: tuple[str, ...] = KNOWN_SIZES
    seconds: tuple[int, ...] = KNOWN_SECONDS
    prompt_rules: tuple[PromptRule, ...] = ()
    hold_generations: bool = False
    content_requires_approval: bool = False
    sharing: str = "approval"
    share_link_seconds: int = 7 * 86_400
    # More distinct client IPs than this within the window suspends a key (0: off).
    anomaly_window_seconds: int = 600
    anomaly_max_client_ips: int = 20
    # A minute with more requests than factor x the key's own baseline AND than the floor
    # suspends a key (factor 0: off).
    anomaly_rate_factor: int = 10
    anomaly_rate_floor: int = 300
    # Proof of possession (keys/access/proofs.py). A key with a proof key bound always needs a
    # signed request; require_proof also refuses keys without one (bar binding one).
    require_proof: bool = False
    # This many requests of a bound key without a valid proof within the anomaly window
    # alert the admins (0: off); the key is suspended too only with suspend_on_missing_proof,
    # since a stranger holding the string could otherwise lock its tester out.
    proof_alert_after: int = 5
    suspend_on_missing_proof: bool = False

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["models"], data["sizes"] = list(self.models), list(self.sizes)
        data["seconds"] = list(self.seconds)
        data["prompt_rules"] = [
            {"pattern": r.pattern, "action": r.action, "reason": r.reason}
            for r in self.prompt_rules
        ]
        return data

    def with_overrides(self, overrides: Mapping[str, Any]) -> Policy:
        """This policy with some settings replaced. Raises PolicyError."""
        return policy_from_mapping({**self.to_json(), **overrides})


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIMIT:
        raise PolicyError(f"{name} must be an integer between 0 and {MAX_LIMIT}", name)
    return value


def _subset(name: str, value: Any, known: tuple[Any, ...]) -> tuple[Any, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise PolicyError(f"{name} must be a non-empty list drawn from {list(known)}", name)
    for item in value:
        if isinstance(item, bool) or item not in known:
            raise PolicyError(f"{name}: {item!r} is not one of {list(known)}", name)
    return tuple(dict.fromkeys(value))


def _rule(index: int, raw: Any) -> PromptRule:
    name = f"prompt_rules[{index}]"

    def error(message: str, setting: str | None = None) -> PolicyError:
        return PolicyError(message, "prompt_rules", rule=index, rule_setting=setting)

    extra = sorted(set(raw) - {"pattern", "action", "reason"}) if isinstance(raw, Mapping) else []
    if not isinstance(raw, Mapping) or extra:
        raise error(
            f"{name} must have pattern, action and reason only", extra[0] if extra else None
        )
    pattern, action, reason = raw.get("pattern"), raw.get("action"), raw.get("reason")
    if not isinstance(pattern, str) or not 0 < len(pattern) <= 500:
        raise error(f"{name}.pattern must be a regular expression", "pattern")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise error(f"{name}.pattern is not a valid regex: {exc}", "pattern") from None
    if action not in RULE_ACTIONS:
        raise error(f"{name}.action must be 'deny' or 'hold'", "action")
    if not isinstance(reason, str) or not reason.strip():
        raise error(f"{name}.reason must say why (testers see it)", "reason")
    for setting, text in (("pattern", pattern), ("reason", reason)):
        try:
            checked_text(text, f"{name}.{setting}", 500)
        except InvalidInput as exc:
            raise error(exc.message, setting) from None
    return PromptRule(pattern, action, mask_secrets(reason.strip()))


def policy_from_mapping(raw: Mapping[str, Any]) -> Policy:
    """Validate a policy given as a mapping (a TOML table or stored JSON)."""
    known = {f.name for f in dataclasses.fields(Policy)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise PolicyError(f"unknown policy setting {unknown[0]!r}", unknown[0])
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name in LIMIT_FIELDS:
            values[name] = _int(name, value)
        elif name in ANOMALY_FIELDS:
            low, high = ANOMALY_FIELDS[name]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise PolicyError(f"{name} must be an integer between {low} and {high}", name)
            values[name] = value
        elif name == "models":
            values[name] = _subset(name, value, KNOWN_MODELS)
        elif name == "sizes":
            values[name] = _subset(name, value, KNOWN_SIZES)
        elif name == "seconds":
            values[name] = _subset(name, value, KNOWN_SECONDS)
        elif name == "prompt_rules":
            if not isinstance(value, list | tuple):
                raise PolicyError("prompt_rules must be a list of tables", name)
            values[name] = tuple(_rule(i, rule) for i, rule in enumerate(value))
        elif name in BOOLEAN_FIELDS:
            if not isinstance(value, bool):
                raise PolicyError(f"{name} must be true or false", name)
            values[name] = value
        elif name == "sharing":
            if value not in SHARING_MODES:
                raise PolicyError("sharing must be 'approval' or 'off'", name)
            values[name] = value
    return Policy(**values)


# -- evaluating a generation request ------------------------------------------------------


@dataclass(frozen=True)
class GenerationRequest:
    model: str = DEFAULT_MODEL
    size: str = DEFAULT_SIZE
    seconds: int = DEFAULT_SECONDS
    prompt: str = ""


@dataclass(frozen=True)
class Decision:
    action: Literal["allow", "deny", "hold"]
    reason: str | None = None
    param: str | None = None


ALLOW = Decision("allow")


def decide(policy: Policy, request: GenerationRequest) -> Decision:
    """Allow, deny (with the rule's reason) or hold a generation under a policy."""
    if request.model not in policy.models:
        return Decision("deny", f"model {request.model} is not available to your cohort", "model")
    if request.size not in policy.sizes:
        return Decision("deny", f"size {request.size} is not available to your cohort", "size")
    if request.seconds not in policy.seconds:
        return Decision(
            "deny", f"{request.seconds}-second videos are not available to your cohort", "seconds"
        )
    held: Decision | None = None
    for rule in policy.prompt_rules:
        if rule.regex.search(request.prompt):
            if rule.action == "deny":
                return Decision("deny", rule.reason, "prompt")
            held = held or Decision("hold", rule.reason, "prompt")
    if held:
        return held
    if policy.hold_generations:
        return Decision("hold", "Every generation in your cohort is reviewed before it runs.")
    return ALLOW


# -- files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyFile:
    path: Path
    cohorts: dict[str, Policy] = field(default_factory=dict)


_ANY_HEADER = re.compile(r"^\s*\[")


def _assignment_line(lines: list[str], header: int, setting: str | None) -> int:
    """The 1-based line assigning ``setting`` in the table opened at ``header`` (0-based),
    or the header's own line."""
    if setting:
        assignment = re.compile(rf"^\s*{re.escape(setting)}\s*=")
        for i in range(header + 1, len(lines)):
            if _ANY_HEADER.match(lines[i]):
                break
            if assignment.match(lines[i]):
                return i + 1
    return header + 1


def _line_of(text: str, cohort: str, error: PolicyError | None) -> int:
    """Best line to point at for an error in cohort ``cohort``: the offending setting in
    ``[cohorts.<cohort>]``, or the offending key of its ``[[cohorts.<cohort>.prompt_rules]]``
    entry."""
    lines = text.splitlines()
    name = rf'"?{re.escape(cohort)}"?'
    table = re.compile(rf"^\s*\[\s*cohorts\.{name}\s*\]")
    rules = re.compile(rf"^\s*\[\[\s*cohorts\.{name}\.prompt_rules\s*\]\]")
    ours = [i for i, line in enumerate(lines) if table.match(line) or rules.match(line)]
    if not ours:
        return 1
    if error is not None and error.rule is not None:
        entries = [i for i in ours if rules.match(lines[i])]
        if error.rule < len(entries):
            return _assignment_line(lines, entries[error.rule], error.rule_setting)
    # TOML lets [cohorts.x] come after its [[cohorts.x.prompt_rules]]: prefer the table.
    header = next((i for i in ours if table.match(lines[i])), ours[0])
    return _assignment_line(lines, header, error.field if error else None)


def load_policy_file(path: str | Path) -> PolicyFile:
    """Parse and validate a policies file. Raises PolicyError with ``file:line: message``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyError(f"{path}: {exc.strerror}") from None
    return load_policy_text(text, path)


def load_policy_text(text: str, path: Path) -> PolicyFile:
    """Parse and validate the text of a policies file (``path`` names it in messages, e.g.
    ``<stdin>``). Raises PolicyError with ``file:line: message``."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: {exc}") from None
    extra = sorted(set(table) - {"cohorts"})
    if extra:
        raise PolicyError(f"{path}:1: unknown top-level table {extra[0]!r}; use [cohorts.NAME]")
    cohorts = table.get("cohorts", {})
    if not isinstance(cohorts, dict) or not cohorts:
        raise PolicyError(f"{path}:1: no [cohorts.NAME] tables")
    loaded = {}
    for cohort, raw in cohorts.items():
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", cohort):
            raise PolicyError(f"{path}:{_line_of(text, cohort, None)}: bad cohort name {cohort!r}")
        try:
            loaded[cohort] = policy_from_mapping(raw)
        except PolicyError as exc:
            line = _line_of(text, cohort, exc)
            raise PolicyError(f"{path}:{line}: cohort {cohort}: {exc}", exc.field) from None
    return PolicyFile(path, loaded)
