// The time machine (rooms.md): the same episode — fixed start, no random moves — played by two or
// more snapshots of a run's network side by side, so a class sees the agent's behaviour change
// from its first network to its best, not just a curve. Each snapshot plays in an ordinary
// session of its own (a `/ws` socket); its frames are recorded, and one shared step slider (and
// Play) moves every view.
import { drawWorld } from './draw.js';
import { fitCanvas } from './charts.js';

const $ = (id) => document.getElementById(id);
/// Most snapshots played at once (each is a session, a worker process, on the server).
const MAX_VIEWS = 4;
const agentAt = (u) => { const a = (u.grid?.agents ?? u.agents ?? [])[0]; return a && { x: a.x, y: a.y }; };
const KIND = { first: 'untrained', every: 'trained', best: 'best: the saved model' };

export class TimeMachine {
  constructor(room) {
    this.room = room; this.views = []; this.k = 0; this.timer = null;
    window.hamlet.timeMachine = { snapshots: [], views: [] };
    $('btn-tm').onclick = () => this.open();
    $('tm-close').onclick = () => this.shut();
    document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && !$('tm').hidden) this.shut(); });
    $('tm-play').onclick = () => this.playSideBySide();
    $('tm-step').oninput = (e) => this.show(Number(e.target.value));
    $('tm-run').onclick = () => this.toggleRun();
  }

  /// Opens the time machine over the page with this run's snapshots.
  open() {
    $('tm').hidden = false; $('tm-close').focus();
    this.list();
  }

  /// Closes it: the sessions it opened are let go.
  shut() {
    if (this.timer) this.toggleRun();
    this.close(); $('tm').hidden = true; $('tm-views').replaceChildren(); $('tm-controls').hidden = true;
    $('btn-tm').focus();
  }

  /// The run's snapshots, offered as checkboxes (the first, the middle one and the best ticked).
  async list() {
    const r = await fetch(`/api/rooms/${encodeURIComponent(this.room)}/snapshots`);
    const body = r.ok ? await r.json() : { snapshots: [] };
    const snaps = body.snapshots; window.hamlet.timeMachine.snapshots = snaps;
    const box = $('tm-list'); box.replaceChildren();
    if (!snaps.length) { $('tm-note').textContent = 'This room has no snapshots yet: they are taken while a run trains.'; return; }
    const ticked = new Set([0, Math.floor((snaps.length - 1) / 2), snaps.length - 1]);
    snaps.forEach((s, i) => {
      const label = document.createElement('label');
      const c = document.createElement('input'); c.type = 'checkbox'; c.value = String(i); c.checked = ticked.has(i);
      label.append(c, ` episode ${s.episode} (${KIND[s.kind]})`);
      box.append(label);
    });
    $('tm-note').textContent = `Pick up to ${MAX_VIEWS}, then play them side by side from the same start.`;
    $('tm-play').hidden = false;
  }

  /// Opens one session per chosen snapshot; each plays the episode at full speed, recorded.
  playSideBySide() {
    this.close();
    const snaps = window.hamlet.timeMachine.snapshots;
    const chosen = [...document.querySelectorAll('#tm-list input:checked')].map((c) => snaps[Number(c.value)]).slice(0, MAX_VIEWS);
    if (chosen.length < 2) { $('tm-note').textContent = 'Pick at least two snapshots to compare.'; return; }
    const holder = $('tm-views'); holder.replaceChildren();
    this.views = chosen.map((snap) => this.view(snap, holder));
    $('tm-controls').hidden = false; this.k = 0; this.show(0);
  }

  view(snap, holder) {
    const fig = document.createElement('figure'); fig.className = 'tm-view';
    const canvas = document.createElement('canvas'); canvas.width = 320; canvas.height = 320;
    canvas.setAttribute('role', 'img');
    const cap = document.createElement('figcaption');
    fig.append(canvas, cap); holder.append(fig); fitCanvas(canvas);
    const v = { snap, canvas, cap, frames: [], ended: null };
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${location.host}/ws`); v.ws = ws;
    const send = (m) => ws.readyState === 1 && ws.send(JSON.stringify(m));
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m.type === 'connected') {
        // Same start, no random moves, the snapshot's network, then the episode at full speed.
        send({ command: 'set_start', mode: 'fixed' }); send({ command: 'set_epsilon', epsilon: 0 });
        send({ command: 'load_model', model: snap.model });
      } else if (m.type === 'state_update' && !v.recording) {
        v.start = m; // a new session waits at step 0 of its first episode, from the fixed start
      } else if (m.type === 'model_loaded') {
        if (v.start) v.frames.push(v.start);
        send({ command: 'set_speed', speed: 10 }); send({ command: 'play' });
        v.recording = true;
      } else if (m.type === 'state_update' && v.recording && !v.ended) {
        v.frames.push(m); this.grown();
      } else if (m.type === 'episode_end' && v.recording && !v.ended) {
        v.ended = m; send({ command: 'pause' }); this.grown();
      } else if (m.type === 'error') { cap.textContent = `episode ${snap.episode}: ${m.message}`; }
    };
    return v;
  }

  /// A view recorded more: the slider reaches as far as the longest recording.
  grown() {
    const longest = Math.max(...this.views.map((v) => v.frames.length));
    $('tm-step').max = String(Math.max(0, longest - 1));
    window.hamlet.timeMachine.views = this.views.map((v) => ({ episode: v.snap.episode, frames: v.frames.length, ended: v.ended?.steps ?? null,
                                                                path: v.frames.map(agentAt) }));
    this.show(this.k);
  }

  /// Every view at step `k` of its recording (a view whose agent died earlier shows its end).
  show(k) {
    this.k = k; window.hamlet.timeMachine.k = k; $('tm-step').value = String(k); $('tm-at').textContent = `step ${k}`;
    for (const v of this.views) {
      const f = v.frames[Math.min(k, v.frames.length - 1)];
      if (!f) { v.cap.textContent = `episode ${v.snap.episode} (${KIND[v.snap.kind]}): loading…`; continue; }
      const at = Math.min(k, v.frames.length - 1);
      drawWorld(v.canvas, f, v.frames.slice(Math.max(0, at - 10), at).map(agentAt).filter(Boolean));
      const dead = v.ended && k >= v.frames.length - 1;
      const end = dead ? ` — ${v.ended.reason === 'max_steps' ? 'survived to the cap' : `${v.ended.meter ?? 'a meter'} ran out`} at step ${v.ended.steps}` : '';
      v.cap.textContent = `after ${v.snap.episode} episodes (${KIND[v.snap.kind]}): step ${f.step}, total reward ${f.cumulative_reward.toFixed(1)}${end}`;
      v.canvas.setAttribute('aria-label', v.cap.textContent);
    }
  }

  /// Play moves the shared slider forward ten steps a second; it stops at the end.
  toggleRun() {
    if (this.timer) { clearInterval(this.timer); this.timer = null; $('tm-run').textContent = '▶ Play'; return; }
    $('tm-run').textContent = '❚❚ Pause';
    this.timer = setInterval(() => {
      if (this.k >= Number($('tm-step').max)) { this.toggleRun(); return; }
      this.show(this.k + 1);
    }, 100);
  }

  close() { for (const v of this.views) v.ws.close(); this.views = []; }
}
