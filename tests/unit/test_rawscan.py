"""What the raw scan counts in a file's bytes (A8, C1, S6): no I/O, the child's pure work."""

from __future__ import annotations

import uuid

from tutela.erasure.rawscan import hits_in

ERASED = uuid.UUID("0193a5e2-7c41-7b3a-9f10-5d2e8c4b6a01")
OTHER = uuid.UUID("0193a5e2-7c41-7b3a-9f10-5d2e8c4b6a02")


def test_an_erased_id_counts_wherever_its_hex_form_lies_in_a_run() -> None:
    ids = {ERASED.hex.encode()}
    # A row's UUID columns side by side, with a stray hex-looking header byte before them.
    record = b"\x07" + b"a" + OTHER.hex.encode() + ERASED.hex.encode() + b"\x00"
    assert hits_in(record, ids, []).count == 1
    assert hits_in(b"b" * 20 + ERASED.hex.encode() + b"c" * 3, ids, []).count == 1  # short run
    assert hits_in(OTHER.hex.encode() * 5, ids, []).count == 0


def test_an_id_in_a_long_run_counts_when_aligned_to_either_end() -> None:
    ids = {ERASED.hex.encode()}
    row = OTHER.hex.encode() * 4 + ERASED.hex.encode() + OTHER.hex.encode() * 4
    assert hits_in(row, ids, []).ids == 1
    assert hits_in(b"f" + row, ids, []).ids == 1  # aligned to the run's end
    assert hits_in(b"f" + row + b"e", ids, []).ids == 0  # neither: not an id SQLite wrote


def test_hyphenated_ids_count_for_few_ids_and_for_many() -> None:
    blob_key = f"household/{ERASED}/voice".encode()
    few = {ERASED.hex.encode()}
    many = {uuid.uuid4().hex.encode() for _ in range(100)} | few
    assert hits_in(blob_key, few, []).ids == 1
    assert hits_in(blob_key, many, []).ids == 1
    assert hits_in(f"household/{OTHER}/voice".encode(), many, []).ids == 0


def test_each_needle_found_is_named_once() -> None:
    data = b"..sealed-AAAA..sealed-AAAA..mac-BBBB.."
    hits = hits_in(data, set(), [b"sealed-AAAA", b"absent", b"mac-BBBB", b""])
    assert hits.needles == (0, 2)
    assert hits.count == 2
