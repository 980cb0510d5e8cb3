// Projects, schedules, workflow runs and definitions: tables from the list routes.
import { html, useState, useEffect } from './lib.js';
import { api, query, liveSocket } from './api.js';
import { Link, StateBadge, ErrorBox, useLoad, navigate, useMe } from './ui.js';
import { when, shortId, runId, seconds } from './format.js';

function Table({ caption, head, rows }) {
  return html`<div class="table-wrap"><table>
    <caption class="sr-only">${caption}</caption>
    <thead><tr>${head.map((h) => html`<th>${h}</th>`)}</tr></thead>
    <tbody>${rows.map((cells) => html`<tr>${cells.map((c, i) => html`<td data-label=${head[i]}>${c}</td>`)}</tr>`)}</tbody>
  </table></div>`;
}

// The project a per-project page shows: ?project=, else the token's own, else "default".
function useProject() {
  const me = useMe();
  return new URLSearchParams(location.search).get('project') || (me && me.project) || 'default';
}

function ProjectPicker({ project, path }) {
  const [value, setValue] = useState(project);
  const submit = (e) => { e.preventDefault(); navigate(`${path}${query({ project: value })}`); };
  return html`<form class="filters" onSubmit=${submit} aria-label="Project">
    <div class="field"><label for="p-project">Project</label>
      <input id="p-project" value=${value} onInput=${(e) => setValue(e.target.value)} /></div>
    <div class="field buttons"><button type="submit">Show</button></div>
  </form>`;
}

export function ProjectsPage() {
  const [list, error] = useLoad(() => api('/projects'), []);
  return html`<section><h1>Projects</h1><${ErrorBox} error=${error} />
    ${list ? html`<${Table} caption="Projects" head=${['Project', 'Running', 'Queued', 'Max running']}
      rows=${list.projects.map((p) => [html`<${Link} href=${`/projects/${encodeURIComponent(p.name)}`}>${p.name}</${Link}>`,
        p.running, p.queued, p.max_running_jobs])} />` : null}
  </section>`;
}

function Tokens({ project, account }) {
  const [list, error, reload] = useLoad(
    () => api(`/projects/${project}/service-accounts/${account}/tokens`), [project, account]);
  const [issued, setIssued] = useState(null);
  const [actError, setActError] = useState(null);
  const issue = async () => {
    try { setIssued(await api(`/projects/${project}/service-accounts/${account}/tokens`, { method: 'POST', body: {} })); reload(); } catch (e) { setActError(e); }
  };
  const revoke = async (id) => {
    try { await api(`/projects/${project}/tokens/${id}`, { method: 'DELETE' }); reload(); } catch (e) { setActError(e); }
  };
  return html`<div class="tokens">
    <${ErrorBox} error=${error || actError} />
    ${issued ? html`<p class="issued" role="status">New token (shown this once): <code>${issued.token}</code></p>` : null}
    ${list ? html`<ul>${list.tokens.map((t) => html`<li>
      <span class="mono">${shortId(t.id)}</span> ${t.description || ''} created ${when(t.created_at)}
      ${t.revoked_at ? ` revoked ${when(t.revoked_at)}` : html` <button type="button" onClick=${() => revoke(t.id)}>Revoke</button>`}
    </li>`)}</ul>` : null}
    <button type="button" onClick=${issue}>Issue a token for ${account}</button>
  </div>`;
}

export function ProjectPage({ name }) {
  const p = encodeURIComponent(name);
  const [project, error] = useLoad(() => api(`/projects/${p}`), [name]);
  const [accounts, accError] = useLoad(() => api(`/projects/${p}/service-accounts`), [name]);
  return html`<section><h1>Project ${name}</h1><${ErrorBox} error=${error || accError} />
    ${project ? html`<dl class="facts"><dt>Running</dt><dd>${project.running}</dd><dt>Queued</dt><dd>${project.queued}</dd>
      <dt>Max running jobs</dt><dd>${project.max_running_jobs}</dd>
      <dt>Submit rate</dt><dd>${project.submit_rate ?? 'server default'}</dd></dl>` : null}
    <h2>Service accounts</h2>
    ${accounts ? accounts.service_accounts.map((a) => html`<div class="account">
      <h3>${a.name} <span class="role">${a.role}</span></h3><${Tokens} project=${p} account=${a.name} /></div>`) : null}
  </section>`;
}

function Occurrences({ project, name }) {
  const [list, error] = useLoad(
    () => api(`/projects/${project}/schedules/${encodeURIComponent(name)}/occurrences?limit=20`), [project, name]);
  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!list) return null;
  return html`<${Table} caption=${`Occurrences of ${name}`} head=${['Occurrence', 'Outcome', 'Reason', 'Job or run']}
    rows=${list.occurrences.map((o) => [when(o.occurrence), o.outcome + (o.manual ? ' (manual)' : ''),
      o.detail || o.reason || '', o.job_id ? html`<${Link} href=${`/jobs/${o.job_id}`}>${shortId(o.job_id)}</${Link}> ${o.job_state || ''}`
        : o.workflow_run ? html`<${Link} href=${`/workflows/${o.workflow_run}`}>run ${runId(o.workflow_run)}</${Link}> ${o.workflow_run_state || ''}` : ''])} />`;
}

