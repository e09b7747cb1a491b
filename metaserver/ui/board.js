// The class board (rooms.md): every room's runs compared on one chart and ranked in one table,
// readable on a projector. A group is a room's runs with the same settings (several seeds make a
// band). Labels say only what differs — from the defaults, and among the groups shown (what all
// share is said once, above) — and when one setting alone varies, the colours follow its value.
// The board's choices (metric, smoothing, hidden rooms) live in the page's URL.
import { drawBoard } from './boardchart.js';
import { fitCanvas, fmt } from './charts.js';
import { adminToken } from './auth.js';

const $ = (id) => document.getElementById(id);
const POLL_MS = 3000;
/// Distinct in both themes; used in order when groups differ in more than one setting.
const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#ca8a04', '#db2777'];
const LIVE = new Set(['training', 'paused']);

const show = (v) => String(v);
const settings = (d) => Object.keys(d).sort().map((k) => `${k} ${show(d[k])}`).join(', ');

/// Groups of runs — finished ones, and each room's live run — keyed by room and settings.
export function groupRuns(rooms, finished) {
  const groups = new Map();
  const add = (run, state) => {
    const key = `${run.room}|${JSON.stringify(run.differences, Object.keys(run.differences).sort())}`;
    if (!groups.has(key)) groups.set(key, { key, room: run.room, differences: run.differences, runs: [], state });
    const g = groups.get(key); g.runs.push(run);
    if (state) g.state = state;
  };
  for (const r of finished) add(r, null);
  for (const room of rooms) if (room.run && LIVE.has(room.state)) add(room.run, room.state);
  for (const g of groups.values()) summarise(g);
  return [...groups.values()];
}

/// An evaluation as the board uses it (the protocol names its return `return`).
const evaluation = (e) => e && { episode: e.episode, steps: e.steps, reward: e.return };

/// A group's best run, best and last evaluations, and first competence.
function summarise(g) {
  const better = (a, b) => !b || (a && (a.steps > b.steps || (a.steps === b.steps && a.reward > b.reward)));
  for (const r of g.runs) {
    const best = evaluation(r.best);
    if (better(best, g.best)) g.best = best;
    if (r.competent && (!g.competent || r.competent.seconds < g.competent.seconds)) g.competent = r.competent;
  }
  g.last = evaluation(g.runs[g.runs.length - 1].last);
  g.seeds = g.runs.length;
}

/// Competent first, then sooner, then longer survival, then higher return.
export function rank(groups) {
  return [...groups].sort((a, b) => (Boolean(b.competent) - Boolean(a.competent))
    || ((a.competent?.seconds ?? 0) - (b.competent?.seconds ?? 0))
    || ((b.best?.steps ?? -1) - (a.best?.steps ?? -1))
    || ((b.best?.reward ?? -Infinity) - (a.best?.reward ?? -Infinity)));
}

/// Labels (what each group changed, less what all share) and colours. `defaults`: every setting's
/// default, so a group that kept one that others changed says so.
export function labelAndColour(groups, defaults = {}) {
  const keys = [...new Set(groups.flatMap((g) => Object.keys(g.differences)))];
  const same = keys.filter((k) => groups.every((g) => k in g.differences && JSON.stringify(g.differences[k]) === JSON.stringify(groups[0].differences[k])));
  const varying = keys.filter((k) => !same.includes(k));
  const rooms = new Set(groups.map((g) => g.room));
  for (const g of groups) {
    const own = Object.fromEntries(varying.map((k) => [k, k in g.differences ? g.differences[k] : `${show(defaults[k])} (default)`]));
    g.what = settings(own);
    g.label = rooms.size > 1 || !g.what ? `${g.room}${g.what ? ` · ${g.what}` : ''}` : g.what;
  }
  // One numeric setting alone varies: the colour follows its value, low (blue) to high (orange).
  const knob = varying.length === 1 && groups.every((g) => typeof (g.differences[varying[0]] ?? 0) === 'number') ? varying[0] : null;
  if (knob) {
    const value = (g) => g.differences[knob] ?? defaults[knob];
    const vals = [...new Set(groups.map(value))].filter((v) => v != null).sort((a, b) => a - b);
    for (const g of groups) {
      const i = vals.indexOf(value(g)), f = vals.length > 1 && i >= 0 ? i / (vals.length - 1) : 0;
      g.color = i < 0 ? '#6b7280' : `hsl(${Math.round(220 - 195 * f)} 80% 45%)`;
    }
  } else groups.forEach((g, i) => { g.color = PALETTE[i % PALETTE.length]; });
  const shared = Object.fromEntries(same.map((k) => [k, groups[0].differences[k]]));
  return { knob, shared: settings(shared) };
}

export class BoardView {
  constructor(app) {
    this.app = app;
    const q = new URLSearchParams(location.search);
    this.metric = q.get('metric') === 'reward' ? 'reward' : 'steps';
    this.smooth = Math.min(0.95, Math.max(0, Number(q.get('smooth') ?? 0.3) || 0));
    this.hidden = new Set((q.get('hide') ?? '').split(',').filter(Boolean));
    this.data = { rooms: [], runs: [] };
    this.defaults = {};
    window.hamlet.board = { groups: [], ranked: [] };
    $('b-metric').value = this.metric; $('b-smooth').value = String(this.smooth);
    $('b-metric').onchange = (e) => { this.metric = e.target.value; this.changed(); };
    $('b-smooth').oninput = (e) => { this.smooth = Number(e.target.value); this.changed(); };
    $('b-own').onsubmit = (e) => {
      e.preventDefault();
      const name = $('b-room').value.trim().toLowerCase();
      location.href = `/?room=${encodeURIComponent(name)}#training`;
    };
    const fit = () => { fitCanvas($('b-chart')); this.draw(); };
    new ResizeObserver(fit).observe($('b-chart'));
    window.addEventListener('hamlet-theme', fit);
  }

