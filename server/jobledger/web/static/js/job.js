// One job: where it stands (live), what was asked for, its timeline and events, its logs
// and usage, cancel/rerun for operators, and its history to travel through.
import { html, useState, useEffect, useCallback } from './lib.js';
import { api, liveSocket } from './api.js';
import { Link, StateBadge, ErrorBox, ConfirmButton, navigate, useMe, mayOperate } from './ui.js';
import { TERMINAL, when, seconds, failure, envValue, shortId, runId } from './format.js';
import { LogView } from './logs.js';
import { UsageCharts } from './charts.js';

function Verified({ jobId, version }) {
  const [result, setResult] = useState(null);
  useEffect(() => {
    let live = true;
    api(`/jobs/${jobId}/verify`).then((r) => live && setResult(r),
      (e) => live && setResult({ error: e }));
    return () => { live = false; };
  }, [jobId, version]);
  if (!result) return html`<span class="verify pending">checking history…</span>`;
  if (result.error) return html`<span class="verify unknown" title=${result.error.message}>history not checked</span>`;
  if (result.archived) {
    // Issue 19: the events are in an archive file; the log keeps the checkpoint and the
    // final state, which the row shown must equal.
    const a = result.archived;
    return html`<span class=${`verify archived ${result.verified ? 'ok' : 'bad'}`} data-archived="true"
      data-verified=${String(result.verified)}
      title=${`checkpoint event ${a.checkpoint_position} (SHA-256 ${a.sha256}); ${result.verified ? 'the job matches the final state it keeps' : 'the job differs from the final state it keeps'}`}
      >${result.verified ? '✓' : '✗'} archived in <span class="mono">${a.file}</span> on ${when(a.archived_at)}</span>`;
  }
  if (result.verified) {
    return html`<span class="verify ok" data-verified="true"
      title=${`${result.events} events; hash chain recomputed at ${when(result.checked_at)}`}>✓ history verified</span>`;
  }
  const p = result.problem || {};
  return html`<span class="verify bad" data-verified="false" role="status">✗ history not verified${
    p.version ? `: event ${p.version}: ${p.message}` : ''}</span>`;
}

function Spec({ job }) {
  const spec = job.spec;
  const env = Object.entries(spec.env || {});
  const secrets = Object.entries(job.secrets || {});
  const row = (k, v) => html`<dt>${k}</dt><dd>${v}</dd>`;
  return html`<section aria-labelledby="spec-title">
    <h2 id="spec-title">Spec</h2>
    <dl class="facts">
      ${row('Image', html`<span class="mono">${spec.image}</span>`)}
      ${row('Command', html`<code class="command">${JSON.stringify(spec.command)}</code>`)}
      ${row('Resources', JSON.stringify(spec.resources))}
      ${row('Timeout', spec.timeout_seconds ? seconds(spec.timeout_seconds) : 'none')}
      ${row('Labels', Object.entries(spec.labels || {}).map(([k, v]) => html`<span class="label">${k}=${v}</span> `))}
      ${spec.tags && spec.tags.length ? row('Tags', spec.tags.join(', ')) : null}
      ${spec.concurrency_key ? row('Concurrency key', `${spec.concurrency_key} (limit ${spec.concurrency_limit})`) : null}
      ${job.definition ? row('Definition', `${job.definition} version ${job.definition_version}`) : null}
    </dl>
    ${env.length ? html`<table class="env"><caption>Environment</caption>
      <thead><tr><th>Variable</th><th>Value</th></tr></thead>
      <tbody>${env.map(([k, v]) => html`<tr><td class="mono">${k}</td><td class=${v && v.secret ? 'secret' : ''}>${envValue(v)}</td></tr>`)}</tbody>
    </table>` : null}
    ${secrets.length ? html`<p>Secrets its attempt used: ${secrets.map(([k, v]) => `${k} ← ${envValue(v)}`).join('; ')}</p>` : null}
  </section>`;
}

function Timeline({ timeline }) {
  if (!timeline) return null;
  return html`<section aria-labelledby="timeline-title">
    <h2 id="timeline-title">Time in each state</h2>
    <ul class="timeline">
      ${Object.entries(timeline.seconds_in_state).map(([s, secs]) => html`<li>
        <${StateBadge} state=${s} /> ${seconds(secs)}</li>`)}
    </ul>
  </section>`;
}

