// CPU and memory over time from a job's usage samples (uPlot), refreshed while it runs.
import { html, useEffect, useRef, useState } from './lib.js';
import uPlot from '../vendor/uplot/uPlot.esm.js';
import { api } from './api.js';
import { bytes, seconds } from './format.js';

// Usage samples have no push channel: while the job runs they are read again this often.
const REFRESH_MS = 2000;

function Chart({ title, unit, xs, ys, stroke }) {
  const el = useRef(null);
  const plot = useRef(null);
  useEffect(() => {
    const width = Math.max(240, (el.current.clientWidth || 600) - 8);
    plot.current = new uPlot({
      width, height: 160, title,
      scales: { x: { time: true } },
      series: [{}, { label: unit, stroke, width: 2, points: { show: true, size: 4 } }],
      axes: [{}, { size: 60 }],
      legend: { show: false },
    }, [xs, ys], el.current);
    return () => plot.current.destroy();
  }, []);
  useEffect(() => { if (plot.current) plot.current.setData([xs, ys]); }, [xs, ys]);
  return html`<figure class="chart" data-points=${xs.length} aria-label=${`${title}: ${xs.length} samples`}>
    <div ref=${el}></div></figure>`;
}

export function UsageCharts({ jobId, running }) {
  const [usage, setUsage] = useState(null);
  useEffect(() => {
    let live = true;
    let timer = null;
    const load = async () => {
      try { const u = await api(`/jobs/${jobId}/usage`); if (live) setUsage(u); } catch { /* next time */ }
      if (live && running) timer = setTimeout(load, REFRESH_MS);
    };
    load();
    return () => { live = false; clearTimeout(timer); };
  }, [jobId, running]);
  if (!usage) return null;
  const xs = usage.samples.map((s) => new Date(s.sampled_at).getTime() / 1000);
  const cpu = usage.samples.map((s) => s.cpu_percent);
  const mem = usage.samples.map((s) => s.memory_bytes / 1048576);
  const sum = usage.summary;
  return html`<section class="usage" aria-labelledby="usage-title">
    <h2 id="usage-title">Usage</h2>
    ${sum ? html`<p class="summary">${`${seconds(sum.wall_seconds)} wall, ${(sum.cpu_seconds || 0).toFixed(2)} CPU-seconds, peak memory ${bytes(sum.peak_memory_bytes)}`}</p>` : null}
    ${xs.length === 0 ? html`<p class="empty">No samples yet.</p>` : null}
    <div class="charts">
      <${Chart} title="CPU (% of one core)" unit="CPU %" xs=${xs} ys=${cpu} stroke="#1f6feb" />
      <${Chart} title="Memory (MiB)" unit="MiB" xs=${xs} ys=${mem} stroke="#8250df" />
    </div>
  </section>`;
}
