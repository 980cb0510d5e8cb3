// The audit query as a form (who, what, job, reason, since/until), kept in the URL.
import { html, useState, useEffect, useMemo } from './lib.js';
import { api, query } from './api.js';
import { Link, ErrorBox, navigate } from './ui.js';
import { when, shortId, toIso, toLocalInput } from './format.js';

const FIELDS = ['actor', 'type', 'job', 'project', 'reason', 'since', 'until'];
const REASONS = ['exit_code', 'oom', 'timeout', 'worker_lost', 'start_error'];
const TYPES = ['JobSubmitted', 'JobQueued', 'JobStarted', 'JobSucceeded', 'JobFailed',
  'JobCancelRequested', 'JobCancelled', 'JobRetryScheduled', 'TokenIssued', 'TokenRevoked'];

function detail(e) {
  const { type, ...rest } = e.data || {};
  const s = JSON.stringify(Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== null)));
  return s === '{}' ? '' : s.length > 160 ? `${s.slice(0, 160)}…` : s;
}

export function AuditPage() {
  const search = location.search;
  const params = useMemo(() => Object.fromEntries(
    FIELDS.map((k) => [k, new URLSearchParams(search).get(k) || ''])), [search]);
  const [form, setForm] = useState(params);
  const [events, setEvents] = useState(null);
  const [cursor, setCursor] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => setForm({ ...params, since: toLocalInput(params.since), until: toLocalInput(params.until) }), [search]);
  const fetchPage = (after) => api(`/audit${query({ ...params, limit: 100, cursor: after })}`);
  useEffect(() => {
    let live = true;
    setError(null);
    fetchPage(null).then((p) => { if (live) { setEvents(p.events); setCursor(p.next_cursor); } },
      (e) => live && setError(e));
    return () => { live = false; };
  }, [search]);
  const older = async () => {
    try { const p = await fetchPage(cursor); setEvents([...events, ...p.events]); setCursor(p.next_cursor); } catch (e) { setError(e); }
  };
  const set = (k) => (e) => setForm({ ...form, [k]: e.target.value });
  const submit = (e) => {
    e.preventDefault();
    navigate(`/audit${query({ ...form, since: toIso(form.since), until: toIso(form.until) })}`);
  };
  const input = (k, label, props = {}) => html`<div class="field"><label for=${`a-${k}`}>${label}</label>
    <input id=${`a-${k}`} name=${k} value=${form[k] || ''} onInput=${set(k)} ...${props} /></div>`;
  return html`<section>
    <h1>Audit</h1>
    <form class="filters" onSubmit=${submit} aria-label="Audit query">
      ${input('actor', 'Who (actor)', { placeholder: 'project/account, admin, worker:ID' })}
      ${input('type', 'What (event type)', { list: 'event-types' })}
      <datalist id="event-types">${TYPES.map((t) => html`<option value=${t} />`)}</datalist>
      ${input('job', 'Job id')}
      ${input('project', 'Project')}
      <div class="field"><label for="a-reason">Failure reason</label>
        <select id="a-reason" name="reason" value=${form.reason || ''} onChange=${set('reason')}>
          <option value="">any</option>${REASONS.map((r) => html`<option value=${r}>${r}</option>`)}
        </select></div>
      ${input('since', 'Since', { type: 'datetime-local', step: 1 })}
      ${input('until', 'Until', { type: 'datetime-local', step: 1 })}
      <div class="field buttons"><button type="submit">Search</button>
        <${Link} href="/audit" class="button">Clear</${Link}></div>
    </form>
    <${ErrorBox} error=${error} />
    ${events ? html`<div class="table-wrap"><table class="audit">
      <caption class="sr-only">Events, newest first</caption>
      <thead><tr><th>Recorded</th><th>Event</th><th>Stream</th><th>Actor</th><th>Token</th><th>Details</th></tr></thead>
      <tbody>${events.map((e) => html`<tr key=${e.position}>
        <td data-label="Recorded">${when(e.recorded_at)}</td>
        <td data-label="Event">${e.type}</td>
        <td data-label="Stream">${e.job_id ? html`<${Link} href=${`/jobs/${e.job_id}`} class="mono">job ${shortId(e.job_id)}</${Link}>`
          : `${e.stream_type} ${shortId(e.stream_id)}`}</td>
        <td data-label="Actor">${e.meta.actor}</td>
        <td data-label="Token" class="mono">${e.meta.token_id ? shortId(e.meta.token_id) : '—'}</td>
        <td data-label="Details" class="details">${detail(e)}</td></tr>`)}</tbody>
    </table></div>
    ${events.length === 0 ? html`<p class="empty">No events match.</p>` : null}
    ${cursor ? html`<button type="button" onClick=${older}>Older events</button>` : null}` : null}
  </section>`;
}
