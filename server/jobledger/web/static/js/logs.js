// A job's output, live: the logs WebSocket from the last seq seen (after a dropped
// connection it resumes there: no gap, no duplicate), stdout and stderr told apart,
// follow/pause, search within, download as text.
import { html, useState, useEffect, useRef } from './lib.js';
import { liveSocket, apiText } from './api.js';

// Most lines kept on the page; older ones stay in the download.
const KEEP = 20000;

export function LogView({ jobId, onEnd }) {
  const [lines, setLines] = useState([]);
  const [status, setStatus] = useState('connecting');
  const [follow, setFollow] = useState(true);
  const [search, setSearch] = useState('');
  const [dropped, setDropped] = useState(0);
  const last = useRef(0);
  const box = useRef(null);

  useEffect(() => {
    last.current = 0;
    setLines([]);
    const socket = liveSocket({
      url: () => `/jobs/${jobId}/logs/ws?after=${last.current}`,
      onStatus: setStatus,
      onMessage: (msg) => {
        if (msg.type === 'lines') {
          const fresh = msg.lines.filter((l) => l.seq > last.current);
          if (!fresh.length) return undefined;
          last.current = fresh[fresh.length - 1].seq;
          setLines((ls) => {
            const all = ls.concat(fresh);
            if (all.length <= KEEP) return all;
            setDropped((d) => d + all.length - KEEP);
            return all.slice(all.length - KEEP);
          });
          return undefined;
        }
        if (msg.type === 'end') {
          if (onEnd) onEnd(msg);
          return 'end';
        }
        return undefined;
      },
    });
    return () => socket.stop();
  }, [jobId]);

  useEffect(() => {
    if (follow && box.current) box.current.scrollTop = box.current.scrollHeight;
  }, [lines, follow]);

  const download = async () => {
    const text = await apiText(`/jobs/${jobId}/logs.txt`);
    const url = URL.createObjectURL(new Blob([text], { type: 'text/plain' }));
    const a = document.createElement('a');
    a.href = url;
    a.download = `job-${jobId}.log.txt`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  };

  const needle = search.toLowerCase();
  const shown = needle ? lines.filter((l) => l.text.toLowerCase().includes(needle)) : lines;
  const words = { open: 'live', connecting: 'connecting…', closed: 'connection lost: resuming…', ended: 'complete' };
  return html`<section class="logs" aria-labelledby="logs-title">
    <div class="title-row">
      <h2 id="logs-title">Logs</h2>
      <span class="live" data-status=${status} aria-live="polite">${words[status] || status}</span>
    </div>
    <div class="log-tools">
      <button type="button" aria-pressed=${follow ? 'true' : 'false'} onClick=${() => setFollow(!follow)}>
        ${follow ? 'Pause' : 'Follow'}</button>
      <label for="log-search">Search</label>
      <input id="log-search" type="search" value=${search} onInput=${(e) => setSearch(e.target.value)} />
      ${needle ? html`<span class="matches">${shown.length} of ${lines.length} lines</span>` : null}
      <button type="button" onClick=${download}>Download as text</button>
      <span class="legend"><span class="stream-stdout">stdout</span> <span class="stream-stderr">stderr</span></span>
    </div>
    ${dropped ? html`<p class="hint">${dropped} earlier lines are only in the download.</p>` : null}
    <div class="log" role="log" ref=${box} tabindex="0" aria-label="Job output" data-last-seq=${lines.length ? lines[lines.length - 1].seq : 0}>
      ${shown.map((l) => html`<div key=${l.seq} class=${`line stream-${l.stream}`} data-seq=${l.seq}>
        <span class="seq" aria-hidden="true">${l.seq}</span><span class="tag">${l.stream === 'stdout' ? '' : l.stream}</span><span class="text">${l.text}</span></div>`)}
      ${lines.length === 0 ? html`<p class="empty">No output yet.</p>` : null}
    </div>
  </section>`;
}
