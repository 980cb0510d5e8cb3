"""The benchmark set runs end to end (tiny sizes: the figures mean nothing here; they are
measured by `scripts/bench`, never asserted in tests)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.docker_rig import docker_engine  # noqa: F401
from tests.e2e.conftest import ROOT


def test_every_workload_runs_and_reports(docker_engine: None) -> None:  # noqa: F811
    # peers and scaleout (issue 18) start a cluster, a server and workers of each system:
    # over 30 s each even quick on two cores, so `scripts/bench --only peers,scaleout
    # --quick` is their smoke run, not this test.
    done = subprocess.run(
        [sys.executable, "run.py", "--quick", "--skip", "peers,scaleout"],
        cwd=ROOT / "bench", capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    report = json.loads(done.stdout)
    engine = report["engine"]
    assert engine["drain"]["jobs"] == 500 and engine["pickup"]["samples"] == 10
    for workload in ("submit_serial", "submit_concurrent", "submit_batch", "drain"):
        assert engine[workload]["jobs_per_second"] > 0
    assert engine["submit_by_definition"]["by_definition_latency_ms"]["median"] > 0
    assert engine["wal_bytes_per_job_submitted"] > 0 and engine["server_rss_idle_bytes"] > 0
    assert report["container_overhead"]["jobs"] == 3
    assert report["log_streaming"]["fast_job_lines"] == 2000
    scale = report["scale"]
    assert scale["load"]["jobs"] == 500 and scale["verify"]["problems"] == 0
    assert scale["rebuild"]["events"] == scale["load"]["events"]
    assert set(scale["query_ms"]) >= {"list_first_page", "job_detail", "audit_by_actor"}
    for workload in ("fire_lag", "fire_lag_definition"):
        lag = report[workload]
        assert lag["occurrences_fired"] >= 1 and lag["jobs_created"] == lag["occurrences_fired"]
        assert lag["occurrence_to_job_submitted"]["max"] >= lag["occurrence_to_fired"]["min"]
    for workload, shapes in (("workflow_overhead", ("chain", "diamond")),
                             ("workflow_overhead_docker", ("diamond",))):  # fmt: skip
        for shape in shapes:
            wf = report[workload][shape]
            assert wf["steps"] == wf["runs"] * {"chain": 5, "diamond": 4}[shape]
            started, made = wf["step_ready_to_job_started"], wf["step_ready_to_job_submitted"]
            assert started["max"] >= made["min"] > 0
            assert wf["run_submitted_to_succeeded"]["min"] >= started["min"]
            assert wf["events_per_run"]["with_child_jobs"] > wf["events_per_run"]["run_stream"]
    assert report["versions"]["postgres"].startswith("postgres (PostgreSQL) 15")
    assert "peers" not in report and "scaleout" not in report
