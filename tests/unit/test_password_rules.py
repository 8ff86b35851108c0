"""New-password rules (S1, NIST SP 800-63B §5.1.1.2) and the k-anonymity checker (S5), no I/O."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

import pytest

from tutela.core.errors import WeakPassword
from tutela.identity.breached import BreachChecker, MemoryRangeStore, RangeStore, sha1_hex
from tutela.identity.password_rules import (
    GUIDANCE,
    MAX_LENGTH,
    MIN_LENGTH,
    RECOMMENDED_LENGTH,
    check_new_password,
    normalise,
    strength_hint,
)

EMAIL = "ana.souza@example.com"


@pytest.fixture
def breaches() -> BreachChecker:
    """A few entries of the common list, lowercased as the default corpus holds them."""
    store = MemoryRangeStore()
    for rank, word in enumerate(["123456", "password", "12345678", "iloveyou", "qwerty123"]):
        store.add(word, 1_000_000 // (rank + 1))
    return BreachChecker(store)


def refused(password: str, breaches: BreachChecker, *, email: str | None = EMAIL) -> str:
    with pytest.raises(WeakPassword) as caught:
        check_new_password(password, email=email, breaches=breaches)
    assert caught.value.status == 422
    return caught.value.code


def test_lengths_follow_nist() -> None:
    """S1: at least 8, 15 recommended, at least 64 allowed."""
    assert MIN_LENGTH == 8
    assert RECOMMENDED_LENGTH == 15
    assert MAX_LENGTH >= 64
    assert "8" in GUIDANCE and "15" in GUIDANCE


def test_seven_characters_are_too_short(breaches: BreachChecker) -> None:
    assert refused("kx7#mq2", breaches) == "password_too_short"
    assert refused("", breaches) == "password_too_short"


def test_eight_characters_are_enough(breaches: BreachChecker) -> None:
    assert check_new_password("kx7#mq2w", email=EMAIL, breaches=breaches) == "kx7#mq2w"


def test_length_is_counted_in_code_points_after_normalisation(breaches: BreachChecker) -> None:
    decomposed = "e\u0301" * 4 + "xyz"  # 11 code points typed, 7 once composed
    assert len(decomposed) == 11
    assert refused(decomposed, breaches) == "password_too_short"
    animals = "🐢🦊🐙🦉🐝🦋🐞🐌"  # 8 code points, 32 bytes
    assert check_new_password(animals, email=EMAIL, breaches=breaches) == animals


def test_a_64_character_passphrase_with_spaces_and_unicode_is_accepted(
    breaches: BreachChecker,
) -> None:
    phrase = "correct horse battery staple, ça marche très bien 東京の夜 ☕ Ωμέγα!!"
    assert len(phrase) == 64 and normalise(phrase) == phrase
    assert check_new_password(phrase, email=EMAIL, breaches=breaches) == phrase


def test_up_to_the_maximum_is_accepted_and_beyond_is_refused(breaches: BreachChecker) -> None:
    words = "plum velvet orbit lantern cactus ripple "
    longest = (words * 10)[:MAX_LENGTH]
    assert check_new_password(longest, email=EMAIL, breaches=breaches) == longest
    assert refused(longest + "x", breaches) == "password_too_long"
    assert refused(words * 1_000, breaches) == "password_too_long"


def test_no_composition_rules(breaches: BreachChecker) -> None:
    """S1: only lowercase letters, or only digits, is fine when long and unknown."""
    for password in ["purple monkey dishwasher", "83920174659", "ALLCAPSBUTLONGENOUGH"]:
        assert check_new_password(password, email=EMAIL, breaches=breaches) == password


@pytest.mark.parametrize("password", ["password", "iloveyou", "qwerty123", "PassWord", "ILOVEYOU"])
def test_breached_or_common_passwords_are_refused(password: str, breaches: BreachChecker) -> None:
    assert refused(password, breaches) == "password_breached"


@pytest.mark.parametrize(
    "password",
    ["tutela2026!", "my TUTELA account", "ana.souza@example.com", "ANA.SOUZA-2026", "x" + EMAIL],
)
def test_the_service_name_or_the_email_is_refused(password: str, breaches: BreachChecker) -> None:
    assert refused(password, breaches) == "password_context"


def test_a_short_local_part_is_not_held_against_the_password(breaches: BreachChecker) -> None:
    accepted = check_new_password("banana split forever", email="ana@ex.org", breaches=breaches)
    assert accepted == "banana split forever"
    assert refused("ana@ex.org rocks", breaches, email="ana@ex.org") == "password_context"


def test_the_service_name_can_be_another(breaches: BreachChecker) -> None:
    with pytest.raises(WeakPassword) as caught:
        check_new_password(
            "welcome to Acme Cloud", email=None, breaches=breaches, service_name="acme"
        )
    assert caught.value.code == "password_context"
    assert check_new_password(
        "tutela is fine here", email=None, breaches=breaches, service_name="acme"
    )


@pytest.mark.parametrize(
    "password", ["aaaaaaaa", "        ", "12345678", "abcdefgh", "87654321", "ABCDEFGHIJ"]
)
def test_one_repeated_character_or_a_plain_run_is_refused(
    password: str, breaches: BreachChecker
) -> None:
    assert refused(password, breaches) == "password_repetitive"


def test_repetition_is_judged_on_the_whole_password(breaches: BreachChecker) -> None:
    for password in ["abcdefgh1", "aaaaaaaab", "1234567890 is my lucky run"]:
        assert check_new_password(password, email=None, breaches=breaches) == password


def test_nfkc_normalisation() -> None:
    assert normalise("ｐａｓｓｗｏｒｄ") == "password"  # full-width letters
    assert normalise("ﬁre") == "fire"  # ligature
    assert normalise("e\u0301") == "\u00e9"
    assert normalise("café") == unicodedata.normalize("NFKC", "café")


def test_the_reason_is_given_never_the_password(breaches: BreachChecker) -> None:
    for password in ["iloveyou", "Zq9-tutela-xw", "mmmmmmmmmm", "Zq9x"]:
        with pytest.raises(WeakPassword) as caught:
            check_new_password(password, email=EMAIL, breaches=breaches)
        assert caught.value.detail.endswith(".")
        assert password.casefold() not in caught.value.detail.casefold()


def test_the_normalised_password_is_returned_and_checked(breaches: BreachChecker) -> None:
    assert refused("ｐａｓｓｗｏｒｄ", breaches) == "password_breached"
    got = check_new_password("Ｃｏｒｒｅｃｔ horse battery", email=EMAIL, breaches=breaches)
    assert got == "Correct horse battery"


def test_strength_hint_recommends_fifteen() -> None:
    assert "15" in strength_hint("short")
    assert "15" in strength_hint("eleven char")
    assert strength_hint("a passphrase of fifteen or more") == ""


def test_sha1_hex_matches_the_pwned_passwords_vector() -> None:
    assert sha1_hex("password") == "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8"


class RecordingStore:
    """A range store that notes every prefix it is asked for."""

    def __init__(self, inner: RangeStore) -> None:
        self.inner = inner
        self.asked: list[str] = []

    def range(self, prefix: str) -> Mapping[str, int]:
        self.asked.append(prefix)
        return self.inner.range(prefix)


def test_only_a_five_hex_prefix_reaches_the_store() -> None:
    """S5: the password and its full hash never leave the checker."""
    inner = MemoryRangeStore()
    inner.add("hunter22", 42)
    store = RecordingStore(inner)
    assert BreachChecker(store).count("Hunter22") == 42  # found through the lowercased form
    expected = {sha1_hex("Hunter22")[:5], sha1_hex("hunter22")[:5]}
    assert set(store.asked) == expected
    assert all(len(p) == 5 and p == p.upper() for p in store.asked)


def test_the_largest_count_is_returned() -> None:
    store = MemoryRangeStore()
    store.add("Summer2024", 3)
    store.add("summer2024", 70)
    assert BreachChecker(store).count("Summer2024") == 70
    assert BreachChecker(store).count("autumn2024") == 0


def test_a_store_refuses_anything_but_a_prefix() -> None:
    store = MemoryRangeStore()
    for bad in ["5baa6", "5BAA61E4C9", "5BAA", "XYZ12"]:
        with pytest.raises(ValueError, match="5 uppercase hex"):
            store.range(bad)
