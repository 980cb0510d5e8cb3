"""The contract every executor keeps, written once (as saq tests every queue backend).

`ExecutorContract` holds the cases; one subclass per executor says how to make one and how
to see what its runs left in the world (containers, processes). A case an executor cannot
keep by its nature is replaced in its subclass by `not_applicable(reason)`, which pytest
reports as skipped with that reason: nothing is left out silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import signal
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, ClassVar

import aiodocker
import asyncpg
import msgspec
import pytest

from jobledger.domain.events import FailureReason
from jobledger.domain.jobs import ConfirmCancelled, Fail, Finish
from jobledger.domain.specs import JobSpec
from jobledger.domain.workflows import MAX_OUTPUT_BYTES
from jobledger.runtime.docker import DockerExecutor
from jobledger.runtime.executor import Executor, JobIO, Outcome, RunRequest
from jobledger.runtime.masking import Masker
from jobledger.runtime.noop import NoopExecutor
from jobledger.runtime.output import LogLimits, LogSink
from jobledger.runtime.process import ProcessExecutor
from jobledger.store.embedded import EmbeddedPostgres
from jobledger.store.logs import LogLine, read_logs
from tests.conftest import fresh_database, pool_on

DEADLINE = 15.0  # seconds any wait for a state may take before the case fails
#: Set in every run's environment: its processes (and their children) carry it.
MARKER = "JOBLEDGER_CONTRACT_WORKER"
MISSING = "jobledger-no-such-program"
#: A job given no inputs creates the directory of its output (unless its image has it).
MKDIR_OUTPUT = 'mkdir -p "${JOBLEDGER_OUTPUT%/*}"; '
#: Says it is ready, then ticks until `release` creates /tmp/go; says so and exits 5.
UNTIL_GO = (
    "echo ready; until [ -e /tmp/go ]; do echo tick; sleep 0.05; done; "
    "echo after; echo after-err >&2; "
    + MKDIR_OUTPUT
    + 'printf \'{"adopted": true}\' > "$JOBLEDGER_OUTPUT"; exit 5'
)
ADOPTED_OUTPUT = b'{"adopted": true}'
#: A secret value the masking cases inject (through the sink's masker, as the scheduler does).
SECRET = "hunter2-but-longer"

MakeRequest = Callable[..., RunRequest]


def not_applicable(reason: str) -> Callable[[object], None]:
    """Stands in, in a subclass, for a case the executor cannot keep by its nature."""

    @pytest.mark.skip(reason=f"not applicable: {reason}")
    def case(self: object) -> None:
        raise AssertionError("skipped")

    return case


@pytest.fixture(scope="module")
async def log_pool(pg_cluster: EmbeddedPostgres, template_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """One database for the module's output; every run writes under a job id of its own."""
    async with fresh_database(pg_cluster) as dsn, pool_on(dsn) as pool:
        yield pool


@contextlib.asynccontextmanager
async def sink_of(
    pool: asyncpg.Pool, req: RunRequest, *, fresh: bool = True, masker: Masker | None = None
) -> AsyncIterator[LogSink]:
    """The attempt's sink, started and closed around the run as the scheduler does."""
    sink = LogSink(pool, req.job_id, req.attempt, LogLimits(), masker)
    await sink.start(fresh=fresh)
    try:
        yield sink
    finally:
        await sink.close()


@contextlib.asynccontextmanager
async def in_background(
    run: Coroutine[Any, Any, Outcome],
) -> AsyncIterator[asyncio.Task[Outcome]]:
    """`run` as a task, cancelled if a failed case leaves it running."""
    task = asyncio.create_task(run)
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def until_printed(
    pool: asyncpg.Pool, req: RunRequest, text: str, task: asyncio.Task[Outcome], after: int = 0
) -> int:
    """The seq of the first stored line `text` past `after`, once the run (still going)
    has printed it."""
    deadline = time.monotonic() + DEADLINE
    while True:
        for line in await read_logs(pool, req.job_id, after):
            if line.text == text:
                return line.seq
        assert not task.done(), f"the run ended before it printed {text!r}: {task.result()}"
        assert time.monotonic() < deadline, f"the run did not print {text!r}"
        await asyncio.sleep(0.02)


