"""Issue 16, as a user meets it: a running job's own token (a real container submits two
children to the API with it; they are listed under it; the token is found nowhere and stops
working when the job ends), and `jobledger rerun`."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.e2e.conftest import AUTH, Server, jobledger

IMAGE = "jobledger-test:latest"


def call(url: str, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
    """A JSON request with a bearer token (the suite's admin's by default); the decoded
    answer, or `urllib.error.HTTPError` for a 4xx/5xx."""
    headers = {"Authorization": f"Bearer {token}"} if token else dict(AUTH)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url + path, data=data, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


def status_of(url: str, method: str, path: str, token: str | None = None) -> int:
    try:
        call(url, method, path, token)
    except urllib.error.HTTPError as exc:
        return exc.code
    return 200


def account_token(url: str, project: str, name: str, role: str) -> str:
    """A token of a new service account of `project` with `role`."""
    call(
        url,
        "POST",
        f"/api/v1/projects/{project}/service-accounts",
        body={"name": name, "role": role},
    )
    issued = call(
        url, "POST", f"/api/v1/projects/{project}/service-accounts/{name}/tokens", body={}
    )
    token: str = issued["token"]
    return token


# The job submits two children with its own token, prints the token (masked in the log),
# and smuggles it out reversed, which masking does not know, for the test to try later.
CHILD = json.dumps({"image": IMAGE, "command": ["true"], "labels": {"made-by": "parent"}})
PARENT_SCRIPT = f"""
for n in 1 2; do
  wget -q -O - --header "Authorization: Bearer $JOBLEDGER_TOKEN" \\
    --header "Content-Type: application/json" --post-data '{CHILD}' \\
    "$JOBLEDGER_API_URL/api/v1/jobs" || exit 7
  echo
done
echo "my token is $JOBLEDGER_TOKEN."
echo "reversed: $(echo "$JOBLEDGER_TOKEN" | rev)"
"""


def test_a_job_submits_two_children_with_its_own_token_which_dies_with_it(
    dsn: str, tmp_path: Path
) -> None:
    # Listening on every address: containers reach it at the Docker bridge's (the default
    # JOBLEDGER_API_URL for a wildcard host).
    server = Server("--database-url", dsn, "--executor", "docker", "--host", "0.0.0.0")
    url = server.url
    call(url, "POST", "/api/v1/projects", body={"name": "kids"})
    ci = account_token(url, "kids", "ci", "operator")

    parent = call(url, "POST", "/api/v1/jobs", ci, {
        "image": IMAGE, "command": ["sh", "-c", PARENT_SCRIPT], "project": "kids",
    })  # fmt: skip
    waited = jobledger("logs", "--url", url, "-f", parent["id"])
    assert waited.returncode == 0, waited.stderr
    job = call(url, "GET", f"/api/v1/jobs/{parent['id']}")
    assert job["state"] == "succeeded", (job, waited.stdout, server.output())

    # The children: listed under it by the API and the CLI, submitted as its account.
    children = call(url, "GET", f"/api/v1/jobs?parent_job={parent['id']}")["jobs"]
    assert len(children) == 2
    assert {c["parent_job"] for c in children} == {parent["id"]}
    assert {c["submitted_by"] for c in children} == {"kids/ci"}
    assert {c["project"] for c in children} == {"kids"}
    listed = jobledger("jobs", "--url", url, "--parent", parent["id"], "--json")
    assert {c["id"] for c in json.loads(listed.stdout)} == {c["id"] for c in children}
    assert call(url, "GET", f"/api/v1/jobs?parent_job={children[0]['id']}")["jobs"] == []
    assert job["parent_job"] is None
    done = jobledger("show", "--url", url, "--json", parent["id"])

    # Masked in the output; the reversed copy lets the test try it now that the job ended.
    logs = waited.stdout
    assert "my token is ***." in logs, logs
    token = next(line for line in logs.splitlines() if line.startswith("reversed: "))
    token = token.removeprefix("reversed: ")[::-1]
    assert token.startswith("jl_") and token not in logs
    assert status_of(url, "GET", "/api/v1/jobs", token) == 401

    # Issued and revoked by the worker, for this job, with the submitter's account.
    export = tmp_path / "log.ndjson"
    exported = jobledger("replay", "--database-url", dsn, "export", "-o", str(export))
    assert exported.returncode == 0, exported.stderr
    text = export.read_text()
    events = [json.loads(line) for line in text.splitlines()]
    issued = {
        e["data"]["job_id"]: e
        for e in events
        if e["type"] == "TokenIssued" and e["data"].get("job_id")
    }

    # Each job got one of its own (the children too), issued to the submitter's account.
    assert set(issued) == {parent["id"], *(c["id"] for c in children)}
    assert {e["data"]["service_account"] for e in issued.values()} == {"ci"}
    assert all(e["meta"]["actor"].startswith("worker:") for e in issued.values())
    revoked = [e for e in events if e["type"] == "TokenRevoked"]
    assert sorted(e["stream_id"] for e in revoked) == sorted(
        e["stream_id"] for e in issued.values()
    )
    assert all(e["meta"]["actor"].startswith("worker:") for e in revoked)

    # The secret is nowhere: not in the log of events, the jobs, their events, the server's log.
    shown = [done.stdout, json.dumps(job), json.dumps(children), text, server.output()]
    for c in [job, *children]:
        shown.append(json.dumps(call(url, "GET", f"/api/v1/jobs/{c['id']}/events")))
    assert all(token not in s for s in shown)


def test_rerun_makes_a_linked_job_of_the_same_spec(dsn: str) -> None:
    server = Server("--database-url", dsn, "--executor", "process")
    url = server.url
    failed = json.loads(
        jobledger(
            "submit", "--url", url, "--json", "--wait", "--idempotency-key", "first",
            "busybox", "--", "sh", "-c", "exit 3",
        ).stdout
    )  # fmt: skip
    assert failed["state"] == "failed"

    again = jobledger("rerun", "--url", url, "--wait", failed["id"])
    assert again.returncode == 3, again.stderr
    new_id = again.stdout.strip()
    new = call(url, "GET", f"/api/v1/jobs/{new_id}")
    assert new["rerun_of"] == failed["id"] and new["state"] == "failed"
    assert new["idempotency_key"] is None
    assert new["spec"] == {**failed["spec"], "idempotency_key": None}
    # Its submit was caused by the old job's last event.
    old_events = call(url, "GET", f"/api/v1/jobs/{failed['id']}/events")["events"]
    [submitted] = [
        e for e in call(url, "GET", f"/api/v1/jobs/{new_id}/events")["events"]
        if e["type"] == "JobSubmitted"
    ]  # fmt: skip
    assert submitted["meta"]["causation_id"] == old_events[-1]["event_id"]
    assert submitted["data"]["rerun_of"] == failed["id"]

    # A viewer may not rerun; a job that has not ended cannot be (409); nor one unknown.
    viewer = account_token(url, "default", "watcher", "viewer")
    assert status_of(url, "POST", f"/api/v1/jobs/{failed['id']}/rerun", viewer) == 403
    later = call(url, "POST", "/api/v1/jobs", body={
        "image": "busybox", "command": ["true"], "scheduled_for": "2999-01-01T00:00:00Z",
    })  # fmt: skip
    assert status_of(url, "POST", f"/api/v1/jobs/{later['id']}/rerun") == 409
    unknown = "00000000-0000-7000-8000-000000000000"
    assert status_of(url, "POST", f"/api/v1/jobs/{unknown}/rerun") == 404