function Events({ events, archived }) {
  if (archived) {
    return html`<section aria-labelledby="events-title">
      <h2 id="events-title">Events</h2>
      <p class="archived" data-archived-file=${archived.file}>Archived in <span class="mono">${archived.file}</span>
        on ${when(archived.archived_at)} (it ended before ${when(archived.before)}): its events left the log
        for that file, which <code>jobledger replay verify --archive DIR</code> checks and
        <code>jobledger replay import</code> restores.</p>
    </section>`;
  }
  return html`<section aria-labelledby="events-title">
    <h2 id="events-title">Events</h2>
    <div class="table-wrap"><table class="events">
      <thead><tr><th>#</th><th>Event</th><th>Actor</th><th>Token</th><th>Recorded</th></tr></thead>
      <tbody>${events.map((e) => html`<tr key=${e.version}>
        <td>${e.version}</td><td>${e.type}</td><td>${e.meta.actor}</td>
        <td class="mono">${e.meta.token_id ? shortId(e.meta.token_id) : '—'}</td>
        <td>${when(e.recorded_at)}</td></tr>`)}</tbody>
    </table></div>
  </section>`;
}

// The job as it stood after each of its events: a slider over them (the last is now).
function TimeTravel({ job, events }) {
  const [stop, setStop] = useState(null);
  const [past, setPast] = useState(null);
  const [error, setError] = useState(null);
  const n = events.length;
  const at = stop === null || stop >= n - 1 ? null : events[stop];
  useEffect(() => {
    if (!at) { setPast(null); return undefined; }
    let live = true;
    setError(null);
    api(`/jobs/${job.id}?at=${encodeURIComponent(at.recorded_at)}`)
      .then((p) => live && setPast(p), (e) => live && setError(e));
    return () => { live = false; };
  }, [at && at.version]);
  if (n < 2) return null;
  const value = stop === null ? n - 1 : stop;
  return html`<section class="travel" aria-labelledby="travel-title">
    <h2 id="travel-title">History</h2>
    <label for="travel">Show the job as it stood after event</label>
    <input id="travel" type="range" min="0" max=${n - 1} step="1" value=${value}
      aria-valuetext=${`event ${events[value].version}, ${events[value].type}, ${when(events[value].recorded_at)}`}
      onInput=${(e) => setStop(Number(e.target.value))} />
    <p class="travel-at">
      ${at ? html`At ${when(at.recorded_at)} (after ${at.type}):
        ${past ? html` <${StateBadge} state=${past.state} /> <span class="past-state" data-state=${past.state}>${past.state}</span>` : ' …'}
        <button type="button" class="link" onClick=${() => setStop(null)}>back to now</button>`
        : html`Now: <${StateBadge} state=${job.state} />`}
    </p>
    <${ErrorBox} error=${error} />
  </section>`;
}

