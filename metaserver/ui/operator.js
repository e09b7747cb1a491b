// The operator panel: worker processes from /api/workers (loopback, or the admin token this
// browser holds: the Teacher button in the header).
import { authHeaders } from './auth.js';

const $ = (id) => document.getElementById(id);

export class OperatorView {
  constructor(app) {
    this.app = app;
    this.armed = null; // the worker whose Restart button waits for its confirming second press
    window.addEventListener('hamlet-admin', () => this.refresh());
  }

  start() { this.refresh(); clearInterval(this.timer); this.timer = setInterval(() => this.refresh(), 2000); }
  stop() { clearInterval(this.timer); }

  headers() { return authHeaders(); }

  async refresh() {
    const r = await fetch('/api/workers', { headers: this.headers() }).catch(() => null);
    if (!r || r.status === 403) {
      $('workers-msg').textContent = 'The worker list is for operators: open this page on the server machine, or enter the admin token with the Teacher button.';
      document.querySelector('#workers tbody').replaceChildren();
      return;
    }
    const j = await r.json();
    const mine = this.app.inference.state.sessionId;
    // Stable order: training first, then by start time (ids are UUIDs and say nothing about age).
    const workers = [...j.workers].sort((a, b) => a.kind.localeCompare(b.kind, undefined, { numeric: true }) * -1
      || a.started - b.started || a.pid - b.pid);
    $('workers-msg').textContent = j.node_id
      ? `${j.count} worker processes on node ${j.node_id} (the node that answered; each node lists its own). ${await this.clusterLine()}`
      : `${j.count} worker processes.`;
    document.querySelector('#workers tbody').replaceChildren(...workers.map((w) => this.row(w, mine)));
  }

  /// One line about the cluster from /api/status: its nodes and their sessions, who trains.
  async clusterLine() {
    const st = await fetch('/api/status').then((r) => r.json()).catch(() => null);
    const c = st?.cluster;
    if (!c) return '';
    const nodes = c.nodes.map((n) => `${n.id} ${n.sessions}${n.ready ? '' : ' (draining)'}`).join(', ');
    const redis = c.redis_reachable ? '' : ' Redis is unreachable from this node.';
    return `Cluster: ${c.nodes.length} nodes (sessions: ${nodes}); training held by ${c.training_holder ?? 'no node'}.${redis}`;
  }

  row(w, mine) {
    const tr = document.createElement('tr');
    const own = mine && w.session === mine;
    tr.classList.toggle('mine', Boolean(own));
    const session = w.session ? `${w.session}${own ? ' (your session)' : ''}` : '–';
    for (const v of [w.kind, w.pid, w.state, session, w.restarts, w.last_exit ?? '–', w.id]) {
      const td = document.createElement('td'); td.textContent = v; tr.append(td);
    }
    const td = document.createElement('td'); const b = document.createElement('button');
    b.className = 'tool';
    const armed = this.armed === w.id;
    b.textContent = armed ? 'Confirm restart' : 'Restart';
    b.setAttribute('aria-label', armed ? `Confirm: restart worker ${w.pid}` : `Restart worker ${w.pid}`);
    b.onclick = async () => {
      if (this.armed !== w.id) { this.armed = w.id; this.refresh(); return; } // a second press confirms
      this.armed = null;
      await fetch(`/api/workers/${encodeURIComponent(w.id)}/restart`, { method: 'POST', headers: this.headers() });
      this.refresh();
    };
    td.append(b); tr.append(td);
    return tr;
  }
}
