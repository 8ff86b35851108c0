"""The breach store on SQLite and PostgreSQL: the seeded common list, imports, k-anonymity.

S1 (blocklist), S5 (only a 5-hex prefix leaves the checker), R7 (one store for sign-up,
change and sign-in). The store is seeded once per session (tests/conftest.py); ranges
added here are hashes of random strings, so they never meet another test's.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tutela.container import Container
from tutela.core.errors import InvalidInput, WeakPassword
from tutela.identity.breached import (
    BreachChecker,
    ImportResult,
    RangeStore,
    SqlRangeStore,
    default_corpus,
    import_lines,
    import_path,
    seed_default,
    sha1_hex,
)
from tutela.identity.models import BreachedRange
from tutela.identity.password_rules import check_new_password


def fresh() -> tuple[str, str]:
    """A random password and its SHA-1, unknown to every other test."""
    password = secrets.token_urlsafe(18)
    return password, sha1_hex(password)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder of its own: the container's home (tmp_path) holds blobs already."""
    path = tmp_path / "ranges"
    path.mkdir()
    return path


def checker(container: Container) -> BreachChecker:
    return BreachChecker(SqlRangeStore(container.stores.main_sessions))


def test_the_default_corpus_is_django_s_list_ranked() -> None:
    corpus = list(default_corpus())
    assert len(corpus) == 19_640
    assert len({digest for digest, _ in corpus}) == 19_640
    assert corpus[0] == (sha1_hex("123456"), 1_000_000)
    assert all(len(d) == 40 and d == d.upper() for d, _ in corpus)
    counts = [count for _, count in corpus]
    assert counts == sorted(counts, reverse=True) and counts[-1] >= 1


@pytest.mark.parametrize("password", ["password", "qwerty123", "iloveyou", "letmein", "Password1"])
def test_the_seeded_store_knows_common_passwords(container: Container, password: str) -> None:
    assert checker(container).count(password) > 0


def test_the_seeded_store_does_not_know_a_random_password(container: Container) -> None:
    assert checker(container).count(secrets.token_urlsafe(15)[:20]) == 0


def test_more_common_passwords_weigh_more(container: Container) -> None:
    breaches = checker(container)
    assert breaches.count("password") > breaches.count("qwerty123") > 0


def test_seeding_again_adds_nothing(container: Container) -> None:
    assert seed_default(container.stores.main_sessions) == 0
    with container.stores.session() as session:
        rows = session.scalar(select(func.count()).select_from(BreachedRange))
    assert rows is not None and rows >= 19_640


def test_new_passwords_are_checked_against_the_store(container: Container) -> None:
    """R7: the rules ask the real store; a common password is refused with its reason."""
    breaches = checker(container)
    for password in ["password", "iloveyou", "qwerty123"]:
        with pytest.raises(WeakPassword) as caught:
            check_new_password(password, email="ana@example.com", breaches=breaches)
        assert caught.value.code == "password_breached"
    accepted = check_new_password("lantern orbit cactus", email=None, breaches=breaches)
    assert accepted == "lantern orbit cactus"


def test_full_hash_lines_are_imported(container: Container) -> None:
    (p1, h1), (p2, h2), (p3, h3) = fresh(), fresh(), fresh()
    lines = [f"{h1}:12\r\n", "\n", f"{h2.lower()}:7\n", f"{h3}\n", "   \n"]
    result = import_lines(container.stores.main_sessions, lines, prefix=None)
    assert result == ImportResult(lines=3, stored=3, skipped=0)
    breaches = checker(container)
    assert [breaches.count(p) for p in (p1, p2, p3)] == [12, 7, 1]


