// The inference view: one private session, its world, meters, Q-values and survival history.
import { Socket } from './socket.js';
import { ACTIONS, drawWorld, drawSurvival } from './draw.js';
import { drawInside } from './inside.js';

const $ = (id) => document.getElementById(id);
const pct = (v) => `${Math.round(v * 100)}%`;
// [key, label, bar fraction 0..1, text, danger(v): 0 fine … 1 critical]. Danger follows world.md:
// low energy, hygiene or satiation ends the episode; high stress hurts; debt is bad.
const METERS = [
  ['energy', 'Energy', (v) => v, pct, (v) => 1 - v],
  ['hygiene', 'Hygiene', (v) => v, pct, (v) => 1 - v],
  ['satiation', 'Satiation', (v) => v, pct, (v) => 1 - v],
  ['money', 'Money', (v) => (v + 100) / 200, (v) => `$${v.toFixed(0)}`, (v) => (v < 0 ? 0.6 + Math.min(0.4, -v / 250) : 0)],
  ['stress', 'Stress', (v) => v / 100, (v) => `${v.toFixed(0)}/100`, (v) => v / 100],
  ['social', 'Social', (v) => v, pct, (v) => 1 - v],
];
// Ranges for screen readers (role="meter"): [min, max] of each meter as the browser gets it.
const RANGES = { energy: [0, 1], hygiene: [0, 1], satiation: [0, 1], money: [-100, 100], stress: [0, 100], social: [0, 1] };

const TOKEN = 'hamlet-resume-token';

export class InferenceView {
  constructor(app) {
    this.app = app;
    this.state = { connected: false, playing: false, speed: 1, step: null, episode: null, x: null, y: null,
                   model: null, frames: 0, restarts: 0, lastRestartReason: null, meters: null,
                   epsilon: 0, inside: false, insideFrames: 0, noActivations: false };
    this.episodes = []; this.trail = []; this.last = null; this.cap = 500;
    // A watch link (?watch=…) shows someone else's session read-only; otherwise this tab's own
    // session, resumed with the token kept per tab (a reload or a dropped connection comes back).
    this.watch = new URLSearchParams(location.search).get('watch');
    this.socket = new Socket(() => this.path(), {
      onMessage: (m) => this.onMessage(m),
      onState: (s, code, reason) => this.app.setConn('inference', s, code, reason),
      finalCodes: {
        // 1011: the session's worker kept dying and the server ended the session.
        1011: () => { sessionStorage.removeItem(TOKEN); this.ended(this.lastError); },
        // 4001: the session was opened in another tab; taking it back is the reader's choice.
        4001: () => this.ended('This session was opened in another tab or window.', 'Use it here'),
      },
    });
    window.hamlet.inference = this.state;
    this.buildMeters(); this.bind(); this.fitCanvases();
    drawSurvival($('survival'), this.episodes, this.cap);
  }

  /// Canvases draw at their displayed size (and the screen's pixel density), redrawn on resize.
  fitCanvases() {
    const fit = () => {
      for (const c of [$('grid'), $('survival')]) {
        const r = c.getBoundingClientRect(), d = window.devicePixelRatio || 1;
        const w = Math.max(1, Math.round(r.width * d)), h = Math.max(1, Math.round(r.height * d));
        if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
      }
      drawWorld($('grid'), this.last, this.trail.slice(0, -1));
      drawSurvival($('survival'), this.episodes, this.cap);
    };
    new ResizeObserver(fit).observe($('grid'));
    window.addEventListener('resize', fit); window.addEventListener('hamlet-theme', fit);
  }

  start() { if (!this.started) { this.started = true; this.socket.connect(); } this.refreshModels(); }

  path() {
    if (this.watch) return `/ws?watch=${encodeURIComponent(this.watch)}`;
    const token = sessionStorage.getItem(TOKEN);
    return token ? `/ws?resume=${encodeURIComponent(token)}` : '/ws';
  }

  /// After close 1011 the server gave up on this session (after 4001 another tab took it): say
  /// so, and reconnect only when asked.
  ended(reason, button = 'Start a new session') {
    $('ended-why').textContent = reason || "The agent's process kept failing, so the server stopped restarting it.";
    $('btn-new-session').textContent = button;
    $('ended').hidden = false; this.state.ended = true;
    $('btn-new-session').onclick = () => {
      $('ended').hidden = true; this.state.ended = false; this.episodes = []; this.trail = []; this.last = null;
      this.socket.connect();
    };
  }

