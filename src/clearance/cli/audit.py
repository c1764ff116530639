"""``clearance audit``: read the trail, verify it, and anchor it outside the database.

``keygen`` makes the Ed25519 key pair that signs checkpoints; ``checkpoint`` signs the chain's
head (or takes the newest kept) and hands it out: stdout, a file, or a signed webhook POST;
``verify --anchor`` proves the store still holds the history such a checkpoint signed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import httpx
import typer

from clearance.cli import render
from clearance.engine.anchor import Checkpoint, generate_keys
from clearance.errors import AnchorError

__all__ = ["audit_app"]

audit_app = typer.Typer(help="Read, verify and anchor the audit trail.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for machines instead of text.")]
#: The event type a checkpoint is POSTed as (the ``Clearance-Event`` header).
CHECKPOINT_EVENT = "audit.checkpoint"


def _engine(**kw: object):  # type: ignore[no-untyped-def]
    from clearance.cli import _engine as make

    return make(**kw)


@audit_app.command("keygen")
def audit_keygen(
    private: Annotated[Path, typer.Argument(help="Where to write the private key (created 0600).")] = Path("clearance-anchor.pem"),
    public: Annotated[Optional[Path], typer.Option("--public", help="Where to write the public key "
                      "(default: the private key's name plus .pub).")] = None,  # fmt: skip
    force: Annotated[bool, typer.Option("--force", help="Replace existing key files.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Make the Ed25519 key pair that signs audit checkpoints. Keep the private key away from the
    database (whoever holds both can rewrite history and sign it); give the public key to whoever verifies."""
    priv, pub, kid = generate_keys(private, public, overwrite=force)
    if as_json:
        render.emit_json({"private_key": str(priv), "public_key": str(pub), "key_id": kid})
        return
    render.out.print(f"private key {render.safe(str(priv))} (mode 600: keep it off the database's host and out of backups of it)")
    render.out.print(f"public key  {render.safe(str(pub))} (give it to whoever verifies)")
    render.out.print(f"key id      {kid}")


@audit_app.command("checkpoint")
def audit_checkpoint(
    key: Annotated[Optional[Path], typer.Option("--key", envvar="CLEARANCE_ANCHOR_KEY", help="Private key to sign the "
                   "head with now (default: CLEARANCE_ANCHOR_KEY).")] = None,  # fmt: skip
    latest: Annotated[bool, typer.Option("--latest", help="Hand out the newest checkpoint kept in the store (made every N "
                      "events by the server) instead of signing now; needs no key.")] = False,  # fmt: skip
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the checkpoint to this file (else stdout).")] = None,
    webhook_url: Annotated[Optional[str], typer.Option("--webhook-url", help="POST the checkpoint here, signed as the "
                           "server's webhooks are (Standard Webhooks).")] = None,  # fmt: skip
    webhook_secret: Annotated[Optional[str], typer.Option("--webhook-secret", envvar="CLEARANCE_WEBHOOK_SECRET",
                              help="Secret that signs the POST (default: CLEARANCE_WEBHOOK_SECRET).")] = None,  # fmt: skip
) -> None:
    """Sign the audit chain's head and export it: keep what it prints somewhere the database's
    writers cannot reach; ``audit verify --anchor`` checks the store against it later."""
    if latest == (key is not None):
        raise typer.BadParameter("give --key (or CLEARANCE_ANCHOR_KEY) to sign now, or --latest for the newest kept "
                                 "checkpoint (one of them)")  # fmt: skip
    if webhook_url and not webhook_secret:
        raise typer.BadParameter("a webhook needs --webhook-secret (or CLEARANCE_WEBHOOK_SECRET)", param_hint="--webhook-secret")
    if latest:
        with _engine() as engine:
            kept = engine.audit_checkpoints(limit=1)
        if not kept:
            raise AnchorError("no checkpoint is kept in this store yet (serve with --anchor-key and --checkpoint-every, "
                              "or sign one now with --key)")  # fmt: skip
        cp = kept[0]
    else:
        with _engine(anchor_key=key) as engine:
            cp = engine.checkpoint_audit()
    document = cp.document() + "\n"
    if out is not None:  # first: a webhook that fails still leaves the file
        _write_atomically(out, document)
        render.err.print(f"checkpoint of event {cp.seq} written to {render.safe(str(out))}")
    if webhook_url:
        _post(webhook_url, webhook_secret or "", cp)
    if out is None and not webhook_url:
        print(document, end="")


