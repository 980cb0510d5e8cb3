"""`jobledger secrets`: set (the value from stdin, never an argument: `ps` shows those),
list and delete a project's secrets over HTTP; and `rotate-key`, a server-side verb that
re-encrypts every stored value under a new key with direct access to the database."""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC
from pathlib import Path

import msgspec

from ..client import Client
from ..domain.specs import DEFAULT_PROJECT
from ..exitcodes import EXIT_ERROR, EXIT_OK
from ..wire import SecretList, SecretOut
from .clientverbs import with_client
from .formatting import table
from .options import add_client_args, add_database_args


def configure_secrets_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "secrets",
        help="set, list and delete a project's secrets; rotate the secrets key",
        description="Secrets are values jobs get in their environment without them entering "
        'the log: a spec refers to one as {"env": {"VAR": {"secret": "NAME"}}}.',
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    set_ = verbs.add_parser(
        "set",
        help="store a new version of a secret, its value read from stdin",
        description="Store a new version of a secret. The value is read from stdin (one "
        "trailing newline removed), or asked for without echo in a terminal; never from an "
        "argument, which the process list shows. Example: "
        "jobledger secrets set db-password < password.txt",
    )
    set_.add_argument("name")
    listing = verbs.add_parser("list", help="a project's secrets: names, versions, who, when")
    listing.add_argument("--json", action="store_true", help="print the answer as JSON")
    delete = verbs.add_parser("delete", help="delete a secret and every version of it")
    delete.add_argument("name")
    for q in (set_, listing, delete):
        q.add_argument("--project", default=DEFAULT_PROJECT, help="(default: %(default)s)")
        add_client_args(q)
        q.set_defaults(func=cmd_secrets)
    rotate = verbs.add_parser(
        "rotate-key",
        help="re-encrypt every stored secret under a new key (server side)",
        description="Re-encrypt every stored secret value under the key in --new-key-file, "
        "in one transaction, with direct access to the database. The current key is the "
        "one the servers use (JOBLEDGER_SECRETS_KEY, JOBLEDGER_SECRETS_KEY_FILE, or the "
        "embedded database's key file). Then point every server and worker at the new key "
        "and restart them. Make a key with: "
        "python -c 'import os,base64;print(base64.urlsafe_b64encode(os.urandom(32)).decode())'",
    )
    rotate.add_argument("--new-key-file", type=Path, required=True, metavar="PATH")
    add_database_args(rotate)
    rotate.set_defaults(func=cmd_rotate_key)


def read_value() -> str:
    """The value to store: stdin's text without one trailing newline, or typed unechoed."""
    if sys.stdin.isatty():
        return getpass.getpass("value (not echoed): ")
    value = sys.stdin.read()
    return value[:-1] if value.endswith("\n") else value


async def cmd_secrets(args: argparse.Namespace) -> int:
    base = f"/api/v1/projects/{args.project}/secrets"

    async def run(client: Client) -> int:
        if args.verb == "set":
            value = read_value()
            if not value:
                print("jobledger: no value on stdin", file=sys.stderr)
                return EXIT_ERROR
            raw = await client.request_raw("PUT", f"{base}/{args.name}", body={"value": value})
            done = msgspec.json.decode(raw, type=SecretOut)
            print(
                f"secret {done.name} of project {done.project}: version {done.version} "
                f"(fingerprint {done.fingerprint})"
            )
        elif args.verb == "list":
            raw = await client.request_raw("GET", base)
            if args.json:
                print(raw.decode())
                return EXIT_OK
            rows = [
                [s.name, str(s.version), s.fingerprint, s.updated_by,
                 s.updated_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")]
                for s in msgspec.json.decode(raw, type=SecretList).secrets
            ]  # fmt: skip
            print(table(["NAME", "VERSION", "FINGERPRINT", "SET BY", "AT"], rows))
        else:
            await client.request_raw("DELETE", f"{base}/{args.name}")
            print(f"deleted secret {args.name} of project {args.project}")
        return EXIT_OK

    return await with_client(args, run)


async def cmd_rotate_key(args: argparse.Namespace) -> int:
    from ..exitcodes import Exit
    from ..secretservice import rotate_key
    from ..store.db import create_pool
    from ..store.migrate import migrate
    from ..store.secretbox import DecryptError, read_key_file
    from .startup import database, secrets_box, server_errors

    with server_errors():
        new = read_key_file(args.new_key_file)
        old = secrets_box(args)
        if old is None:
            raise Exit(EXIT_ERROR, "no current secrets key: set JOBLEDGER_SECRETS_KEY(_FILE)")
        async with database(args) as dsn:
            pool = await create_pool(dsn, min_size=1, max_size=2)
            try:
                async with pool.acquire() as conn:
                    await migrate(conn)
                try:
                    n = await rotate_key(pool, old, new)
                except DecryptError as exc:
                    raise Exit(EXIT_ERROR, f"nothing changed: {exc}") from None
            finally:
                await pool.close()
    print(
        f"re-encrypted {n} secret values from key {old.key_id} to key {new.key_id}.\n"
        "Next: point every server and worker at the new key (JOBLEDGER_SECRETS_KEY_FILE="
        f"{args.new_key_file.resolve()}, or its text in JOBLEDGER_SECRETS_KEY) and restart "
        "them; until then they cannot read the secrets and jobs using them fail to start.",
        file=sys.stderr,
    )
    return EXIT_OK