def test_range_lines_are_imported_under_their_prefix(container: Container) -> None:
    password, digest = fresh()
    prefix = digest[:5]
    other_suffix = sha1_hex(secrets.token_hex(8))[5:]
    lines = [f"{digest[5:].lower()}:31", f"{other_suffix}:2", ""]
    result = import_lines(container.stores.main_sessions, lines, prefix=prefix.lower())
    assert result == ImportResult(lines=2, stored=2, skipped=0)
    assert checker(container).count(password) == 31
    stored = SqlRangeStore(container.stores.main_sessions).range(prefix)
    assert stored[other_suffix] == 2


def test_the_larger_count_is_kept(container: Container) -> None:
    password, digest = fresh()
    sessions = container.stores.main_sessions
    assert import_lines(sessions, [f"{digest}:5"], prefix=None).stored == 1
    assert import_lines(sessions, [f"{digest}:3"], prefix=None) == ImportResult(1, 0, 1)
    assert checker(container).count(password) == 5
    assert import_lines(sessions, [f"{digest}:9", f"{digest}:4"], prefix=None) == ImportResult(
        2, 1, 1
    )
    assert checker(container).count(password) == 9


def test_padding_lines_with_count_zero_are_skipped(container: Container) -> None:
    password, digest = fresh()
    result = import_lines(container.stores.main_sessions, [f"{digest}:0"], prefix=None)
    assert result == ImportResult(lines=1, stored=0, skipped=1)
    assert checker(container).count(password) == 0


def test_a_malformed_line_is_refused_by_number_and_nothing_is_stored(
    container: Container,
) -> None:
    (p1, h1), (p2, h2), (p3, h3) = fresh(), fresh(), fresh()
    lines = [f"{h1}:1", f"{h2}:2", "", "notahash:3", f"{h3}:3"]
    with pytest.raises(InvalidInput, match="line 4") as caught:
        # batch=1 writes the first lines before the bad one is read: the import is still
        # one transaction, so they are rolled back with it.
        import_lines(container.stores.main_sessions, lines, prefix=None, batch=1)
    assert "notahash" not in caught.value.detail
    breaches = checker(container)
    assert [breaches.count(p) for p in (p1, p2, p3)] == [0, 0, 0]


@pytest.mark.parametrize(
    ("line", "prefix"),
    [
        ("5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8:many", None),  # count not a number
        ("5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD", None),  # 39 hex
        ("8846F7EAEE8FB117AD06BDD830B7586C:1", None),  # an NTLM hash
        ("password123", None),  # plaintext
        ("5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8:1", "5BAA6"),  # full hash in a range file
        ("1E4C9B93F3F0682250B6CF8331B7EE68FD8:1", None),  # range line with no prefix
        ("1E4C9B93F3F0682250B6CF8331B7EE68FD8:-1", "5BAA6"),
    ],
)
def test_malformed_lines(container: Container, line: str, prefix: str | None) -> None:
    with pytest.raises(InvalidInput, match="line 1"):
        import_lines(container.stores.main_sessions, [line], prefix=prefix)


def test_a_bad_prefix_is_refused(container: Container) -> None:
    with pytest.raises(InvalidInput, match="5 hex"):
        import_lines(container.stores.main_sessions, ["0" * 35], prefix="XYZ12")


def test_a_full_hash_file_is_imported(container: Container, tmp_path: Path) -> None:
    (p1, h1), (_, h2) = fresh(), fresh()
    file = tmp_path / "pwned-passwords-sha1-ordered-by-hash.txt"
    file.write_bytes(f"{h1}:40\r\n{h2}:2\r\n".encode())
    assert import_path(container.stores.main_sessions, file) == ImportResult(2, 2, 0)
    assert checker(container).count(p1) == 40


def test_a_file_named_by_its_prefix_is_a_range_file(container: Container, tmp_path: Path) -> None:
    password, digest = fresh()
    file = tmp_path / f"{digest[:5].lower()}.txt"
    file.write_text(f"{digest[5:]}:8\n")
    assert import_path(container.stores.main_sessions, file) == ImportResult(1, 1, 0)
    assert checker(container).count(password) == 8


