"""What the raw scan counts in a file's bytes (A8, C1, S6): no I/O, the child's pure work."""

from __future__ import annotations

import random
import uuid

import pytest

from tutela.erasure.rawscan import FileHits, NeedleSet, Search, hits_in

ERASED = uuid.UUID("0193a5e2-7c41-7b3a-9f10-5d2e8c4b6a01")
OTHER = uuid.UUID("0193a5e2-7c41-7b3a-9f10-5d2e8c4b6a02")
SAMPLE = bytes(range(100, 124))  # 24 bytes, as a ciphertext sample is


def test_an_erased_id_counts_wherever_its_hex_form_lies() -> None:
    ids = {ERASED.hex.encode()}
    # A row's UUID columns side by side, with a stray hex-looking header byte before them.
    record = b"\x07" + b"a" + OTHER.hex.encode() + ERASED.hex.encode() + b"\x00"
    assert hits_in(record, ids, []).count == 1
    assert hits_in(b"b" * 20 + ERASED.hex.encode() + b"c" * 3, ids, []).count == 1  # short run
    assert hits_in(OTHER.hex.encode() * 5, ids, []).count == 0
    row = OTHER.hex.encode() * 4 + ERASED.hex.encode() + OTHER.hex.encode() * 4
    assert hits_in(row, ids, []).ids == 1
    assert hits_in(b"f" + row, ids, []).ids == 1
    # Aligned to neither end of its run: the scan before the automaton missed it.
    assert hits_in(b"f" + row + b"e", ids, []).ids == 1


def test_every_occurrence_of_an_id_counts_in_either_form() -> None:
    blob_key = f"household/{ERASED}/voice".encode()
    few = {ERASED.hex.encode()}
    many = {uuid.uuid4().hex.encode() for _ in range(100)} | few
    for ids in (few, many):
        assert hits_in(blob_key, ids, []).ids == 1
        assert hits_in(blob_key + b"\x00" + blob_key, ids, []).ids == 2
        assert hits_in(blob_key + ERASED.hex.encode() * 2, ids, []).ids == 3
    assert hits_in(f"household/{OTHER}/voice".encode(), many, []).ids == 0
    assert hits_in(str(ERASED).upper().encode(), few, []).ids == 0  # SQLite writes lowercase


def test_each_needle_found_is_named_once() -> None:
    data = b"..sealed-AAAA..sealed-AAAA..mac-BBBB.."
    hits = hits_in(data, set(), [b"sealed-AAAA", b"absent", b"mac-BBBB", b""])
    assert hits == FileHits(0, [0, 2])
    assert hits.count == 2


def test_nothing_to_look_for_finds_nothing() -> None:
    assert hits_in(b"anything" * 100, set(), []) == FileHits(0, [])
    assert hits_in(b"", {ERASED.hex.encode()}, [SAMPLE]) == FileHits(0, [])


@pytest.mark.parametrize(
    "needles",
    [[SAMPLE], [b"short"]],
    ids=["long needles: candidate words first", "a short needle: every block read"],
)
def test_a_needle_across_a_block_boundary_is_found_once(needles: list[bytes]) -> None:
    """The file is read in blocks; a needle that straddles one, at any offset, counts once."""
    block = 256  # more than 4 needles long: the size the search keeps
    hex_id = ERASED.hex.encode()
    hyphenated = str(ERASED).encode()
    for word in (hex_id, hyphenated, needles[0]):
        for start in range(block - len(word), block + 1):
            data = bytearray(b"\xff" * (3 * block))
            data[start : start + len(word)] = word
            hits = hits_in(bytes(data), {hex_id}, needles, block=block)
            assert hits.count == 1, (word, start)


def test_hits_are_credited_to_every_set_that_holds_the_needle() -> None:
    """One scan serves several jobs: a needle two sets share counts in both, by each
    set's own index."""
    shared_id, own_id = ERASED.hex.encode(), OTHER.hex.encode()
    first = NeedleSet(hex_ids={shared_id, own_id}, needles=[b"only the first's", SAMPLE])
    second = NeedleSet(hex_ids={shared_id}, needles=[SAMPLE])
    third = NeedleSet(hex_ids={uuid.uuid4().hex.encode()}, needles=[b"nowhere"])
    data = b"..".join([shared_id, own_id, str(ERASED).encode(), SAMPLE, b"only the first's"])
    assert Search([first, second, third]).hits(data) == [
        FileHits(3, [0, 1]),
        FileHits(2, [0]),
        FileHits(0, []),
    ]
    assert Search([]).hits(data) == []


def _occurrences(data: bytes, word: bytes) -> int:
    count, at = 0, data.find(word)
    while at != -1:
        count, at = count + 1, data.find(word, at + 1)
    return count


def test_the_scan_agrees_with_a_plain_search_of_each_needle() -> None:
    """Random files, ids and needles (long ones, and short ones that turn the candidate
    words off), planted at random offsets and block sizes: the counts are those of one
    `find` loop per needle."""
    rng = random.Random(5)
    for _ in range(150):
        ids = [uuid.UUID(int=rng.getrandbits(128)).hex.encode() for _ in range(5)]
        lengths = rng.choice([(23, 24, 40), (15, 16, 22), (3, 15, 24)])
        needles = [rng.randbytes(rng.choice(lengths)) for _ in range(5)]
        sets = [
            NeedleSet(rng.sample(ids, rng.randint(0, 3)), rng.sample(needles, rng.randint(0, 3)))
            for _ in range(rng.randint(1, 3))
        ]
        data = bytearray(rng.randbytes(rng.randint(0, 3000)))
        words = ids + [str(uuid.UUID(i.decode())).encode() for i in ids] + needles
        for _ in range(rng.randint(0, 12)):
            word = rng.choice(words)
            if len(data) > len(word):
                at = rng.randrange(len(data) - len(word) + 1)
                data[at : at + len(word)] = word
        found = Search(sets, block=rng.choice([32, 48, 100, 1 << 15])).hits(bytes(data))
        for s, hits in zip(sets, found, strict=True):
            forms = [f for i in s.hex_ids for f in (i, str(uuid.UUID(i.decode())).encode())]
            expected = FileHits(
                sum(_occurrences(bytes(data), f) for f in forms),
                [n for n, needle in enumerate(s.needles) if needle in data],
            )
            assert hits == expected