  /// The owner's share link: the page with `?watch=`, copied if the browser allows, and shown.
  share() {
    if (!this.watchToken) return;
    const link = `${location.origin}/?watch=${this.watchToken}`;
    $('share-link').value = link; $('share-box').hidden = false; $('share-link').select();
    navigator.clipboard?.writeText(link).then(
      () => { $('share-note').textContent = 'Copied. Anyone with this link sees this session but cannot control it.'; },
      () => { $('share-note').textContent = 'Copy this link: anyone with it sees this session but cannot control it.'; });
  }

  /// A watch link's page: the session without controls, saying whose it is.
  watchMode(m) {
    document.body.classList.add('watching');
    this.state.readOnly = true; this.state.watching = m.watching;
    $('watch-banner').hidden = false;
    $('watch-banner').textContent = `Watching session ${m.watching.slice(0, 8)} (view only): its owner controls it; you see what they see.`;
  }

  /// The page's URL carries model and speed, so a link reproduces what the teacher shows.
  remember(params) {
    const q = new URLSearchParams(location.search);
    for (const [k, v] of Object.entries(params)) q.set(k, v);
    history.replaceState(null, '', `?${q}${location.hash}`);
  }

  /// After `connected`: apply the model and speed the URL names.
  applyUrl() {
    const q = new URLSearchParams(location.search);
    const model = q.get('model'), speed = Number(q.get('speed'));
    if (model && model !== this.state.model) this.send('load_model', { model });
    if (speed >= 0.1 && speed <= 10) {
      this.send('set_speed', { speed }); $('speed').value = speed; $('speed-out').textContent = `${speed.toFixed(1)}×`;
    }
  }

  showInside(on) {
    this.state.inside = on; $('show-inside').checked = on; $('inside').hidden = !on;
    this.send('set_detail', { activations: on });
    if (on) {
      const c = $('inside-canvas'), r = c.getBoundingClientRect(), d = window.devicePixelRatio || 1;
      c.width = Math.max(1, Math.round(r.width * d)); c.height = Math.max(1, Math.round(r.height * d));
    }
  }

  setPlaying(p) {
    this.state.playing = p;
    $('btn-play').setAttribute('aria-pressed', String(p)); $('btn-pause').setAttribute('aria-pressed', String(!p));
  }

  send(cmd, extra = {}) { if (!this.state.readOnly) this.socket.send({ type: 'control', command: cmd, ...extra }); }

  bind() {
    $('btn-play').onclick = () => { this.send('play'); this.setPlaying(true); };
    $('btn-pause').onclick = () => { this.send('pause'); this.setPlaying(false); };
    $('btn-step').onclick = () => this.send('step');
    $('btn-reset').onclick = () => this.send('reset');
    $('btn-share').onclick = () => this.share();
    $('speed').oninput = (e) => { const s = Number(e.target.value); $('speed-out').textContent = `${s.toFixed(1)}×`; };
    $('speed').onchange = (e) => { this.send('set_speed', { speed: Number(e.target.value) }); this.state.speed = Number(e.target.value); this.remember({ speed: e.target.value }); };
    $('model').onchange = (e) => { this.send('load_model', { model: e.target.value }); this.remember({ model: e.target.value }); };
    $('epsilon').oninput = (e) => { $('epsilon-out').textContent = Number(e.target.value).toFixed(2); };
    $('epsilon').onchange = (e) => { this.state.epsilon = Number(e.target.value); this.send('set_epsilon', { epsilon: this.state.epsilon }); };
    $('random-start').onchange = (e) => this.send('set_start', { mode: e.target.checked ? 'random' : 'fixed' });
    $('show-inside').onchange = (e) => this.showInside(e.target.checked);
    window.addEventListener('focus', () => this.refreshModels());
    setInterval(() => { if (!document.hidden) this.refreshModels(); }, 20000);
  }

  key(e) {
    if (e.key === ' ') { e.preventDefault(); this.state.playing ? $('btn-pause').click() : $('btn-play').click(); }
    else if (e.key === 'ArrowRight') { e.preventDefault(); this.send('step'); }
    else if (e.key === 'r' || e.key === 'R') this.send('reset');
  }