def _post(url: str, secret: str, cp: Checkpoint) -> None:
    """POST the checkpoint document, signed; the ``webhook-id`` names the head and key, so a
    receiver that drops repeated ids keeps each checkpoint once."""
    from clearance.signing import signed_headers

    body = cp.document()
    msg_id = f"chk_{cp.seq}_{cp.key_id.rsplit(':', 1)[-1][:16]}"
    headers = {"content-type": "application/json", "Clearance-Event": CHECKPOINT_EVENT, **signed_headers(secret, msg_id, body)}
    try:
        answer = httpx.post(url, content=body.encode(), headers=headers, timeout=10.0)
    except httpx.HTTPError as exc:
        raise AnchorError(f"could not send the checkpoint to {url}: {exc}") from None
    if not answer.is_success:
        raise AnchorError(f"{url} refused the checkpoint: HTTP {answer.status_code}")
    render.err.print(f"checkpoint of event {cp.seq} sent to {render.safe(url)}")


def _write_atomically(path: Path, text: str) -> None:
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@audit_app.command("verify")
def audit_verify(
    anchor: Annotated[Optional[Path], typer.Option("--anchor", help="A checkpoint kept outside the store: prove the "
                      "store still holds the history it signed.")] = None,  # fmt: skip
    public_key: Annotated[Optional[list[Path]], typer.Option("--public-key", help="Public key trusted to sign "
                          "checkpoints (repeatable; the anchor's key id picks one).")] = None,  # fmt: skip
    as_json: JsonFlag = False,
) -> None:
    """Check the hash chain, the checkpoints kept in the store and the state tables against the
    chain, and with --anchor the history a checkpoint signed; exit 1 and say what is wrong."""
    if anchor is not None and not public_key:
        raise typer.BadParameter("checking an anchor needs the public key that signed it", param_hint="--public-key")
    with _engine(reading=True) as engine:
        report = engine.verify_anchor(anchor, public_key or []) if anchor is not None else engine.verify_audit()
    if as_json:
        render.emit_json(report.as_dict())
    elif report.ok:
        anchored = f", anchored at event {report.anchored_seq}" if report.anchored_seq is not None else ""
        render.out.print(f"[green]ok[/]: {report.events_checked} events, chain intact{anchored}; "
                         f"{report.rows_checked} state rows agree; {report.checkpoints_checked} kept checkpoints agree")  # fmt: skip
    else:
        where = f" at event {report.first_broken_seq}" if report.first_broken_seq is not None else ""
        render.err.print(f"[bold red]broken[/]{where}: {render.safe(report.problem or '')}")
        for more in report.problems[1:]:
            render.err.print(f"  also: {render.safe(more)}")
        if report.problems_total > len(report.problems):
            render.err.print(f"  and {report.problems_total - len(report.problems)} more")
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("list")
def audit_list(
    request_id: Optional[str] = None,
    trace_id: Optional[str] = None,
    type: Annotated[Optional[str], typer.Option("--type", help="Event type, e.g. decision.made.")] = None,
    after: Annotated[int, typer.Option(help="Only events after this seq.")] = 0,
    limit: int = 50,
    as_json: JsonFlag = False,
) -> None:
    """List audit events, oldest first."""
    with _engine(reading=True) as engine:
        events = engine.audit_events(request_id=request_id, trace_id=trace_id, type=type, after_seq=after, limit=limit)
    if as_json:
        render.emit_json(events)
        return
    for e in events:
        render.out.print(f"{e.seq:>6}  {render.when(e.created_at)}  {e.type:<24} {e.request_id or '-'}")
