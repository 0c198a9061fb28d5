"""The verified-token cache on its own (no server): deadlines, bound, isolation."""

from __future__ import annotations

from app.verified_tokens import VerifiedTokens

NOW = 1_000_000.0


def test_an_entry_lives_until_exp_plus_the_leeway_and_no_longer():
    tokens = VerifiedTokens(max_age=3600, leeway=30)
    tokens.put("t", {"sub": "d", "exp": NOW + 10}, now=NOW)
    assert tokens.get("t", now=NOW + 39.9) == {"sub": "d", "exp": NOW + 10}
    assert tokens.get("t", now=NOW + 40) is None  # PyJWT refuses it from exp + leeway on
    assert len(tokens) == 0


def test_an_entry_lives_at_most_max_age_even_for_a_long_token():
    tokens = VerifiedTokens(max_age=60, leeway=0)
    tokens.put("t", {"sub": "d", "exp": NOW + 86400}, now=NOW)
    assert tokens.get("t", now=NOW + 59) is not None
    assert tokens.get("t", now=NOW + 60) is None


def test_a_token_past_its_deadline_is_not_stored():
    tokens = VerifiedTokens(max_age=60, leeway=0)
    tokens.put("t", {"sub": "d", "exp": NOW - 1}, now=NOW)
    assert tokens.get("t", now=NOW) is None


def test_max_age_zero_stores_nothing():
    tokens = VerifiedTokens(max_age=0, leeway=30)
    tokens.put("t", {"sub": "d", "exp": NOW + 10}, now=NOW)
    assert len(tokens) == 0


def test_the_cache_is_bounded_and_drops_its_oldest_entry_first():
    tokens = VerifiedTokens(max_age=60, leeway=0, max_entries=3)
    for name in "abcd":
        tokens.put(name, {"sub": name}, now=NOW)
    assert len(tokens) == 3
    assert tokens.get("a", now=NOW) is None
    assert [tokens.get(name, now=NOW)["sub"] for name in "bcd"] == ["b", "c", "d"]


def test_each_caller_gets_its_own_claims_dict():
    tokens = VerifiedTokens(max_age=60, leeway=0)
    claims = {"sub": "d", "roles": ["device"]}
    tokens.put("t", claims, now=NOW)
    claims["sub"] = "changed after verification"
    served = tokens.get("t", now=NOW)
    served["sub"] = "changed by a request"
    assert tokens.get("t", now=NOW)["sub"] == "d"


def test_an_entry_never_outlives_the_key_set_it_was_verified_with():
    tokens = VerifiedTokens(max_age=3600, leeway=30)
    tokens.put("t", {"sub": "d", "exp": NOW + 600}, now=NOW, not_after=NOW + 5)
    assert tokens.get("t", now=NOW + 4.9) is not None
    assert tokens.get("t", now=NOW + 5) is None