  start() {
    if (this.timer) return;
    this.timer = setInterval(() => this.poll(), POLL_MS);
    // The defaults first (labels name a default a group kept), then the rooms.
    fetch('/api/training/config').then((r) => r.json()).then((c) => { this.defaults = c.defaults; })
      .catch(() => {}).finally(() => this.poll());
  }
  stop() { clearInterval(this.timer); this.timer = null; }

  async poll() {
    // Finished runs do not change: each is fetched once (`?after=` the newest one held).
    const after = this.data.runs.length ? this.data.runs[this.data.runs.length - 1].id : 0;
    try {
      const [rooms, runs] = await Promise.all([fetch('/api/rooms'), fetch(`/api/runs?after=${after}`)].map((p) => p.then((r) => r.json())));
      this.data = { rooms: rooms.rooms, runs: this.data.runs.concat(runs.runs).slice(-runs.max_runs_kept) };
    } catch (e) { $('b-note').textContent = 'The server does not answer /api/rooms and /api/runs; retrying…'; return; }
    this.polls = (this.polls ?? 0) + 1;
    this.draw();
  }

  /// The board's state into the URL, then drawn again.
  changed() {
    const q = new URLSearchParams(location.search);
    q.set('metric', this.metric); q.set('smooth', String(this.smooth));
    if (this.hidden.size) q.set('hide', [...this.hidden].join(',')); else q.delete('hide');
    history.replaceState(null, '', `?${q}${location.hash}`);
    this.draw();
  }

  draw() {
    const groups = groupRuns(this.data.rooms, this.data.runs);
    const { knob, shared } = labelAndColour(groups, this.defaults);
    const ranked = rank(groups);
    const shown = ranked.filter((g) => !this.hidden.has(g.room));
    // The steps chart's top: the highest step cap of the runs shown.
    const caps = shown.map((g) => g.differences.max_steps ?? this.defaults.max_steps ?? 500);
    drawBoard($('b-chart'), shown, { metric: this.metric, smooth: this.smooth, cap: Math.max(1, ...caps) });
    $('b-note').textContent = [shared && `All runs: ${shared}.`, knob && `Colour: ${knob}, low (blue) to high (orange).`,
      'Bands: the lowest to the highest run of a room that ran several seeds.'].filter(Boolean).join(' ');
    this.table(ranked);
    window.hamlet.board = { groups: shown.map((g) => g.label), ranked: ranked.map((g) => g.room), knob, shared, polls: this.polls };
  }

  table(ranked) {
    const body = $('b-table').tBodies[0]; body.replaceChildren();
    const teacher = Boolean(adminToken()) || ['127.0.0.1', 'localhost', '[::1]'].includes(location.hostname);
    const idle = this.data.rooms.filter((r) => !ranked.some((g) => g.room === r.room));
    ranked.forEach((g, i) => body.append(this.row(i + 1, g, teacher)));
    for (const r of idle) body.append(this.row('', { room: r.room, state: r.state, seeds: 0 }, false));
  }

  row(place, g, teacher) {
    const tr = document.createElement('tr');
    const cell = (text) => { const td = document.createElement('td'); td.textContent = text; tr.append(td); return td; };
    const ev = (e) => (e ? `${e.steps} steps · ${fmt(e.reward)}` : '–');
    cell(String(place));
    const name = cell(''); const a = document.createElement('a');
    a.href = `/?room=${encodeURIComponent(g.room)}#training`; a.textContent = g.room; name.append(a);
    const sw = cell(g.what || (g.seeds ? 'nothing (all runs alike)' : 'no run yet')); if (g.color) sw.style.borderLeft = `0.5rem solid ${g.color}`;
    cell(g.state ?? 'finished');
    cell(g.competent ? `✓ episode ${g.competent.episode} · ${Math.round(g.competent.seconds)} s` : '–');
    cell(ev(g.best)); cell(ev(g.last)); cell(String(g.seeds));
    const act = cell('');
    if (g.seeds) {
      const box = document.createElement('input'); box.type = 'checkbox'; box.checked = !this.hidden.has(g.room);
      box.setAttribute('aria-label', `show ${g.room} on the chart`);
      box.onchange = () => { if (box.checked) this.hidden.delete(g.room); else this.hidden.add(g.room); this.changed(); };
      act.append(box);
    }
    if (teacher && LIVE.has(g.state)) {
      const b = document.createElement('button'); b.textContent = 'Stop'; b.title = `Stop ${g.room}'s run and save its model`;
      b.onclick = () => stopRoom(g.room); act.append(b);
    }
    return tr;
  }
}

/// A teacher stops a room's run: `stop` on the room's socket, with the admin token when held.
function stopRoom(room) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(`${proto}//${location.host}/ws/training?room=${encodeURIComponent(room)}`);
  ws.onopen = () => { const m = { command: 'stop' }; const t = adminToken(); if (t) m.admin_token = t; ws.send(JSON.stringify(m)); };
  ws.onmessage = (e) => { const m = JSON.parse(e.data); if (m.type === 'training_complete' || m.type === 'error') ws.close(); };
  setTimeout(() => ws.close(), 10000);
}