async def crash(task: asyncio.Task[Outcome]) -> None:
    """What a dying worker does to its run tasks."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def by_stream(lines: list[LogLine]) -> dict[str, list[str]]:
    streams: dict[str, list[str]] = {"stdout": [], "stderr": []}
    for line in lines:
        if line.stream in streams:
            streams[line.stream].append(line.text)
    return streams


class ExecutorContract:
    """The cases. A subclass provides `new_executor`, `leftovers`, the image and the
    messages below; `release` and `outlives_its_worker` matter to executors that adopt."""

    #: What the outcome says when the command does not exist.
    missing_command_message: ClassVar[str]
    #: Whether a run whose worker dies goes on, for `find` to report and `adopt` to follow.
    outlives_its_worker: ClassVar[bool] = False

    def new_executor(self) -> Executor:
        """A new executor: one life of a worker."""
        raise NotImplementedError

    async def leftovers(self, worker_id: str) -> list[str]:
        """What runs of this worker left in the world (container ids, pids), sorted."""
        raise NotImplementedError

    async def clean_up(self, worker_id: str) -> None:
        """Remove what a failed case left, so that it does not spill into the next one."""

    async def release(self, worker_id: str) -> None:
        """Create /tmp/go where the worker's UNTIL_GO command looks for it."""
        raise NotImplementedError

    @pytest.fixture
    def image(self) -> str:
        return "ignored"

    @pytest.fixture
    async def worker_id(self) -> AsyncIterator[str]:
        wid = f"contract-{uuid.uuid4().hex[:12]}"
        yield wid
        await self.clean_up(wid)

    @pytest.fixture
    async def executor(self) -> AsyncIterator[Executor]:
        executor = self.new_executor()
        yield executor
        await executor.close()

    @pytest.fixture
    def make_request(self, image: str, worker_id: str) -> MakeRequest:
        def make(command: list[str], *, attempt: int = 1, **spec: Any) -> RunRequest:
            spec.setdefault("stop_grace_seconds", 1)
            return RunRequest(
                job_id=uuid.uuid4(),
                attempt=attempt,
                worker_id=worker_id,
                spec=JobSpec(image=image, command=command, env={MARKER: worker_id}, **spec),
            )

        return make

    async def until_left(self, worker_id: str, expected: list[str]) -> None:
        """Wait until what is left in the world is `expected` (a kill lands a moment later)."""
        deadline = time.monotonic() + DEADLINE
        while (left := await self.leftovers(worker_id)) != expected:
            assert time.monotonic() < deadline, f"left behind: {left}, expected {expected}"
            await asyncio.sleep(0.02)

    async def nothing_left(self, executor: Executor, worker_id: str) -> None:
        assert await executor.find(worker_id) == []
        await self.until_left(worker_id, [])

    async def test_exit_zero(
        self, executor: Executor, make_request: MakeRequest, worker_id: str
    ) -> None:
        req = make_request(["true"])
        outcome = await executor.run(req, asyncio.Event())
        assert outcome.command(req.attempt) == Finish(attempt=1, exit_code=0, usage=outcome.usage)
        await self.nothing_left(executor, worker_id)

    async def test_nonzero_exit(
        self, executor: Executor, make_request: MakeRequest, worker_id: str
    ) -> None:
        req = make_request(["sh", "-c", "exit 3"])
        outcome = await executor.run(req, asyncio.Event())
        assert outcome.command(req.attempt) == Finish(attempt=1, exit_code=3, usage=outcome.usage)
        assert outcome.usage.wall_seconds > 0
        await self.nothing_left(executor, worker_id)

    async def test_timeout_stops_with_grace_then_kills(
        self, executor: Executor, make_request: MakeRequest, worker_id: str, log_pool: asyncpg.Pool
    ) -> None:
        # The shell notes the SIGTERM and goes on; its child ignores it. Only the kill after
        # the grace ends them both.
        script = (
            "trap 'echo got TERM' TERM; (trap '' TERM; exec sleep 30) & while :; do sleep 0.1; done"
        )
        req = make_request(["sh", "-c", script], timeout_seconds=1)
        async with sink_of(log_pool, req) as sink:
            outcome = await executor.run(req, asyncio.Event(), JobIO(sink))
        assert outcome.command(req.attempt) == Fail(
            attempt=1,
            reason=FailureReason.TIMEOUT,
            message="timed out after 1s",
            exit_code=137,  # SIGKILL
            usage=outcome.usage,
        )
        assert by_stream(await read_logs(log_pool, req.job_id))["stdout"] == ["got TERM"]
        await self.nothing_left(executor, worker_id)

    async def test_cancel_while_running(
        self, executor: Executor, make_request: MakeRequest, worker_id: str, log_pool: asyncpg.Pool
    ) -> None:
        req = make_request(["sh", "-c", "echo ready; exec sleep 30"])
        cancel = asyncio.Event()
        async with (
            sink_of(log_pool, req) as sink,
            in_background(executor.run(req, cancel, JobIO(sink))) as task,
        ):
            await until_printed(log_pool, req, "ready", task)
            cancel.set()
            outcome = await task
        assert outcome.command(req.attempt) == ConfirmCancelled(
            attempt=1,
            exit_code=143,  # SIGTERM ended it within the grace
            usage=outcome.usage,
        )
        await self.nothing_left(executor, worker_id)

    async def test_cancel_before_start_starts_nothing(
        self, executor: Executor, make_request: MakeRequest, worker_id: str
    ) -> None:
        cancel = asyncio.Event()
        cancel.set()
        # Were it started, it would still be there to see.
        req = make_request(["sleep", "30"])
        assert await executor.run(req, cancel) == Outcome(cancelled=True)
        await self.nothing_left(executor, worker_id)

    async def test_start_error_leaves_nothing(
        self, executor: Executor, make_request: MakeRequest, worker_id: str
    ) -> None:
        req = make_request([MISSING, "arg"])
        outcome = await executor.run(req, asyncio.Event())
        assert outcome.command(req.attempt) == Fail(
            attempt=1,
            reason=FailureReason.START_ERROR,
            message=self.missing_command_message,
            usage=outcome.usage,
        )
        await self.nothing_left(executor, worker_id)

    async def test_output_reaches_the_sink_in_order_per_stream(
        self, executor: Executor, make_request: MakeRequest, worker_id: str, log_pool: asyncpg.Pool
    ) -> None:
        script = "for i in $(seq 1 200); do echo out$i; echo err$i >&2; done; printf partial"
        req = make_request(["sh", "-c", script])
        async with sink_of(log_pool, req) as sink:
            outcome = await executor.run(req, asyncio.Event(), JobIO(sink))
        # The sink is closed as soon as run() returns: output written later would be lost.
        assert outcome.exit_code == 0
        lines = await read_logs(log_pool, req.job_id)
        assert [ln.seq for ln in lines] == list(range(1, 402))
        assert by_stream(lines) == {
            "stdout": [f"out{i}" for i in range(1, 201)] + ["partial"],
            "stderr": [f"err{i}" for i in range(1, 201)],
        }
        await self.nothing_left(executor, worker_id)

    async def test_a_dying_worker_leaves_only_what_find_reports(
        self, executor: Executor, make_request: MakeRequest, worker_id: str, log_pool: asyncpg.Pool
    ) -> None:
        req = make_request(["sh", "-c", "echo ready; exec sleep 30"])
        async with (
            sink_of(log_pool, req) as sink,
            in_background(executor.run(req, asyncio.Event(), JobIO(sink))) as task,
        ):
            await until_printed(log_pool, req, "ready", task)
            await crash(task)
        # Either the run goes on and find reports it, or it is gone: never unseen.
        found = await executor.find(worker_id)
        reported = [(f.job_id, f.attempt, f.running) for f in found]
        assert reported == ([(req.job_id, 1, True)] if self.outlives_its_worker else [])
        await self.until_left(worker_id, sorted(f.ref for f in found))
        for f in found:
            await executor.discard(f)
            await executor.discard(f)  # already gone: not an error
        await self.nothing_left(executor, worker_id)

    @pytest.mark.parametrize("exits_unwatched", [False, True], ids=["running", "exited"])
    async def test_adopted_run_records_its_real_exit_code_and_output(
        self,
        executor: Executor,
        make_request: MakeRequest,
        worker_id: str,
        log_pool: asyncpg.Pool,
        exits_unwatched: bool,
    ) -> None:
        req = make_request(["sh", "-c", UNTIL_GO], attempt=2)
        async with (
            sink_of(log_pool, req) as sink,
            in_background(executor.run(req, asyncio.Event(), JobIO(sink))) as task,
        ):
            await until_printed(log_pool, req, "ready", task)
            await crash(task)
        before = (await read_logs(log_pool, req.job_id))[-1].seq
        if exits_unwatched:
            await self.release(worker_id)
            deadline = time.monotonic() + DEADLINE
            while (await executor.find(worker_id))[0].running:
                assert time.monotonic() < deadline, "the run did not end"
                await asyncio.sleep(0.02)

        # The worker's next life finds the run by its worker id and follows it to its end.
        restarted = self.new_executor()
        try:
            [found] = await restarted.find(worker_id)
            assert (found.job_id, found.attempt, found.running) == (
                req.job_id,
                2,
                not exits_unwatched,
            )
            async with (
                sink_of(log_pool, req, fresh=False) as sink,
                in_background(restarted.adopt(found, req, asyncio.Event(), JobIO(sink))) as task,
            ):
                if not exits_unwatched:
                    # A tick through the adopted stream: what comes next cannot be missed.
                    await until_printed(log_pool, req, "tick", task, after=before)
                    await self.release(worker_id)
                outcome = await task
            await self.nothing_left(restarted, worker_id)
        finally:
            await restarted.close()
        # The output is read from the adopted run at its exit, as from one run here.
        assert outcome.command(req.attempt) == Finish(
            attempt=2,
            exit_code=5,
            usage=outcome.usage,
            output={"adopted": True},
            output_sha256=hashlib.sha256(ADOPTED_OUTPUT).hexdigest(),
        )
        assert outcome.usage.wall_seconds > 0
        adopted = await read_logs(log_pool, req.job_id, before)
        assert [ln.seq for ln in adopted] == list(range(before + 1, before + 1 + len(adopted)))
        if not exits_unwatched:
            out = by_stream(adopted)
            assert out["stdout"][-1] == "after"
            assert set(out["stdout"][:-1]) == {"tick"}
            assert out["stderr"] == ["after-err"]

    # ---- inputs and output (issue 16) -------------------------------------------------

    async def run_with_sink(
        self, executor: Executor, req: RunRequest, pool: asyncpg.Pool, masker: Masker | None = None
    ) -> tuple[Outcome, list[LogLine]]:
        async with sink_of(pool, req, masker=masker) as sink:
            outcome = await executor.run(req, asyncio.Event(), JobIO(sink))
        return outcome, await read_logs(pool, req.job_id)

    async def test_inputs_are_visible_to_the_command(
        self, executor: Executor, make_request: MakeRequest, worker_id: str, log_pool: asyncpg.Pool
    ) -> None:
        script = 'cat "$JOBLEDGER_INPUTS"; echo; echo "out=${JOBLEDGER_OUTPUT:+set}"'
        req = msgspec.structs.replace(
            make_request(["sh", "-c", script]), inputs={"extract": {"rows": [1, "two"]}}
        )
        outcome, lines = await self.run_with_sink(executor, req, log_pool)
        assert outcome.exit_code == 0
        assert by_stream(lines)["stdout"] == ['{"extract":{"rows":[1,"two"]}}', "out=set"]
        # Without inputs nothing is copied and no variable names them.
        req = make_request(["sh", "-c", 'echo "inputs=${JOBLEDGER_INPUTS:-unset}"'])
        outcome, lines = await self.run_with_sink(executor, req, log_pool)
        assert by_stream(lines)["stdout"] == ["inputs=unset"]
        await self.nothing_left(executor, worker_id)

    @pytest.mark.parametrize("code", [0, 3])
    async def test_output_is_recorded_with_its_sha256(
        self,
        executor: Executor,
        make_request: MakeRequest,
        worker_id: str,
        log_pool: asyncpg.Pool,
        code: int,
    ) -> None:
        written = b'{"rows": 3, "secret": "' + SECRET.encode() + b'"}'
        script = (
            MKDIR_OUTPUT + f"printf '%s' '{written.decode()}' > \"$JOBLEDGER_OUTPUT\"; exit {code}"
        )
        req = make_request(["sh", "-c", script])
        outcome, _ = await self.run_with_sink(executor, req, log_pool, Masker([SECRET]))
        stored = b'{"rows": 3, "secret": "***"}'  # masked as the log is, then hashed
        assert outcome.output == stored
        assert outcome.command(req.attempt) == Finish(
            attempt=1,
            exit_code=code,
            usage=outcome.usage,
            output={"rows": 3, "secret": "***"},
            output_sha256=hashlib.sha256(stored).hexdigest(),
        )
        await self.nothing_left(executor, worker_id)

    async def test_no_output_written_records_none(
        self, executor: Executor, make_request: MakeRequest, worker_id: str, log_pool: asyncpg.Pool
    ) -> None:
        outcome, lines = await self.run_with_sink(executor, make_request(["true"]), log_pool)
        assert outcome.output is None and lines == []
        await self.nothing_left(executor, worker_id)

    @pytest.mark.parametrize(
        ("script", "why"),
        [
            (
                f'yes 1234567 | head -c {MAX_OUTPUT_BYTES + 1} > "$JOBLEDGER_OUTPUT"',
                f"{MAX_OUTPUT_BYTES + 1} bytes, more than the {MAX_OUTPUT_BYTES} allowed",
            ),
            ("echo 'not json' > \"$JOBLEDGER_OUTPUT\"", "not valid JSON"),
            ("printf '\\377' > \"$JOBLEDGER_OUTPUT\"", "not UTF-8"),
        ],
        ids=["oversized", "invalid-json", "not-utf8"],
    )
    async def test_output_left_out_says_why_and_the_job_ends_as_it_would(
        self,
        executor: Executor,
        make_request: MakeRequest,
        worker_id: str,
        log_pool: asyncpg.Pool,
        script: str,
        why: str,
    ) -> None:
        req = make_request(["sh", "-c", MKDIR_OUTPUT + script + "; exit 4"])
        outcome, lines = await self.run_with_sink(executor, req, log_pool)
        assert outcome.command(req.attempt) == Finish(attempt=1, exit_code=4, usage=outcome.usage)
        [system] = [ln.text for ln in lines if ln.stream == "system"]
        assert system.startswith(f"[jobledger: the output at its path was left out: {why}")
        await self.nothing_left(executor, worker_id)


