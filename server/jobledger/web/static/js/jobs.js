// The jobs list: filters kept in the URL (a view can be shared), counts per state, keyset
// paging, and live updates pushed over the jobs watch WebSocket. With `at`, the list as it
// stood at that instant (no live updates).
import { html, useState, useEffect, useLayoutEffect, useMemo, useRef } from './lib.js';
import { api, query, liveSocket } from './api.js';
import { Link, StateBadge, ErrorBox, navigate } from './ui.js';
import { STATES, when, duration, shortId, toIso, toLocalInput } from './format.js';

// The URL parameters that are list filters (GET /api/v1/jobs takes them all).
const FILTERS = ['state', 'project', 'label', 'definition', 'schedule', 'workflow_run',
  'created_after', 'created_before'];
// The ones the watch WebSocket takes (it filters by the job's current state itself).
const WATCHED = ['state', 'project', 'label', 'definition', 'schedule', 'workflow_run'];
const PAGE = 50;

function filtersOf(search) {
  const params = new URLSearchParams(search);
  const out = {};
  for (const k of [...FILTERS, 'at']) {
    const all = params.getAll(k);
    if (all.length) out[k] = k === 'state' || k === 'label' ? all : all[0];
  }
  return out;
}
const pick = (obj, keys) => Object.fromEntries(keys.filter((k) => k in obj).map((k) => [k, obj[k]]));

function FilterForm({ filters }) {
  const [f, setF] = useState({});
  useEffect(() => setF({
    ...filters,
    state: (filters.state || [])[0] || '',
    label: (filters.label || []).join(' '),
    created_after: toLocalInput(filters.created_after),
    created_before: toLocalInput(filters.created_before),
    at: toLocalInput(filters.at),
  }), [JSON.stringify(filters)]);
  const set = (k) => (e) => setF({ ...f, [k]: e.target.value });
  const submit = (e) => {
    e.preventDefault();
    navigate(`/jobs${query({
      ...f,
      label: (f.label || '').split(/\s+/).filter(Boolean),
      created_after: toIso(f.created_after), created_before: toIso(f.created_before), at: toIso(f.at),
    })}`);
  };
  const field = (k, label, props = {}) => html`<div class="field">
    <label for=${`f-${k}`}>${label}</label>
    <input id=${`f-${k}`} name=${k} value=${f[k] || ''} onInput=${set(k)} ...${props} />
  </div>`;
  return html`<form class="filters" onSubmit=${submit} aria-label="Filter jobs">
    <div class="field">
      <label for="f-state">State</label>
      <select id="f-state" name="state" value=${f.state || ''} onChange=${set('state')}>
        <option value="">any</option>
        ${STATES.map((s) => html`<option value=${s}>${s}</option>`)}
      </select>
    </div>
    ${field('project', 'Project')}
    ${field('label', 'Label', { placeholder: 'key=value' })}
    ${field('definition', 'Definition')}
    ${field('schedule', 'Schedule')}
    ${field('workflow_run', 'Workflow run')}
    ${field('created_after', 'Created after', { type: 'datetime-local', step: 1 })}
    ${field('created_before', 'Created before', { type: 'datetime-local', step: 1 })}
    ${field('at', 'As it stood at', { type: 'datetime-local', step: 1 })}
    <div class="field buttons">
      <button type="submit">Apply</button>
      <${Link} href="/jobs" class="button">Clear</${Link}>
    </div>
  </form>`;
}

function Counts({ counts, filters }) {
  if (!counts) return null;
  const base = { ...filters };
  delete base.state;
  return html`<ul class="counts" aria-label="Jobs per state">
    ${STATES.map((s) => html`<li><${Link} href=${`/jobs${query({ ...base, state: s })}`}
      class=${`count state-${s}`} data-state=${s}>
      <span class="n">${counts.counts[s] ?? 0}</span> ${s}</${Link}></li>`)}
    <li class="total">${counts.total} in all</li>
  </ul>`;
}

export function JobRow({ job }) {
  const labels = Object.entries(job.labels || {});
  return html`<tr data-job-id=${job.id} data-state=${job.state}>
    <td data-label="Job"><${Link} href=${`/jobs/${job.id}`} class="mono">${shortId(job.id)}</${Link}></td>
    <td data-label="State"><${StateBadge} state=${job.state} />
      ${job.state === 'queued' && job.waiting_reason
        ? html`<div class="waiting">${job.waiting_reason}</div>` : null}</td>
    <td data-label="Project">${job.project}</td>
    <td data-label="Image" class="mono">${job.spec.image}</td>
    <td data-label="Labels">${labels.map(([k, v]) => html`<span class="label">${k}=${v}</span> `)}</td>
    <td data-label="Created" class="nowrap">${when(job.created_at)}</td>
    <td data-label="Ran" class="nowrap">${duration(job)}</td>
  </tr>`;
}

