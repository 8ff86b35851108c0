"""`tutela receipt`: check a signed erasure receipt, or publish the key that checks it (A8, S8)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from tutela.erasure import receipts

app = typer.Typer(
    help="Erasure receipts: verify one, or print the public key that verifies them.",
    no_args_is_help=True,
)

# A receipt that does not verify exits 1; input the command cannot use at all (an
# unreadable file, a public key that is not one) exits 2, as a Click usage error does.
_NOT_VALID = 1
_BAD_INPUT = 2
_ABSENT = "(not stated)"


def _service_public_key() -> str:
    from tutela.container import build  # noqa: PLC0415
    from tutela.settings import Settings  # noqa: PLC0415

    container = build(Settings())
    try:
        return receipts.public_key_pem(container.vault.keys, now=container.clock.now())
    finally:
        container.close()


def _read(file: str) -> bytes:
    if file == "-":
        return typer.get_binary_stream("stdin").read()
    try:
        return Path(file).read_bytes()
    except OSError as exc:
        typer.echo(f"Cannot read {file}: {exc.strerror or exc}", err=True)
        raise typer.Exit(_BAD_INPUT) from None


def _shown(value: object) -> str:
    """A body field for the terminal: control characters in a receipt cannot drive it."""
    if value is None:
        return _ABSENT
    return "".join(c if c.isprintable() else "?" for c in str(value))


def _field(body: Mapping[str, Any], *path: str) -> object:
    value: object = body
    for name in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(name)
    return value


@app.command()
def verify(
    file: Annotated[str, typer.Argument(help="A receipt JSON document, or - for stdin.")],
    public_key: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            readable=True,
            help="PEM file of the public key to verify with; default: this service's key.",
        ),
    ] = None,
) -> None:
    """Check a receipt's signature; exit 0 if it is valid, 1 if it is not."""
    document = _read(file)
    try:
        pem = public_key.read_bytes() if public_key is not None else _service_public_key()
        key = receipts.load_public_key(pem)
    except receipts.ReceiptInvalid as exc:
        typer.echo(f"Public key not usable: {exc.detail}", err=True)
        raise typer.Exit(_BAD_INPUT) from None
    try:
        body = receipts.verify(document, key)
    except receipts.ReceiptInvalid as exc:
        typer.echo(f"Receipt NOT valid: {exc.detail}", err=True)
        raise typer.Exit(_NOT_VALID) from None
    typer.echo(
        f"Receipt valid: request {_shown(_field(body, 'request_id'))}, "
        f"scope {_shown(_field(body, 'scope', 'kind'))}, "
        f"completed {_shown(_field(body, 'completed_at'))}, "
        f"remnant check {_shown(_field(body, 'remnant_check', 'result'))}"
    )


@app.command("public-key")
def public_key_command(
    output: Annotated[
        Path | None, typer.Option(dir_okay=False, help="Write the PEM to this file.")
    ] = None,
) -> None:
    """Print the PEM public key that verifies this service's receipts."""
    pem = _service_public_key()
    if output is None:
        typer.echo(pem, nl=False)
        return
    output.write_text(pem)
    key_id = receipts.key_id(receipts.load_public_key(pem))
    typer.echo(f"Public key {key_id} written to {output}.")
