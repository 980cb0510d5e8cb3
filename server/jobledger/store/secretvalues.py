"""Secret values beside the log: the ciphertexts of each stored version (written in the
append of the version's `SecretSet`, removed with the secret), and what submits and claims
need of them: which versions exist, which version a spec's reference means."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import asyncpg
import msgspec

from ..domain.secrets import UnknownSecret
from ..domain.specs import JobSpec, SecretRef
from .db import Conn
from .queries import load_queries

QUERIES = load_queries(Path(__file__).with_name("secrets.sql"))

#: (project, secret name) -> the versions stored, ascending.
Stored = Mapping[tuple[str, str], Sequence[int]]


class StoredValue(msgspec.Struct, frozen=True):
    """One version's ciphertext and the id of the key that made it."""

    key_id: str
    ciphertext: bytes


def refs_of(spec: JobSpec) -> dict[str, SecretRef]:
    """The secret references of a spec's environment, by variable."""
    return {var: v for var, v in spec.env.items() if isinstance(v, SecretRef)}


def uses_secrets(spec: JobSpec) -> bool:
    """Whether a spec's environment refers to any secret."""
    return any(isinstance(v, SecretRef) for v in spec.env.values())


async def stored_versions(conn: Conn | asyncpg.Pool, keys: Iterable[tuple[str, str]]) -> Stored:
    """The versions stored of some (project, name) secrets; absent: none (no such secret)."""
    keys = sorted(set(keys))
    if not keys:
        return {}
    rows = await conn.fetch(QUERIES["stored_versions"], [p for p, _ in keys], [n for _, n in keys])
    return {(r["project"], r["name"]): r["versions"] for r in rows}


def resolve(spec: JobSpec, stored: Stored) -> tuple[dict[str, SecretRef], dict[str, str]]:
    """Each reference of a spec with the version it means now (its pinned one, else the
    latest), and for those that mean nothing stored, why, by variable."""
    resolved: dict[str, SecretRef] = {}
    missing: dict[str, str] = {}
    for var, ref in refs_of(spec).items():
        versions = stored.get((spec.project, ref.secret), ())
        if not versions:
            missing[var] = f"secret {ref.secret!r} does not exist in project {spec.project}"
        elif ref.version is None:
            resolved[var] = SecretRef(secret=ref.secret, version=versions[-1])
        elif ref.version in versions:
            resolved[var] = ref
        else:
            missing[var] = (
                f"secret {ref.secret!r} of project {spec.project} has no version "
                f"{ref.version} (stored: {', '.join(map(str, versions))})"
            )
    return resolved, missing


async def check_refs(
    conn: Conn | asyncpg.Pool, specs: Sequence[tuple[int, JobSpec]]
) -> tuple[int, UnknownSecret] | None:
    """The first reference among specs (numbered) to a secret or version that is not stored,
    as (the spec's number, the error naming its field `$.env.VAR`); None if all are."""
    using = [(n, s) for n, s in specs if uses_secrets(s)]
    if not using:
        return None
    stored = await stored_versions(
        conn, [(s.project, r.secret) for _, s in using for r in refs_of(s).values()]
    )
    for n, spec in using:
        _, missing = resolve(spec, stored)
        for var, why in missing.items():
            return n, UnknownSecret(why, field=f"$.env.{var}")
    return None


async def put_value(
    conn: Conn, project: str, name: str, version: int, key_id: str, ciphertext: bytes
) -> None:
    await conn.execute(QUERIES["insert_value"], project, name, version, key_id, ciphertext)


async def delete_values(conn: Conn, project: str, name: str) -> None:
    await conn.execute(QUERIES["delete_values"], project, name)


async def get_values(
    conn: Conn | asyncpg.Pool, project: str, wanted: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], StoredValue]:
    """The stored ciphertexts of some (name, version) of a project's secrets (absent: not
    stored, e.g. deleted)."""
    wanted = list(set(wanted))
    if not wanted:
        return {}
    rows = await conn.fetch(
        QUERIES["get_values"],
        [project] * len(wanted),
        [n for n, _ in wanted],
        [v for _, v in wanted],
    )
    return {(r["name"], r["version"]): StoredValue(r["key_id"], r["ciphertext"]) for r in rows}
