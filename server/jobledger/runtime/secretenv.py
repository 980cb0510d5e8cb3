"""A job's environment as its container gets it: the spec's plain values, and for each
secret reference the value of the version its JobStarted recorded, decrypted here, by the
worker, at the start (and again when a restarted worker adopts the container, to mask its
output). The values live in memory only as long as the attempt is followed."""

from __future__ import annotations

import asyncpg
import msgspec

from ..domain.jobs import Job
from ..store import secretvalues
from ..store.secretbox import DecryptError, SecretBox


class Environment(msgspec.Struct, frozen=True):
    """The variables of one attempt, and the secret values among them (to mask)."""

    env: dict[str, str]
    secret_values: list[str]

    def __repr__(self) -> str:
        return f"Environment({sorted(self.env)}, {len(self.secret_values)} secret values)"


class SecretUnavailable(Exception):
    """A secret of the job cannot be given to it: deleted before the start, or this worker
    holds no key, or another key than the one the value was stored with."""


async def environment(pool: asyncpg.Pool, box: SecretBox | None, job: Job) -> Environment:
    """The environment of `job`'s current attempt; `SecretUnavailable` naming the variable
    and the secret if one of its secrets cannot be had."""
    refs = secretvalues.refs_of(job.spec)
    env = {k: v for k, v in job.spec.env.items() if isinstance(v, str)}
    if not refs:
        return Environment(env, [])
    project = job.spec.project
    for var, ref in refs.items():
        if var not in job.secrets:
            version = f" version {ref.version}" if ref.version else ""
            raise SecretUnavailable(
                f"secret {ref.secret!r}{version} (for ${var}) no longer exists in project "
                f"{project}: it was deleted after the job was submitted"
            )
    if box is None:
        raise SecretUnavailable(
            "this worker holds no secrets key (JOBLEDGER_SECRETS_KEY or "
            f"JOBLEDGER_SECRETS_KEY_FILE), and the job's environment uses secrets: "
            f"{', '.join(sorted(refs))}"
        )
    wanted = {var: (r.secret, r.version or 0) for var, r in job.secrets.items() if var in refs}
    stored = await secretvalues.get_values(pool, project, wanted.values())
    values: list[str] = []
    for var, (name, version) in wanted.items():
        found = stored.get((name, version))
        if found is None:
            raise SecretUnavailable(
                f"secret {name!r} version {version} (for ${var}) was deleted from project "
                f"{project} before the job started"
            )
        try:
            value = box.decrypt(project, name, version, found.key_id, found.ciphertext)
        except DecryptError as exc:
            raise SecretUnavailable(f"cannot decrypt the secret for ${var}: {exc}") from None
        env[var] = value
        values.append(value)
    return Environment(env, values)