class TestDockerExecutor(ExecutorContract):
    missing_command_message = f"exec {MISSING} failed: No such file or directory"
    outlives_its_worker = True

    @pytest.fixture(autouse=True)
    async def _docker(self, docker_engine: None) -> AsyncIterator[None]:
        """A client of our own, to look at what the executor did."""
        self.docker = aiodocker.Docker()
        yield
        await self.docker.close()

    @pytest.fixture
    def image(self, test_image: str) -> str:
        return test_image

    def new_executor(self) -> Executor:
        return DockerExecutor(pull_policy="never")

    async def _containers(self, worker_id: str) -> list[Any]:
        filters = json.dumps({"label": [f"jobledger.worker={worker_id}"]})
        return list(await self.docker.containers.list(all=True, filters=filters))

    async def leftovers(self, worker_id: str) -> list[str]:
        return sorted(c.id for c in await self._containers(worker_id))

    async def clean_up(self, worker_id: str) -> None:
        for c in await self._containers(worker_id):
            await c.delete(force=True)

    async def release(self, worker_id: str) -> None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.addfile(tarfile.TarInfo("go"), io.BytesIO(b""))
        [container] = await self._containers(worker_id)
        await container.put_archive("/tmp", buf.getvalue())


def _marked_processes(worker_id: str) -> list[str]:
    """Live processes whose environment carries this worker's marker (a zombie has none)."""
    mark = f"{MARKER}={worker_id}".encode()
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if mark in environ.read_bytes().split(b"\0"):
                pids.append(environ.parent.name)
        except OSError:  # gone while we looked
            continue
    return sorted(pids)


