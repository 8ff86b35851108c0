"""`tutela receipt` on a fresh home, and the receipt key in the key store (A8, S8)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from tests.conftest import use_home
from tests.unit.test_receipts import receipt_body
from tutela.cli import app as tutela_app
from tutela.container import Container, build
from tutela.erasure import receipts
from tutela.erasure.receipt_cli import app
from tutela.settings import Settings
from tutela.vault.keystore import KeyStore
from tutela.vault.rotation import rotate_master


@pytest.fixture
def home_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    use_home(monkeypatch, tmp_path)
    result = CliRunner().invoke(tutela_app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    return tmp_path


def issue(body: dict[str, Any]) -> dict[str, Any]:
    """A receipt signed by this home's service key, as the erasure engine issues them."""
    container = build(Settings())
    try:
        return receipts.sign_receipt(container.vault.keys, body, now=container.clock.now())
    finally:
        container.close()


def write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document, indent=2))
    return path


def test_a_good_receipt_verifies_with_the_services_own_key(home_dir: Path) -> None:
    file = write(home_dir / "receipt.json", issue(receipt_body()))
    result = CliRunner().invoke(app, ["verify", str(file)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "Receipt valid: request 0193f2a4-7c1e-7b3a-9d2e-5f1a2b3c4d5e, scope profile, "
        "completed 2026-01-01T12:00:03+00:00, remnant check clean"
    )


def test_a_receipt_verifies_from_stdin(home_dir: Path) -> None:
    document = json.dumps(issue(receipt_body()))
    result = CliRunner().invoke(app, ["verify", "-"], input=document)
    assert result.exit_code == 0, result.output
    assert "0193f2a4-7c1e-7b3a-9d2e-5f1a2b3c4d5e" in result.stdout


def test_a_tampered_receipt_exits_1(home_dir: Path) -> None:
    document = issue(receipt_body())
    document["receipt"]["counts"]["voice"] = 2
    file = write(home_dir / "tampered.json", document)
    result = CliRunner().invoke(app, ["verify", str(file)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Receipt NOT valid: ")
    assert "altered" in result.stderr
    assert "Traceback" not in result.output


def test_a_file_that_is_not_a_receipt_exits_1(home_dir: Path) -> None:
    file = home_dir / "junk.json"
    file.write_text("{not json")
    result = CliRunner().invoke(app, ["verify", str(file)])
    assert result.exit_code == 1
    assert "Receipt NOT valid: The receipt is not valid JSON." in result.stderr


def test_the_exported_public_key_verifies_without_the_stores(home_dir: Path) -> None:
    runner = CliRunner()
    pem_file = home_dir / "receipts.pem"
    result = runner.invoke(app, ["public-key", "--output", str(pem_file)])
    assert result.exit_code == 0, result.output
    key = receipts.load_public_key(pem_file.read_text())
    assert receipts.key_id(key) in result.stdout
    file = write(home_dir / "receipt.json", issue(receipt_body()))
    result = runner.invoke(app, ["verify", str(file), "--public-key", str(pem_file)])
    assert result.exit_code == 0, result.output
    assert "Receipt valid" in result.stdout


def test_another_public_key_exits_1(home_dir: Path) -> None:
    other = home_dir / "other.pem"
    other.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    file = write(home_dir / "receipt.json", issue(receipt_body()))
    result = CliRunner().invoke(app, ["verify", str(file), "--public-key", str(other)])
    assert result.exit_code == 1
    assert "Receipt NOT valid: The receipt was signed with another key" in result.stderr


def test_a_receipt_from_another_service_exits_1(home_dir: Path) -> None:
    foreign = receipts.sign(Ed25519PrivateKey.generate(), receipt_body())
    file = write(home_dir / "foreign.json", foreign)
    result = CliRunner().invoke(app, ["verify", str(file)])
    assert result.exit_code == 1
    assert "another key" in result.stderr


def test_unusable_input_exits_2(home_dir: Path) -> None:
    runner = CliRunner()
    file = write(home_dir / "receipt.json", issue(receipt_body()))
    junk_key = home_dir / "junk.pem"
    junk_key.write_text("not a key")
    result = runner.invoke(app, ["verify", str(file), "--public-key", str(junk_key)])
    assert result.exit_code == 2
    assert "Public key not usable" in result.stderr
    result = runner.invoke(app, ["verify", str(home_dir / "absent.json")])
    assert result.exit_code == 2
    assert "Cannot read" in result.stderr
    result = runner.invoke(app, ["verify", str(file), "--public-key", str(home_dir / "no.pem")])
    assert result.exit_code == 2


def test_a_sparse_body_is_reported_without_failing(home_dir: Path) -> None:
    file = write(home_dir / "sparse.json", issue({"request_id": "r-1\x1b[2J", "scope": "all"}))
    result = CliRunner().invoke(app, ["verify", str(file)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "Receipt valid: request r-1?[2J, scope (not stated), completed (not stated), "
        "remnant check (not stated)"
    )


def test_public_key_prints_the_same_pem_every_time(home_dir: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(app, ["public-key"])
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("-----BEGIN PUBLIC KEY-----\n")
    assert first.stdout.endswith("-----END PUBLIC KEY-----\n")
    receipts.load_public_key(first.stdout)
    second = runner.invoke(app, ["public-key"])
    assert second.stdout == first.stdout


def test_the_receipt_key_is_stable_across_key_store_instances(container: Container) -> None:
    now = container.clock.now()
    keys = container.vault.keys
    document = receipts.sign_receipt(keys, receipt_body(), now=now)
    fresh = KeyStore(keys.sessions, keys.source)  # no cache: reads the stored seed
    public = receipts.signing_key(fresh, now=now).public_key()
    assert receipts.key_id(public) == document["signature"]["key_id"]
    assert receipts.public_key_pem(fresh, now=now) == receipts.public_key_pem(keys, now=now)
    assert receipts.verify(document, public) == receipt_body()


def test_receipts_still_verify_after_a_master_key_rotation(container: Container) -> None:
    now = container.clock.now()
    keys = container.vault.keys
    document = receipts.sign_receipt(keys, receipt_body(), now=now)
    rotation = rotate_master(keys)
    assert rotation.retired  # the master key that wrapped the seed is gone
    fresh = KeyStore(keys.sessions, keys.source)
    public = receipts.load_public_key(receipts.public_key_pem(fresh, now=now))
    assert receipts.verify(document, public) == receipt_body()
