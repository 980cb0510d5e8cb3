// How values read on the pages.

export const STATES = ['queued', 'running', 'cancelling', 'succeeded', 'failed', 'cancelled'];
export const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

export function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString(undefined, {
    year: 'numeric', month: 'short', day: 'numeric',
    hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
}

export function seconds(s) {
  if (s === null || s === undefined) return '—';
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 90) return `${s.toFixed(1)} s`;
  if (s < 5400) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

export function duration(job) {
  const start = job.started_at && new Date(job.started_at);
  if (!start) return '—';
  const end = job.finished_at ? new Date(job.finished_at) : new Date();
  return seconds((end - start) / 1000);
}

// Ids are UUIDv7: their first digits are the time, the same for jobs made together; the
// last group tells them apart.
export const shortId = (id) => String(id).slice(-12);
// A workflow run is shown as the API and CLI label its steps' jobs (RUN.N): its first 8 hex
// digits (run ids are random, not time-ordered).
export const runId = (id) => String(id).slice(0, 8);

export function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

const REASONS = {
  exit_code: 'the command exited with a non-zero code',
  oom: 'killed for using more memory than its limit',
  timeout: 'ran longer than its timeout',
  worker_lost: 'its worker stopped answering',
  start_error: 'the container could not be created or started',
};
export const failure = (reason) => (reason ? REASONS[reason] || reason : '—');

// A datetime-local input's value as an ISO instant with an offset, and back.
export function toIso(local) {
  if (!local) return '';
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}
export function toLocalInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// An env value as shown: text, or for a secret reference its name (never a value).
export function envValue(v) {
  if (v && typeof v === 'object' && 'secret' in v) {
    return `secret ${v.secret}${v.version ? ` (version ${v.version})` : ' (latest version)'}`;
  }
  return String(v);
}