class TestProcessExecutor(ExecutorContract):
    missing_command_message = f"cannot start '{MISSING}': No such file or directory: {MISSING}"

    def new_executor(self) -> Executor:
        return ProcessExecutor()

    async def leftovers(self, worker_id: str) -> list[str]:
        return _marked_processes(worker_id)

    async def clean_up(self, worker_id: str) -> None:
        for pid in _marked_processes(worker_id):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)

    test_adopted_run_records_its_real_exit_code_and_output = not_applicable(
        "a process dies with its worker (test_a_dying_worker_leaves_only_what_find_reports): "
        "there is no run to follow; a next life only records an exit code its previous life "
        "learned, or kills what survived (test_process_executor.py)"
    )


class TestNoopExecutor(ExecutorContract):
    """The no-op executor runs no command: every attempt ends in run() with exit code 0.
    What it keeps is exit 0, cancel before start and leaving nothing behind."""

    missing_command_message = "unused"

    def new_executor(self) -> Executor:
        return NoopExecutor()

    async def leftovers(self, worker_id: str) -> list[str]:
        return []

    test_nonzero_exit = not_applicable("it runs no command; every attempt exits 0")
    test_timeout_stops_with_grace_then_kills = not_applicable(
        "it runs no command; every attempt ends at once"
    )
    test_cancel_while_running = not_applicable("an attempt is never running; it ends at once")
    test_start_error_leaves_nothing = not_applicable("it starts nothing that could fail")
    test_output_reaches_the_sink_in_order_per_stream = not_applicable(
        "it runs no command, so there is no output"
    )
    test_a_dying_worker_leaves_only_what_find_reports = not_applicable(
        "an attempt ends inside run(): there is no run for a dying worker to leave"
    )
    test_adopted_run_records_its_real_exit_code_and_output = not_applicable(
        "it leaves nothing to adopt"
    )
    _no_command = "it runs no command, so nothing reads inputs or writes an output"
    test_inputs_are_visible_to_the_command = not_applicable(_no_command)
    test_output_is_recorded_with_its_sha256 = not_applicable(_no_command)
    test_output_left_out_says_why_and_the_job_ends_as_it_would = not_applicable(_no_command)
