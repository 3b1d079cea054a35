"""Cohort policies: validation of every setting, policy files refused at load with the file
and the line, the allow / deny / hold decision, and changes through the admin API and the
CLI that take effect with the next request and are recorded with their actor."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import responses

from keys.access.admin_tokens import IssuedToken
from keys.access.lifecycle import IssuedKey
from keys.limits.policies import (
    KNOWN_MODELS,
    KNOWN_SECONDS,
    KNOWN_SIZES,
    MAX_LIMIT,
    GenerationRequest,
    Policy,
    PolicyError,
    PromptRule,
    decide,
    load_policy_file,
    policy_from_mapping,
)
from keys.models import CohortPolicy, PolicyOverride, Tester
from keys.store import Store
from tests.flows import FakeBackend, admin_call, create_video, ok
from tests.helpers import Cli, FakeClock, assert_error

ROOT = Path(__file__).resolve().parents[2]

EVERY_SETTING: dict[str, Any] = {
    "requests_per_minute": 7,
    "requests_per_day": 70,
    "generations_per_day": 3,
    "video_seconds_per_day": 24,
    "video_seconds_per_month": 96,
    "concurrent_jobs": 1,
    "models": ["sora-2-pro"],
    "sizes": ["1280x720", "1792x1024"],
    "seconds": [8, 12],
    "prompt_rules": [
        {"pattern": "(?i)volcano", "action": "hold", "reason": "  Volcanoes are reviewed.  "},
        {"pattern": "gore", "action": "deny", "reason": "No gore."},
    ],
    "hold_generations": True,
    "content_requires_approval": True,
    "sharing": "off",
    "share_link_seconds": 3600,
}


# -- parsing and validation ------------------------------------------------------------


def test_every_setting_is_parsed() -> None:
    policy = policy_from_mapping(EVERY_SETTING)

    assert policy == Policy(
        requests_per_minute=7,
        requests_per_day=70,
        generations_per_day=3,
        video_seconds_per_day=24,
        video_seconds_per_month=96,
        concurrent_jobs=1,
        models=("sora-2-pro",),
        sizes=("1280x720", "1792x1024"),
        seconds=(8, 12),
        prompt_rules=(
            PromptRule("(?i)volcano", "hold", "Volcanoes are reviewed."),
            PromptRule("gore", "deny", "No gore."),
        ),
        hold_generations=True,
        content_requires_approval=True,
        sharing="off",
        share_link_seconds=3600,
    )
    # The stored form reads back to the same policy.
    assert policy_from_mapping(policy.to_json()) == policy
    assert json.loads(json.dumps(policy.to_json())) == policy.to_json()


def test_an_empty_mapping_is_the_default_policy() -> None:
    assert policy_from_mapping({}) == Policy()
    assert Policy().models == KNOWN_MODELS and Policy().sizes == KNOWN_SIZES
    assert Policy().seconds == KNOWN_SECONDS


def test_an_unknown_setting_is_refused_by_name() -> None:
    with pytest.raises(PolicyError) as caught:
        policy_from_mapping({"generations_per_day": 3, "videos_per_day": 3})
    assert caught.value.field == "videos_per_day"
    assert "unknown policy setting 'videos_per_day'" in str(caught.value)


LIMITS = [
    "requests_per_minute",
    "requests_per_day",
    "generations_per_day",
    "video_seconds_per_day",
    "video_seconds_per_month",
    "concurrent_jobs",
    "share_link_seconds",
]


@pytest.mark.parametrize("name", LIMITS)
@pytest.mark.parametrize("value", [-1, -4, MAX_LIMIT + 1, 10**30, 1.5, "10", True, None, [3]])
def test_limits_must_be_integers_in_range(name: str, value: Any) -> None:
    with pytest.raises(PolicyError) as caught:
        policy_from_mapping({name: value})
    assert caught.value.field == name
    assert name in str(caught.value)


@pytest.mark.parametrize("name", LIMITS)
def test_limits_accept_their_bounds(name: str) -> None:
    assert getattr(policy_from_mapping({name: 0}), name) == 0
    assert getattr(policy_from_mapping({name: MAX_LIMIT}), name) == MAX_LIMIT


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("models", []),
        ("models", "sora-2"),
        ("models", ["sora-3"]),
        ("models", ["sora-2", 2]),
        ("sizes", ["640x480"]),
        ("sizes", []),
        ("seconds", [5]),
        ("seconds", ["4"]),
        ("seconds", [True]),
        ("seconds", 4),
        ("hold_generations", "yes"),
        ("hold_generations", 1),
        ("content_requires_approval", None),
        ("sharing", "public"),
        ("sharing", True),
        ("prompt_rules", "deny everything"),
        ("prompt_rules", {"pattern": "x", "action": "deny", "reason": "r"}),
    ],
)
def test_value_settings_are_checked(name: str, value: Any) -> None:
    with pytest.raises(PolicyError) as caught:
        policy_from_mapping({name: value})
    assert caught.value.field == name


def test_allowed_values_are_deduplicated_in_order() -> None:
    policy = policy_from_mapping({"seconds": [12, 4, 12], "models": ["sora-2", "sora-2"]})
    assert policy.seconds == (12, 4) and policy.models == ("sora-2",)


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ({"pattern": "(unclosed", "action": "deny", "reason": "r"}, "not a valid regex"),
        ({"pattern": "[z-a]", "action": "hold", "reason": "r"}, "not a valid regex"),
        ({"pattern": "", "action": "deny", "reason": "r"}, "pattern"),
        ({"pattern": "x" * 501, "action": "deny", "reason": "r"}, "pattern"),
        ({"pattern": 5, "action": "deny", "reason": "r"}, "pattern"),
        ({"pattern": "x", "action": "allow", "reason": "r"}, "action"),
        ({"pattern": "x", "action": "deny"}, "reason"),
        ({"pattern": "x", "action": "deny", "reason": "   "}, "reason"),
        ({"pattern": "x", "action": "hold", "reason": 3}, "reason"),
        ({"pattern": "x", "action": "deny", "reason": "r", "flags": "i"}, "pattern, action"),
        ("x", "pattern, action"),
    ],
)
def test_prompt_rules_are_checked(rule: Any, fragment: str) -> None:
    ok_rule = {"pattern": "fine", "action": "hold", "reason": "fine"}
    with pytest.raises(PolicyError) as caught:
        policy_from_mapping({"prompt_rules": [ok_rule, rule]})
    assert caught.value.field == "prompt_rules"
    message = str(caught.value)
    assert "prompt_rules[1]" in message and fragment in message


def test_overrides_are_validated_like_policies() -> None:
    base = Policy(models=("sora-2",))
    assert base.with_overrides({"generations_per_day": 5}).generations_per_day == 5
    assert base.with_overrides({"generations_per_day": 5}).models == ("sora-2",)
    with pytest.raises(PolicyError) as caught:
        base.with_overrides({"concurrent_jobs": -1})
    assert caught.value.field == "concurrent_jobs"


# -- policy files ----------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policies.toml"
    path.write_text(text)
    return path


def load_error(path: Path) -> str:
    with pytest.raises(PolicyError) as caught:
        load_policy_file(path)
    return str(caught.value)


def test_the_shipped_policies_file_loads_and_documents_the_defaults() -> None:
    loaded = load_policy_file(ROOT / "config" / "policies.toml")

    assert set(loaded.cohorts) == {"default", "artists", "red-team"}
    # [cohorts.default] documents the built-in defaults: the two must never drift apart.
    assert loaded.cohorts["default"] == Policy()
    artists = loaded.cohorts["artists"]
    assert artists.models == ("sora-2",)
    celebrity = GenerationRequest(prompt="The President dancing on the moon")
    assert decide(artists, celebrity).action == "hold"
    assert decide(artists, GenerationRequest(prompt="a kite")).action == "allow"
    red_team = loaded.cohorts["red-team"]
    assert red_team.hold_generations and red_team.content_requires_approval
    assert red_team.sharing == "off"


def test_a_toml_syntax_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[cohorts.default]\ngenerations_per_day = 5\nconcurrent_jobs = = 2\n",
    )
    message = load_error(path)
    assert str(path) in message
    assert "line 3" in message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    message = load_error(tmp_path / "nowhere.toml")
    assert str(tmp_path / "nowhere.toml") in message


def test_a_bad_setting_names_the_file_and_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# policies\n"
        "[cohorts.default]\n"
        "generations_per_day = 5\n"
        "\n"
        "[cohorts.artists]\n"
        "generations_per_day = 5\n"
        "concurrent_jobs = -3\n",
    )
    message = load_error(path)
    assert message.startswith(f"{path}:7: cohort artists: concurrent_jobs")


def test_an_unknown_setting_names_the_file_and_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[cohorts.artists]\ngenerations_per_day = 5\nvideos_per_day = 5\n",
    )
    message = load_error(path)
    assert message.startswith(f"{path}:3: cohort artists: unknown policy setting")


def test_a_bad_prompt_rule_names_the_line_of_its_entry(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[cohorts.artists]\n"  # 1
        "generations_per_day = 5\n"  # 2
        "\n"  # 3
        "[[cohorts.artists.prompt_rules]]\n"  # 4
        'pattern = "ok"\n'  # 5
        'action = "hold"\n'  # 6
        'reason = "fine"\n'  # 7
        "\n"  # 8
        "[[cohorts.artists.prompt_rules]]\n"  # 9
        'pattern = "(unclosed"\n'  # 10
        'action = "deny"\n'  # 11
        'reason = "bad regex"\n',  # 12
    )
    message = load_error(path)
    assert message.startswith(f"{path}:10: cohort artists: prompt_rules[1].pattern"), message


def test_a_prompt_rule_without_a_reason_names_its_entry(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[cohorts.artists]\n"  # 1
        "[[cohorts.artists.prompt_rules]]\n"  # 2
        'pattern = "ok"\n'  # 3
        'action = "hold"\n'  # 4
        'reason = "fine"\n'  # 5
        "[[cohorts.artists.prompt_rules]]\n"  # 6
        'pattern = "celebrity"\n'  # 7
        'action = "deny"\n',  # 8
    )
    message = load_error(path)
    assert message.startswith(f"{path}:6: cohort artists: prompt_rules[1].reason"), message


def test_a_prompt_rule_error_is_placed_in_its_own_cohort(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[cohorts.default]\n"  # 1
        "[[cohorts.default.prompt_rules]]\n"  # 2
        'pattern = "ok"\n'  # 3
        'action = "hold"\n'  # 4
        'reason = "fine"\n'  # 5
        "[cohorts.artists]\n"  # 6
        "concurrent_jobs = 1\n"  # 7
        "[[cohorts.artists.prompt_rules]]\n"  # 8
        'pattern = "x"\n'  # 9
        'action = "block"\n'  # 10
        'reason = "r"\n',  # 11
    )
    message = load_error(path)
    assert message.startswith(f"{path}:10: cohort artists: prompt_rules[0].action"), message


def test_a_cohort_table_after_its_rules_and_a_quoted_name_are_located(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[[cohorts.artists.prompt_rules]]\n"  # 1
        'pattern = "x"\n'  # 2
        'action = "hold"\n'  # 3
        'reason = "r"\n'  # 4
        "[cohorts.artists]\n"  # 5
        "concurrent_jobs = -1\n",  # 6
    )
    assert load_error(path).startswith(f"{path}:6: cohort artists: concurrent_jobs")
    path = write(tmp_path, '[cohorts.default]\n\n[cohorts."red-team"]\nsharing = "public"\n')
    assert load_error(path).startswith(f"{path}:4: cohort red-team: sharing")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[limits]\nx = 1\n", ":1: unknown top-level table 'limits'"),
        ("# nothing here\n", ":1: no [cohorts.NAME] tables"),
        ("[cohorts.Artists]\nconcurrent_jobs = 1\n", "bad cohort name 'Artists'"),
    ],
)
def test_file_level_mistakes_are_refused(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text)
    message = load_error(path)
    assert message.startswith(str(path)) and fragment in message


# -- the decision ----------------------------------------------------------------------


def test_values_outside_the_policy_are_denied_naming_the_param() -> None:
    policy = Policy(models=("sora-2",), sizes=("720x1280",), seconds=(4,))
    cases = {
        "model": GenerationRequest(model="sora-2-pro", prompt="p"),
        "size": GenerationRequest(size="1280x720", prompt="p"),
        "seconds": GenerationRequest(seconds=12, prompt="p"),
    }
    for param, request in cases.items():
        decision = decide(policy, request)
        assert decision.action == "deny" and decision.param == param
        assert "not available to your cohort" in str(decision.reason)
    assert decide(policy, GenerationRequest(prompt="p")).action == "allow"


def test_a_deny_rule_beats_a_hold_rule_whatever_their_order() -> None:
    hold = PromptRule("(?i)volcano", "hold", "Volcanoes are reviewed.")
    deny = PromptRule("(?i)lava", "deny", "No lava, ever.")
    for rules in ((hold, deny), (deny, hold)):
        policy = Policy(prompt_rules=rules)
        decision = decide(policy, GenerationRequest(prompt="A VOLCANO spitting lava"))
        assert (decision.action, decision.reason, decision.param) == (
            "deny",
            "No lava, ever.",
            "prompt",
        )
        held = decide(policy, GenerationRequest(prompt="a quiet volcano"))
        assert (held.action, held.reason) == ("hold", "Volcanoes are reviewed.")


def test_rules_search_anywhere_in_the_prompt() -> None:
    policy = Policy(prompt_rules=(PromptRule(r"\bking\b", "hold", "Royals are reviewed."),))
    assert decide(policy, GenerationRequest(prompt="the old king smiles")).action == "hold"
    assert decide(policy, GenerationRequest(prompt="a kingfisher")).action == "allow"


def test_hold_generations_holds_everything_the_rules_allow() -> None:
    policy = Policy(hold_generations=True, prompt_rules=(PromptRule("gore", "deny", "No gore."),))
    decision = decide(policy, GenerationRequest(prompt="a kite"))
    assert decision.action == "hold" and decision.reason
    assert decide(policy, GenerationRequest(prompt="gore")).action == "deny"
    # The policy's values are still checked first.
    narrow = Policy(hold_generations=True, models=("sora-2",))
    assert decide(narrow, GenerationRequest(model="sora-2-pro", prompt="x")).action == "deny"


# -- changes through the admin API -----------------------------------------------------


@pytest.fixture
def upstream() -> Iterator[FakeBackend]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakeBackend(mock)


def actor_of(token: IssuedToken) -> str:
    return f"{token.token.role}:{token.token.id}:{token.token.name}"


def audit_actions(store: Store, action: str) -> list[Any]:
    with store.read() as tx:
        return [entry for entry in tx.audit.entries() if entry.action == action]


def test_a_cohort_policy_change_takes_effect_on_the_next_request(
    client: Any,
    upstream: FakeBackend,
    admin: IssuedToken,
    make_tester: Callable[..., Tester],
    make_key: Callable[..., IssuedKey],
    store: Store,
    clock: FakeClock,
) -> None:
    key = make_key(make_tester(cohort="artists").id)
    ok(create_video(client, key, model="sora-2-pro"))

    changed = ok(
        admin_call(client, admin, "PUT", "/cohorts/artists/policy", {"models": ["sora-2"]})
    )
    assert changed["changed"] is True and changed["policy"]["models"] == ["sora-2"]

    # The same app, no restart: the very next request runs under the new policy.
    error = assert_error(
        create_video(client, key, model="sora-2-pro"), 403, "policy_violation", "model"
    )
    assert "sora-2-pro is not available to your cohort" in error["message"]
    ok(create_video(client, key, model="sora-2"))

    # A second change later is picked up too.
    clock.advance(seconds=1)
    ok(admin_call(client, admin, "PUT", "/cohorts/artists/policy", {"models": ["sora-2-pro"]}))
    assert_error(create_video(client, key, model="sora-2"), 403, "policy_violation", "model")

    entries = audit_actions(store, "policy.set")
    assert [(e.actor, e.target) for e in entries] == [(actor_of(admin), "cohort:artists")] * 2
    assert entries[0].details["policy"]["models"] == ["sora-2"]
    listed = ok(admin_call(client, admin, "GET", "/cohorts"))["data"]
    assert listed == [{"cohort": "artists", "policy": Policy(models=("sora-2-pro",)).to_json()}]


def test_changes_in_the_same_instant_each_take_effect(
    client: Any,
    upstream: FakeBackend,
    admin: IssuedToken,
    make_tester: Callable[..., Tester],
    make_key: Callable[..., IssuedKey],
) -> None:
    """Workers cache a parsed policy per version; a change in the same clock tick (the fake
    clock never moves here) is still a new version."""
    tester = make_tester(cohort="artists")
    key = make_key(tester.id)
    for models, refused in ((["sora-2"], "sora-2-pro"), (["sora-2-pro"], "sora-2")) * 2:
        policy = {"models": models, "concurrent_jobs": 10}
        ok(admin_call(client, admin, "PUT", "/cohorts/artists/policy", policy))
        assert_error(create_video(client, key, model=refused), 403, "policy_violation", "model")
    path = f"/testers/{tester.id}/policy"
    for seconds in ([8], [12], [8]):
        ok(admin_call(client, admin, "PUT", path, {"seconds": seconds}))
        refused = create_video(client, key, model="sora-2-pro", seconds="4")
        assert_error(refused, 403, "policy_violation", "seconds")
        ok(admin_call(client, admin, "DELETE", path))
        ok(create_video(client, key, model="sora-2-pro", seconds="4"))


def test_an_unchanged_policy_is_not_recorded_twice(
    client: Any, admin: IssuedToken, store: Store
) -> None:
    first = ok(admin_call(client, admin, "PUT", "/cohorts/artists/policy", {"sharing": "off"}))
    again = ok(admin_call(client, admin, "PUT", "/cohorts/artists/policy", {"sharing": "off"}))
    assert (first["changed"], again["changed"]) == (True, False)
    assert len(audit_actions(store, "policy.set")) == 1


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"generations_per_day": -1}, "generations_per_day"),
        ({"video_seconds_per_month": 10**12}, "video_seconds_per_month"),
        ({"generations_per_day": "5"}, "generations_per_day"),
        ({"frames_per_day": 5}, "frames_per_day"),
        ({"models": ["sora-3"]}, "models"),
        ({"prompt_rules": [{"pattern": "(", "action": "deny", "reason": "r"}]}, "prompt_rules"),
        ({"prompt_rules": [{"pattern": "x", "action": "hold"}]}, "prompt_rules"),
        ({"sharing": "public"}, "sharing"),
    ],
)
def test_a_malformed_cohort_policy_is_refused_and_nothing_is_stored(
    client: Any, admin: IssuedToken, store: Store, payload: dict[str, Any], param: str
) -> None:
    response = admin_call(client, admin, "PUT", "/cohorts/artists/policy", payload)

    assert_error(response, 400, "invalid_value", param)
    with store.read() as tx:
        assert tx.session.get(CohortPolicy, "artists") is None
    assert audit_actions(store, "policy.set") == []


def test_cohort_policy_input_that_is_not_a_policy_is_refused(
    client: Any, admin: IssuedToken, store: Store
) -> None:
    response = client.put(
        "/admin/v1/cohorts/artists/policy",
        data="[1, 2]",
        headers={"Authorization": f"Bearer {admin.secret}", "Content-Type": "application/json"},
    )
    assert_error(response, 400, "invalid_json")
    response = admin_call(client, admin, "PUT", "/cohorts/Bad%20Name/policy", {})
    assert response.status_code in (400, 404)
    with store.read() as tx:
        assert tx.policies.cohorts() == {}


@pytest.mark.parametrize("role", ["auditor", "approver"])
def test_only_admins_change_policies(
    client: Any,
    make_token: Callable[..., IssuedToken],
    make_tester: Callable[..., Tester],
    store: Store,
    role: str,
) -> None:
    token = make_token(role)
    tester = make_tester()
    response = admin_call(client, token, "PUT", "/cohorts/artists/policy", {"sharing": "off"})
    assert_error(response, 403, "permission_denied")
    response = admin_call(
        client, token, "PUT", f"/testers/{tester.id}/policy", {"concurrent_jobs": 9}
    )
    assert_error(response, 403, "permission_denied")
    with store.read() as tx:
        assert tx.policies.cohorts() == {}
        assert tx.session.get(PolicyOverride, tester.id) is None


def test_per_tester_overrides_through_the_api(
    client: Any,
    upstream: FakeBackend,
    admin: IssuedToken,
    make_tester: Callable[..., Tester],
    make_key: Callable[..., IssuedKey],
    store: Store,
    clock: FakeClock,
) -> None:
    tester = make_tester(cohort="artists")
    other = make_key(make_tester(cohort="artists").id)
    key = make_key(tester.id)
    ok(admin_call(client, admin, "PUT", "/cohorts/artists/policy", {"generations_per_day": 5}))

    set_ = ok(
        admin_call(client, admin, "PUT", f"/testers/{tester.id}/policy", {"generations_per_day": 1})
    )
    assert set_["overrides"] == {"generations_per_day": 1}
    assert set_["policy"]["generations_per_day"] == 1
    shown = ok(admin_call(client, admin, "GET", f"/testers/{tester.id}/policy"))
    assert shown["policy"] == Policy(generations_per_day=1).to_json()

    ok(create_video(client, key))
    assert_error(create_video(client, key), 429, "quota_exceeded", "generations_per_day")
    # Only this tester: the rest of the cohort keeps the cohort's policy.
    ok(create_video(client, other))
    ok(create_video(client, other))

    entries = audit_actions(store, "policy.override")
    assert [(e.actor, e.target, e.details) for e in entries] == [
        (actor_of(admin), tester.id, {"overrides": {"generations_per_day": 1}})
    ]

    clock.advance(seconds=1)
    ok(admin_call(client, admin, "DELETE", f"/testers/{tester.id}/policy"))
    ok(create_video(client, key))  # back to the cohort's 5 a day
    assert [e.actor for e in audit_actions(store, "policy.override_cleared")] == [actor_of(admin)]


def test_a_malformed_override_is_refused_and_nothing_is_stored(
    client: Any, admin: IssuedToken, make_tester: Callable[..., Tester], store: Store
) -> None:
    tester = make_tester()
    for payload, param in (
        ({"concurrent_jobs": -2}, "concurrent_jobs"),
        ({"seconds": [5]}, "seconds"),
        ({"max_videos": 3}, "max_videos"),
    ):
        response = admin_call(client, admin, "PUT", f"/testers/{tester.id}/policy", payload)
        assert_error(response, 400, "invalid_value", param)
    response = admin_call(client, admin, "PUT", "/testers/tst_missing/policy", {})
    assert_error(response, 404, "not_found")
    with store.read() as tx:
        assert tx.session.get(PolicyOverride, tester.id) is None
    assert audit_actions(store, "policy.override") == []


# -- changes through the CLI -----------------------------------------------------------


def test_per_tester_overrides_through_the_cli(
    cli: Cli,
    client: Any,
    upstream: FakeBackend,
    make_tester: Callable[..., Tester],
    make_key: Callable[..., IssuedKey],
    store: Store,
) -> None:
    tester = make_tester()
    key = make_key(tester.id)

    cli("policies", "override", tester.id, "--set", "generations_per_day=1", "--set",
        'models=["sora-2"]')  # fmt: skip
    shown = json.loads(cli("policies", "show", "--tester", tester.id, "--json").output)
    assert shown["overrides"] == {"generations_per_day": 1, "models": ["sora-2"]}
    assert shown["policy"]["generations_per_day"] == 1

    # The running app sees the change with its next request.
    assert_error(create_video(client, key, model="sora-2-pro"), 403, "policy_violation", "model")
    ok(create_video(client, key))
    assert_error(create_video(client, key), 429, "quota_exceeded", "generations_per_day")
    entries = audit_actions(store, "policy.override")
    assert len(entries) == 1 and entries[0].actor.startswith("cli:")

    bad = cli("policies", "override", tester.id, "--set", "concurrent_jobs=-1", code=None)
    assert bad.exit_code == 1 and "concurrent_jobs" in bad.output
    bad = cli("policies", "override", tester.id, "--set", "concurrent_jobs", code=None)
    assert bad.exit_code == 2
    # The refused overrides changed nothing.
    shown = json.loads(cli("policies", "show", "--tester", tester.id, "--json").output)
    assert shown["overrides"] == {"generations_per_day": 1, "models": ["sora-2"]}

    cli("policies", "clear-override", tester.id)
    shown = json.loads(cli("policies", "show", "--tester", tester.id, "--json").output)
    assert shown["overrides"] == {} and shown["policy"] == Policy().to_json()


def test_policies_apply_stores_a_file_or_refuses_it_with_file_and_line(
    cli: Cli, store: Store, tmp_path: Path
) -> None:
    applied = cli("policies", "apply", str(ROOT / "config" / "policies.toml")).output
    assert "artists: updated" in applied
    with store.read() as tx:
        assert tx.policies.policy("artists").models == ("sora-2",)
    again = cli("policies", "apply", str(ROOT / "config" / "policies.toml")).output
    assert "artists: unchanged" in again

    path = write(tmp_path, "[cohorts.artists]\nconcurrent_jobs = 2\nmodels = []\n")
    result = cli("policies", "apply", str(path), code=None)
    assert result.exit_code == 1
    assert f"{path}:3: cohort artists: models" in result.output
    with store.read() as tx:
        assert tx.policies.policy("artists").concurrent_jobs == 3
