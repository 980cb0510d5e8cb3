// The dashboard: sign-in, the navigation, and the page for the current path.
import { html, render, useState, useEffect } from './lib.js';
import { api, session, ApiError } from './api.js';
import { Link, Me, ErrorBox } from './ui.js';
import { JobsPage } from './jobs.js';
import { JobPage } from './job.js';
import { AuditPage } from './audit.js';
import { ProjectsPage, ProjectPage, SchedulesPage, WorkflowsPage, WorkflowPage, DefinitionsPage } from './more.js';

const NAV = [
  ['/jobs', 'Jobs'], ['/audit', 'Audit'], ['/projects', 'Projects'], ['/schedules', 'Schedules'],
  ['/workflows', 'Workflows'], ['/definitions', 'Definitions'],
];

function route(path) {
  let m;
  if (path === '/' || path === '/jobs') return html`<${JobsPage} />`;
  if ((m = path.match(/^\/jobs\/([^/]+)$/))) return html`<${JobPage} id=${decodeURIComponent(m[1])} />`;
  if (path === '/audit') return html`<${AuditPage} />`;
  if (path === '/projects') return html`<${ProjectsPage} />`;
  if ((m = path.match(/^\/projects\/([^/]+)$/))) return html`<${ProjectPage} name=${decodeURIComponent(m[1])} />`;
  if (path === '/schedules') return html`<${SchedulesPage} />`;
  if (path === '/workflows') return html`<${WorkflowsPage} />`;
  if ((m = path.match(/^\/workflows\/([^/]+)$/))) return html`<${WorkflowPage} id=${decodeURIComponent(m[1])} />`;
  if (path === '/definitions') return html`<${DefinitionsPage} />`;
  return html`<p>No such page. <${Link} href="/jobs">Jobs</${Link}></p>`;
}

// Who a token is (GET /whoami); a server without that route: a token that lists jobs, role
// unknown (the API still refuses what it may not do).
async function whoami(token) {
  try {
    return await api('/whoami', { token });
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 404) throw e;
    await api('/jobs?limit=1', { token });
    return { actor: 'unknown', role: 'unknown', project: null };
  }
}

function SignIn({ onSignedIn, reason }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState(reason ? { message: reason } : null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const me = await whoami(token.trim());
      session.signIn(token.trim());
      onSignedIn(me);
    } catch (err) {
      setError(err.status === 401 ? { message: 'That token was refused: invalid, expired or revoked.' } : err);
    } finally {
      setBusy(false);
    }
  };
  return html`<main class="signin">
    <h1>jobledger</h1>
    <form onSubmit=${submit} aria-labelledby="signin-title">
      <h2 id="signin-title">Sign in</h2>
      <label for="token">API token</label>
      <input id="token" name="token" type="password" autocomplete="off" required
        value=${token} onInput=${(e) => setToken(e.target.value)} />
      <p class="hint">A service account's token (<code>jl_…</code>), or the server admin token
        printed by the first <code>jobledger serve</code>. It is kept in this tab only.</p>
      <${ErrorBox} error=${error} />
      <button type="submit" disabled=${busy}>Sign in</button>
    </form>
  </main>`;
}

function App() {
  const [me, setMe] = useState(null);
  const [checking, setChecking] = useState(Boolean(session.token()));
  const [reason, setReason] = useState(null);
  const [loc, setLoc] = useState(location.pathname + location.search);
  const path = loc.split('?')[0];
  useEffect(() => {
    const moved = () => setLoc(location.pathname + location.search);
    const out = () => { setMe(null); setReason('Signed out: the token is no longer accepted.'); };
    addEventListener('popstate', moved);
    addEventListener('jobledger:signout', out);
    return () => { removeEventListener('popstate', moved); removeEventListener('jobledger:signout', out); };
  }, []);
  useEffect(() => {
    if (!session.token()) return;
    whoami(session.token()).then(setMe, () => setReason('Sign in again.')).finally(() => setChecking(false));
  }, []);
  if (checking) return html`<p class="loading">Loading…</p>`;
  if (!me) return html`<${SignIn} reason=${reason} onSignedIn=${(m) => { setReason(null); setMe(m); }} />`;
  const signOut = () => { session.signOut(); setReason(null); };
  const section = '/' + (path.split('/')[1] || 'jobs');
  return html`<${Me.Provider} value=${me}>
    <header class="top">
      <${Link} href="/jobs" class="brand">jobledger</${Link}>
      <nav aria-label="Pages">
        ${NAV.map(([href, label]) => html`<${Link} href=${href}
          aria-current=${section === href ? 'page' : undefined}>${label}</${Link}>`)}
      </nav>
      <span class="who" title=${me.token_id ? `token ${me.token_id}` : ''}>
        ${me.actor} <span class="role">${me.role}</span></span>
      <button type="button" class="link" onClick=${signOut}>Sign out</button>
    </header>
    <main id="main">${route(path)}</main>
  </${Me.Provider}>`;
}

const root = document.getElementById('app');
root.textContent = '';
render(html`<${App} />`, root);
