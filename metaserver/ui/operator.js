// The operator panel: worker processes from /api/workers (loopback or admin token only).
const $ = (id) => document.getElementById(id);

export class OperatorView {
  constructor(app) { this.app = app; }
  start() { this.refresh(); clearInterval(this.timer); this.timer = setInterval(() => this.refresh(), 2000); }
  stop() { clearInterval(this.timer); }
  async refresh() {
    const r = await fetch('/api/workers').catch(() => null);
    if (!r || r.status === 403) { $('workers-msg').textContent = 'The worker list is for operators (this machine, or an admin token).'; return; }
    const j = await r.json();
    $('workers-msg').textContent = `${j.count} worker processes.`;
    const rows = j.workers.map((w) => {
      const tr = document.createElement('tr');
      for (const v of [w.id, w.kind, w.pid, w.state, w.session ?? '–', w.restarts, w.last_exit ?? '–']) {
        const td = document.createElement('td'); td.textContent = v; tr.append(td);
      }
      const td = document.createElement('td'); const b = document.createElement('button'); b.textContent = 'Restart';
      b.onclick = async () => { await fetch(`/api/workers/${encodeURIComponent(w.id)}/restart`, { method: 'POST' }); this.refresh(); };
      td.append(b); tr.append(td); return tr;
    });
    document.querySelector('#workers tbody').replaceChildren(...rows);
  }
}