  async refreshModels() {
    try {
      const r = await fetch('/api/models'); const j = await r.json();
      const sel = $('model'); const current = this.state.model;
      sel.replaceChildren(...j.models.map((name) => {
        const d = (j.details || []).find((x) => x.name === name) || {};
        const o = document.createElement('option'); o.value = name;
        o.textContent = d.arch ? `${name} (${d.arch}${d.episodes_trained ? `, ${d.episodes_trained} ep` : ''})` : name;
        return o;
      }));
      if (current) sel.value = current;
    } catch (e) { /* the status line already shows connection trouble */ }
  }

  buildMeters() {
    $('meters').replaceChildren(...METERS.flatMap(([k, label]) => {
      const [lo, hi] = RANGES[k];
      const l = document.createElement('span'); l.textContent = label; l.id = `ml-${k}`;
      const b = document.createElement('div'); b.className = 'bar'; b.id = `mb-${k}`;
      Object.entries({ role: 'meter', 'aria-labelledby': `ml-${k}`, 'aria-valuemin': lo, 'aria-valuemax': hi, 'aria-valuenow': lo })
        .forEach(([a, v]) => b.setAttribute(a, v));
      b.innerHTML = `<div id="m-${k}" style="width:0"></div>`;
      const v = document.createElement('span'); v.className = 'num'; v.id = `mv-${k}`; v.textContent = '–';
      return [l, b, v];
    }));
    $('qvalues').replaceChildren(...ACTIONS.flatMap((a, i) => {
      const row = [document.createElement('span'), document.createElement('div'), document.createElement('span'), document.createElement('span')];
      row[0].textContent = a; row[0].id = `ql-${i}`; row[1].className = 'bar'; row[1].innerHTML = `<div id="q-${i}" style="width:0"></div>`;
      row[1].setAttribute('role', 'meter'); row[1].setAttribute('aria-labelledby', `ql-${i}`);
      row[2].className = 'num'; row[2].id = `qv-${i}`; row[2].textContent = '–';
      row[3].className = 'num gap'; row[3].id = `qg-${i}`; row[3].textContent = '';
      return row;
    }));
  }

  renderMeters(meters) {
    this.state.meters = meters;
    for (const [k, , frac, text, danger] of METERS) {
      const v = meters[k]; const f = Math.max(0, Math.min(1, frac(v))); const d = danger(v);
      const bar = $(`m-${k}`); bar.style.width = `${(f * 100).toFixed(1)}%`;
      bar.className = d > 0.8 ? 'low' : d > 0.5 ? 'mid' : '';
      $(`mb-${k}`).classList.toggle('empty', f <= 0.001 && d > 0.8);
      $(`mb-${k}`).setAttribute('aria-valuenow', String(v));
      $(`mb-${k}`).setAttribute('aria-valuetext', text(v));
      const t = $(`mv-${k}`); t.textContent = f <= 0.001 && d > 0.8 ? `${text(v)} ⚠` : text(v);
      t.classList.toggle('low', d > 0.8);
    }
  }