export function JobPage({ id }) {
  const me = useMe();
  const [job, setLoadedJob] = useState(null);
  // Answers and pushes can arrive out of order (a read begun before a change, answered
  // after the change was pushed): never go back to an older version of the job.
  const setJob = useCallback((next) => setLoadedJob((cur) => (
    cur && next && cur.id === next.id && cur.version > next.version ? cur : next)), []);
  const [events, setEvents] = useState([]);
  const [archived, setArchived] = useState(null);
  const [timeline, setTimeline] = useState(null);
  const [error, setError] = useState(null);
  const [actionError, setActionError] = useState(null);

  const loadHistory = useCallback(async () => {
    const [ev, tl] = await Promise.all([api(`/jobs/${id}/events`), api(`/jobs/${id}/timeline`)]);
    setEvents(ev.events);
    setArchived(ev.archived || null);
    setTimeline(tl);
  }, [id]);
  const load = useCallback(async () => {
    try {
      setJob(await api(`/jobs/${id}`));
      await loadHistory();
      setError(null);
    } catch (e) { setError(e); }
  }, [id]);
  useEffect(() => { setJob(null); load(); }, [id]);

  // Live state: the watch WebSocket of the job's project; this job's changes only.
  const project = job && job.project;
  useEffect(() => {
    if (!project) return undefined;
    const socket = liveSocket({
      url: () => `/jobs/watch?project=${encodeURIComponent(project)}`,
      onMessage: (msg) => {
        // A change before this connection was registered was not pushed: read again.
        if (msg.type === 'resync' || msg.type === 'hello') load();
        if (msg.type === 'job' && msg.job.id === id) { setJob(msg.job); loadHistory().catch(() => {}); }
      },
    });
    return () => socket.stop();
  }, [project, id]);

  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!job) return html`<p class="loading">Loading job…</p>`;
  const operator = mayOperate(me, job.project);
  const ended = TERMINAL.has(job.state);
  const act = async (what) => {
    setActionError(null);
    try {
      const out = await api(`/jobs/${job.id}/${what}`, { method: 'POST' });
      if (what === 'rerun') navigate(`/jobs/${out.id}`);
      else setJob(out);
    } catch (e) { setActionError(e); }
  };
  return html`<article class="job" data-state=${job.state}>
    <div class="title-row">
      <h1>Job <span class="mono">${shortId(job.id)}</span></h1>
      <${StateBadge} state=${job.state} />
      <${Verified} jobId=${job.id} version=${job.version} />
    </div>
    <p class="mono id">${job.id}</p>
    ${operator ? html`<div class="actions">
      ${!ended ? html`<${ConfirmButton} label="Cancel job" question="Cancel this job?"
        confirmLabel="Yes, cancel it" className="cancel" onConfirm=${() => act('cancel')} />` : null}
      ${ended ? html`<${ConfirmButton} label="Rerun" question="Run this job again (a new job)?"
        confirmLabel="Yes, rerun" className="rerun" onConfirm=${() => act('rerun')} />` : null}
    </div>` : null}
    <${ErrorBox} error=${actionError} />
    <dl class="facts">
      <dt>State</dt><dd><span class="state-text">${job.state}</span>${job.waiting_reason ? html` — <span class="waiting">${job.waiting_reason}</span>` : null}</dd>
      <dt>Project</dt><dd><${Link} href=${`/jobs?project=${encodeURIComponent(job.project)}`}>${job.project}</${Link}></dd>
      <dt>Submitted by</dt><dd>${job.submitted_by}</dd>
      <dt>Created</dt><dd>${when(job.created_at)}</dd>
      <dt>Started</dt><dd>${when(job.started_at)}</dd>
      <dt>Finished</dt><dd>${when(job.finished_at)}</dd>
      <dt>Exit code</dt><dd class="exit-code">${job.exit_code ?? '—'}</dd>
      <dt>Failure reason</dt><dd>${failure(job.failure_reason)}${job.message ? ` (${job.message})` : ''}</dd>
      <dt>Attempt</dt><dd>${job.attempt}</dd>
      ${job.parent_job ? html`<dt>Parent job</dt><dd><${Link} href=${`/jobs/${job.parent_job}`}>${shortId(job.parent_job)}</${Link}></dd>` : null}
      ${job.rerun_of ? html`<dt>Rerun of</dt><dd><${Link} href=${`/jobs/${job.rerun_of}`}>${shortId(job.rerun_of)}</${Link}></dd>` : null}
      ${job.workflow_run ? html`<dt>Workflow run</dt><dd><${Link} href=${`/workflows/${job.workflow_run}`}>${runId(job.workflow_run)}</${Link}> step ${job.step}</dd>` : null}
      ${job.output !== null && job.output !== undefined ? html`<dt>Output</dt><dd><code class="output">${JSON.stringify(job.output)}</code></dd>` : null}
    </dl>
    <${TimeTravel} job=${job} events=${events} />
    <${LogView} jobId=${job.id} onEnd=${() => load()} />
    <${UsageCharts} jobId=${job.id} running=${!ended} />
    <${Spec} job=${job} />
    ${archived ? null : html`<${Timeline} timeline=${timeline} />`}
    <${Events} events=${events} archived=${archived} />
  </article>`;
}
