// Small pieces every page uses: links that route in the page, the signed-in user, state
// badges, error boxes and a button that asks before it acts.
import { html, useState, useRef, useEffect, useLayoutEffect, createContext, useContext } from './lib.js';

export function navigate(url, { replace = false } = {}) {
  history[replace ? 'replaceState' : 'pushState'](null, '', url);
  dispatchEvent(new PopStateEvent('popstate'));
}

export function Link({ href, children, ...rest }) {
  const go = (e) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(href);
  };
  return html`<a href=${href} onClick=${go} ...${rest}>${children}</a>`;
}

// { actor, role, project } of the token signed in with.
export const Me = createContext(null);
export const useMe = () => useContext(Me);

// Whether the signed-in token may cancel/rerun in a project (operator or admin there).
export function mayOperate(me, project) {
  if (!me || !['operator', 'admin'].includes(me.role)) return false;
  return me.project === null || me.project === undefined || me.project === project;
}

export function StateBadge({ state }) {
  return html`<span class=${`badge state-${state}`}>${state}</span>`;
}

export function ErrorBox({ error }) {
  if (!error) return null;
  const field = error.details && error.details.field;
  return html`<p class="error" role="alert">${error.message}${field ? ` (${field})` : ''}</p>`;
}

// A button that asks "are you sure?" in the page (keyboard reachable, no window.confirm).
export function ConfirmButton({ label, question, confirmLabel, onConfirm, className = '' }) {
  const [asking, setAsking] = useState(false);
  const [busy, setBusy] = useState(false);
  const yes = useRef(null);
  // Right after the DOM changes: the pressed button is gone, the focus must not drop to <body>.
  useLayoutEffect(() => { if (asking && yes.current) yes.current.focus(); }, [asking]);
  if (!asking) {
    return html`<button type="button" class=${className} onClick=${() => setAsking(true)}>${label}</button>`;
  }
  const confirm = async () => {
    setBusy(true);
    try { await onConfirm(); } finally { setBusy(false); setAsking(false); }
  };
  return html`<span class="confirm" role="group" aria-label=${question}>
    <span>${question}</span>
    <button type="button" class=${`danger ${className}`} ref=${yes} disabled=${busy} onClick=${confirm}>${confirmLabel}</button>
    <button type="button" onClick=${() => setAsking(false)}>Keep it</button>
  </span>`;
}

// Load something when `deps` change: [value, error, reload].
export function useLoad(load, deps) {
  const [value, setValue] = useState(null);
  const [error, setError] = useState(null);
  const [n, setN] = useState(0);
  useEffect(() => {
    let live = true;
    setError(null);
    load().then((v) => live && setValue(v), (e) => live && setError(e));
    return () => { live = false; };
  }, [...deps, n]);
  return [value, error, () => setN((x) => x + 1)];
}