export function JobsPage() {
  const search = location.search;
  const filters = useMemo(() => filtersOf(search), [search]);
  const [jobs, setJobs] = useState([]);
  const [cursor, setCursor] = useState(null);
  const [counts, setCounts] = useState(null);
  const [error, setError] = useState(null);
  const [live, setLive] = useState('');
  const [loading, setLoading] = useState(true);
  const generation = useRef(0);
  const rendered = useRef(false);
  // The newest state the watch pushed of each job, with the push's number: a page read that
  // began before a push may answer after it, and must not take a row back to an older
  // version (or back into a list its state has left).
  const pushed = useRef(new Map());
  const pushes = useRef(0);
  const newest = (rows) => rows.flatMap((row) => {
    const p = pushed.current.get(row.id);
    if (!p || p.job.version <= row.version) return [row];
    return p.matches === false ? [] : [p.job];
  });
  // Pushes from before a read began are in what it read: forget them once it answers.
  const forgetBefore = (n) => {
    for (const [id, p] of pushed.current) if (p.n < n) pushed.current.delete(id);
  };
  // For bench/dashboard.py: when a loaded page's rows are in the DOM.
  useLayoutEffect(() => {
    if (rendered.current) { rendered.current = false; performance.mark('jobledger:jobs-rendered'); }
  }, [jobs]);

  const loadCounts = async () => {
    if (filters.at) { setCounts(null); return; }
    try {
      setCounts(await api(`/jobs/counts${query(pick(filters, FILTERS))}`));
    } catch { setCounts(null); } // a server without counts: the list still works
  };
  const load = async () => {
    const mine = ++generation.current;
    const began = pushes.current;
    setLoading(true);
    try {
      const page = await api(`/jobs${query({ ...filters, limit: PAGE })}`);
      if (mine !== generation.current) return;
      setJobs(newest(page.jobs));
      forgetBefore(began);
      setCursor(page.next_cursor);
      setError(null);
      rendered.current = true;
    } catch (e) {
      if (mine === generation.current) setError(e);
    } finally {
      if (mine === generation.current) setLoading(false);
    }
    loadCounts();
  };
  const older = async () => {
    try {
      const page = await api(`/jobs${query({ ...filters, limit: PAGE, cursor })}`);
      setJobs((js) => [...js, ...newest(page.jobs).filter((j) => !js.some((x) => x.id === j.id))]);
      setCursor(page.next_cursor);
    } catch (e) { setError(e); }
  };

  useEffect(() => { pushed.current.clear(); load(); }, [search]);

  // Live: one WebSocket of job changes for this view; counts follow each change.
  useEffect(() => {
    if (filters.at) { setLive('not live: showing the past'); return undefined; }
    let countTimer = null;
    const socket = liveSocket({
      url: () => `/jobs/watch${query(pick(filters, WATCHED))}`,
      onStatus: (s) => setLive({ open: 'live', connecting: 'connecting…', closed: 'reconnecting…' }[s] || s),
      onMessage: (msg) => {
        // `hello` (at each connection): the watch is registered from now on, but a change
        // between the list's read (or a dropped connection) and now was not pushed: read
        // the list again. `resync`: the server missed notifications.
        if (msg.type === 'resync' || msg.type === 'hello') { load(); return; }
        if (msg.type !== 'job') return;
        const job = msg.job;
        const before = pushed.current.get(job.id);
        if (before && before.job.version > job.version) return;
        pushed.current.set(job.id, { job, matches: msg.matches, n: ++pushes.current });
        setJobs((js) => {
          const i = js.findIndex((x) => x.id === job.id);
          if (i >= 0 && js[i].version > job.version) return js;
          if (msg.matches === false) return i < 0 ? js : js.filter((x) => x.id !== job.id);
          if (i >= 0) return js.map((x) => (x.id === job.id ? job : x));
          // A new job is the newest: it goes on top (older ones belong to later pages).
          if (js.length === 0 || job.created_at >= js[0].created_at) return [job, ...js];
          return js;
        });
        // At most one counts read per 300 ms however many jobs change (a debounce would
        // never read under steady traffic).
        if (!countTimer) countTimer = setTimeout(() => { countTimer = null; loadCounts(); }, 300);
      },
    });
    return () => { clearTimeout(countTimer); socket.stop(); };
  }, [search]);

  return html`<section class="jobs">
    <div class="title-row">
      <h1>Jobs${filters.at ? html` <small>as they stood at ${when(filters.at)}</small>` : null}</h1>
      <span class="live" data-live=${live} aria-live="polite">${live}</span>
    </div>
    <${FilterForm} filters=${filters} />
    <${Counts} counts=${counts} filters=${pick(filters, FILTERS)} />
    <${ErrorBox} error=${error} />
    <div class="table-wrap">
      <table class="jobs-table">
        <caption class="sr-only">Jobs, newest first</caption>
        <thead><tr><th>Job</th><th>State</th><th>Project</th><th>Image</th><th>Labels</th>
          <th>Created</th><th>Ran</th></tr></thead>
        <tbody>${jobs.map((j) => html`<${JobRow} key=${j.id} job=${j} />`)}</tbody>
      </table>
    </div>
    ${!loading && jobs.length === 0 ? html`<p class="empty">No jobs match.</p>` : null}
    ${cursor ? html`<button type="button" class="older" onClick=${older}>Older jobs</button>` : null}
  </section>`;
}