  onMessage(m) {
    switch (m.type) {
      case 'connected':
        Object.assign(this.state, { connected: true, speed: m.speed, model: m.model, sessionId: m.session_id, resumed: Boolean(m.resumed) });
        this.setPlaying(m.playing);
        this.cap = m.max_steps ?? 500; $('cap').textContent = this.cap;
        $('speed').value = m.speed; $('speed-out').textContent = `${Number(m.speed).toFixed(1)}×`;
        this.refreshModels();
        if (m.read_only) { this.watchMode(m); break; }
        if (m.resume_token) sessionStorage.setItem(TOKEN, m.resume_token);
        this.watchToken = m.watch_token; $('btn-share').hidden = !m.watch_token;
        // A resumed session is as it was; a new one takes the model and speed the URL names.
        if (m.resumed) this.announceResume = true;
        else { this.episodes = []; this.applyUrl(); }
        if (this.state.inside) this.send('set_detail', { activations: true });
        break;
      case 'session_status': Object.assign(this.state, { speed: m.speed, model: m.model }); this.setPlaying(m.playing); break;
      case 'episode_start': this.trail = []; this.state.episode = m.episode; if (m.model_name) this.state.model = m.model_name; break;
      case 'state_update':
        if (this.announceResume) {
          this.announceResume = false;
          const note = $('resumed-note');
          note.textContent = `Resumed at episode ${m.episode}, step ${m.step}.`; note.hidden = false;
          this.state.resumedAt = { episode: m.episode, step: m.step };
          clearTimeout(this.resumeTimer); this.resumeTimer = setTimeout(() => { note.hidden = true; }, 6000);
        }
        this.render(m); break;
      case 'episode_end':
        this.episodes.push({ episode: m.episode, steps: m.steps, reason: m.reason });
        this.state.lastEnd = m.reason;
        $('last-end').textContent = `Episode ${m.episode} ended after ${m.steps} steps: ${
          m.reason === 'meter_depleted' ? `${m.meter ?? 'a meter'} ran out` : m.reason === 'max_steps' ? 'it reached the step cap' : 'you reset it'
        } (total reward ${m.total_reward.toFixed(1)}).`;
        drawSurvival($('survival'), this.episodes, this.cap);
        this.app.toast(`Episode ${m.episode} ended after ${m.steps} steps (${m.reason.replace('_', ' ')}), total reward ${m.total_reward.toFixed(1)}`, 'info');
        break;
      case 'model_loaded': this.state.model = m.model; this.state.noActivations = false; $('model').value = m.model; this.app.toast(`Model ${m.model} loaded`, 'info'); break;
      case 'worker_restarted':
        // Students get plain words; the technical reason is for the Workers view (and kept here).
        this.state.restarts += 1; this.state.lastRestartReason = m.reason;
        this.app.toast(`The agent's process crashed and was restarted; your episode ${m.resumed_episode} continues from step ${m.resumed_step}.`, 'warn');
        break;
      case 'error':
        if (m.code === 'no_activations') {
          this.state.inside = false; $('show-inside').checked = false; $('inside').hidden = true;
          this.state.noActivations = true;
        }
        this.lastError = m.code === 'worker_failed' ? "The agent's process kept failing, so the server stopped restarting it. Nothing you did caused this." : null;
        if (m.code !== 'worker_failed') this.app.toast(`Server: ${m.message}`, 'error');
        break;
    }
  }

  render(u) {
    this.last = u; this.state.frames += 1;
    const a = (u.grid?.agents ?? u.agents ?? [])[0];
    Object.assign(this.state, { step: u.step, episode: u.episode, x: a?.x, y: a?.y });
    if (a) { this.trail.push({ x: a.x, y: a.y }); if (this.trail.length > 12) this.trail.shift(); }
    drawWorld($('grid'), u, this.trail.slice(0, -1));
    $('f-episode').textContent = u.episode; $('f-step').textContent = u.step;
    $('f-reward').textContent = Number(u.reward).toFixed(3); $('f-total').textContent = Number(u.cumulative_reward).toFixed(2);
    $('f-action').textContent = u.action == null ? '–' : `${ACTIONS[u.action]}${u.explored ? ' (random)' : ''}`;
    this.state.explored = u.explored ?? null;
    const meters = u.agent_meters?.agent_0?.meters;
    if (meters) this.renderMeters(meters);
    const q = u.q_values;
    if (q && q.length === 5) {
      // Bars from zero (so close values look close); the gap to the best action says by how much.
      const hi = Math.max(...q), scale = Math.max(...q.map((v) => Math.abs(v))) || 1;
      const chosen = u.action ?? q.indexOf(hi);
      q.forEach((v, i) => {
        const bar = $(`q-${i}`); bar.style.width = `${(100 * Math.abs(v) / scale).toFixed(1)}%`;
        bar.parentElement.title = `Q(${ACTIONS[i]}) = ${v.toFixed(4)}`;
        bar.parentElement.setAttribute('aria-valuenow', String(v));
        $(`qv-${i}`).textContent = v.toFixed(2);
        $(`qg-${i}`).textContent = v === hi ? 'best' : (v - hi).toFixed(2);
        for (const el of [$(`ql-${i}`), bar.parentElement, $(`qv-${i}`)]) el.classList.toggle('chosen', i === chosen);
      });
    }
    if (u.activations && this.state.inside) {
      this.pendingInside = u;
      if (!this.insideFrame) this.insideFrame = requestAnimationFrame(() => {
        // At most once per animation frame, whatever the speed.
        this.insideFrame = 0; drawInside($('inside-canvas'), this.pendingInside); this.state.insideFrames += 1;
      });
    }
  }
}