export function SchedulesPage() {
  const project = useProject();
  const p = encodeURIComponent(project);
  const [list, error] = useLoad(() => api(`/projects/${p}/schedules`), [project]);
  const [open, setOpen] = useState(null);
  return html`<section><h1>Schedules</h1><${ProjectPicker} project=${project} path="/schedules" />
    <${ErrorBox} error=${error} />
    ${list ? html`<${Table} caption="Schedules" head=${['Schedule', 'Cron', 'Paused', 'Next', 'Fired', 'Skipped']}
      rows=${list.schedules.map((s) => [html`<button type="button" class="link" onClick=${() => setOpen(s.name)}>${s.name}</button>`,
        s.cron || '', s.paused ? 'paused' : '', when(s.next_occurrence), s.fired, s.skipped])} />` : null}
    ${list && list.schedules.length === 0 ? html`<p class="empty">No schedules in ${project}.</p>` : null}
    ${open ? html`<h2>Occurrences of ${open}</h2><${Occurrences} project=${p} name=${open} />` : null}
  </section>`;
}

export function WorkflowsPage() {
  const [list, error] = useLoad(() => api('/workflows?limit=50'), []);
  return html`<section><h1>Workflow runs</h1><${ErrorBox} error=${error} />
    ${list ? html`<${Table} caption="Workflow runs" head=${['Run', 'State', 'Project', 'Steps', 'Created']}
      rows=${list.runs.map((r) => [html`<${Link} href=${`/workflows/${r.id}`} class="mono">${runId(r.id)}</${Link}>`,
        html`<${StateBadge} state=${r.state} />`, r.project, r.steps.length, when(r.created_at)])} />` : null}
    ${list && list.runs.length === 0 ? html`<p class="empty">No workflow runs.</p>` : null}
  </section>`;
}

export function WorkflowPage({ id }) {
  const [run, error, reload] = useLoad(() => api(`/workflows/${encodeURIComponent(id)}`), [id]);
  // Live: the run's child jobs come over the jobs watch WebSocket; the run records a step's
  // end just after its job's (the reactor's next transaction), so read it now and once more.
  useEffect(() => {
    const timers = new Set();
    const socket = liveSocket({
      url: () => `/jobs/watch?workflow_run=${encodeURIComponent(id)}`,
      onMessage: (msg) => {
        if (msg.type === 'hello') { reload(); return; } // changes before it were not pushed
        if (msg.type !== 'job' && msg.type !== 'resync') return;
        reload();
        const t = setTimeout(() => { timers.delete(t); reload(); }, 500);
        timers.add(t);
      },
    });
    return () => { socket.stop(); timers.forEach(clearTimeout); };
  }, [id]);
  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!run) return html`<p class="loading">Loading run…</p>`;
  return html`<section><h1>Workflow run <span class="mono">${runId(run.id)}</span> <${StateBadge} state=${run.state} /></h1>
    <p>Project ${run.project}, submitted by ${run.submitted_by} at ${when(run.created_at)}</p>
    <h2>Steps</h2>
    <ol class="steps">${run.steps.map((s) => html`<li data-state=${s.state}>
      <strong>${s.name}</strong> <${StateBadge} state=${s.state} />
      ${s.needs && s.needs.length ? html` <span class="needs">needs ${s.needs.join(', ')}</span>` : null}
      ${s.job_id ? html` <${Link} href=${`/jobs/${s.job_id}`} class="mono">job ${s.label}</${Link}>` : null}
      ${s.waiting_reason || s.reason || s.skip_reason ? html` <span class="waiting">${s.waiting_reason || s.reason || s.skip_reason}</span>` : null}
      ${s.started_at && s.finished_at ? ` ran ${seconds((new Date(s.finished_at) - new Date(s.started_at)) / 1000)}` : ''}
    </li>`)}</ol>
  </section>`;
}

function Versions({ project, name }) {
  const [list, error] = useLoad(() => api(`/projects/${project}/definitions/${encodeURIComponent(name)}/versions`), [project, name]);
  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!list) return null;
  const versions = list.versions || [];
  return html`<ul class="versions">${versions.map((v) => html`<li>version ${v.version} saved by ${v.saved_by} at ${when(v.saved_at)}</li>`)}</ul>`;
}

export function DefinitionsPage() {
  const project = useProject();
  const p = encodeURIComponent(project);
  const [list, error] = useLoad(() => api(`/projects/${p}/definitions`), [project]);
  const [open, setOpen] = useState(null);
  return html`<section><h1>Definitions</h1><${ProjectPicker} project=${project} path="/definitions" />
    <${ErrorBox} error=${error} />
    ${list ? html`<${Table} caption="Definitions" head=${['Definition', 'Version', 'Parameters', 'Disabled', 'Updated']}
      rows=${list.definitions.map((d) => [html`<button type="button" class="link" onClick=${() => setOpen(d.name)}>${d.name}</button>`,
        d.version, d.params.join(', '), d.disabled ? 'disabled' : '', `${when(d.updated_at)} by ${d.updated_by}`])} />` : null}
    ${list && list.definitions.length === 0 ? html`<p class="empty">No definitions in ${project}.</p>` : null}
    ${open ? html`<h2>Versions of ${open}</h2><${Versions} project=${p} name=${open} />` : null}
  </section>`;
}