def test_a_range_file_with_an_explicit_prefix(container: Container, tmp_path: Path) -> None:
    password, digest = fresh()
    file = tmp_path / "range.txt"
    file.write_text(f"{digest[5:]}:6\n")
    sessions = container.stores.main_sessions
    assert import_path(sessions, file, prefix=digest[:5]) == ImportResult(1, 1, 0)
    assert checker(container).count(password) == 6


def test_a_directory_of_range_files_is_imported(container: Container, folder: Path) -> None:
    """The layout Have I Been Pwned's downloader writes: one ABCDE.txt per prefix."""
    passwords = [fresh() for _ in range(3)]
    for _, digest in passwords:
        with (folder / f"{digest[:5]}.txt").open("a") as handle:
            handle.write(f"{digest[5:]}:5\r\n")
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    result = import_path(container.stores.main_sessions, folder)
    assert result == ImportResult(3, 3, 0)
    breaches = checker(container)
    assert all(breaches.count(password) > 0 for password, _ in passwords)


def test_a_directory_with_a_bad_file_stores_nothing(container: Container, folder: Path) -> None:
    (p1, h1), (_, h2) = fresh(), fresh()
    first, second = sorted([h1, h2])
    (folder / f"{first[:5]}.txt").write_text(f"{first[5:]}:1\n")
    (folder / f"{second[:5]}.txt").write_text(f"{second[5:]}:1\nnot a suffix\n")
    with pytest.raises(InvalidInput, match=rf"{second[:5]}\.txt line 2"):
        import_path(container.stores.main_sessions, folder)
    assert checker(container).count(p1) == 0


def test_a_directory_with_a_stray_file_is_refused(container: Container, folder: Path) -> None:
    _, digest = fresh()
    (folder / f"{digest[:5]}.txt").write_text(f"{digest[5:]}:1\n")
    (folder / "notes.md").write_text("hello\n")
    with pytest.raises(InvalidInput, match=r"notes\.md"):
        import_path(container.stores.main_sessions, folder)
    with pytest.raises(InvalidInput, match="directory"):
        import_path(container.stores.main_sessions, folder, prefix="ABCDE")


def test_a_binary_file_is_refused(container: Container, tmp_path: Path) -> None:
    file = tmp_path / "hashes.bin"
    file.write_bytes(b"\xff\xfe\x00\x01garbage")
    with pytest.raises(InvalidInput, match="not a UTF-8 text file"):
        import_path(container.stores.main_sessions, file)


class RecordingStore:
    """Wraps a range store and notes every prefix it is asked for."""

    def __init__(self, inner: RangeStore) -> None:
        self.inner = inner
        self.asked: list[str] = []

    def range(self, prefix: str) -> Mapping[str, int]:
        self.asked.append(prefix)
        return self.inner.range(prefix)


def test_the_store_only_ever_receives_a_five_hex_prefix(container: Container) -> None:
    """S5: k-anonymity; neither the password nor its full hash reaches the database."""
    store = RecordingStore(SqlRangeStore(container.stores.main_sessions))
    breaches = BreachChecker(store)
    passwords = ["Password", "qwerty123", "lantern orbit cactus", "Ωμέγα ☕ 東京"]
    assert breaches.count("Password") > 0
    for password in passwords[1:]:
        breaches.count(password)
    assert store.asked
    assert all(len(prefix) == 5 for prefix in store.asked)
    assert all(set(prefix) <= set("0123456789ABCDEF") for prefix in store.asked)
    expected = {sha1_hex(form)[:5] for p in passwords for form in (p, p.lower())}
    assert set(store.asked) == expected


def test_the_sql_store_refuses_anything_but_a_prefix(container: Container) -> None:
    store = SqlRangeStore(container.stores.main_sessions)
    with pytest.raises(ValueError, match="5 uppercase hex"):
        store.range(sha1_hex("password"))
    assert store.range(sha1_hex("password")[:5])[sha1_hex("password")[5:]] > 0
