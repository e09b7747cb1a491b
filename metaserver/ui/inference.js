// The inference view: one private session (or a watched one), its world, meters, Q-values,
// survival history and the teaching controls, which the server remembers (a reload or a watcher
// shows them as they are).
import { Socket } from './socket.js';
import { ACTIONS, drawWorld } from './draw.js';
import { drawSurvival, fitCanvas } from './charts.js';
import { drawInside } from './inside.js';
import { buildMeters, renderMeters } from './meters.js';
import { buildQBars, renderQBars } from './qbars.js';
import { WhatIf } from './whatif.js';
import { modelLabel } from './models.js';

const $ = (id) => document.getElementById(id);
const TOKEN = 'hamlet-resume-token';

/// What the inside view shows, in words.
export function insideCaption(u) {
  const q = u.q_values, best = q ? ACTIONS[q.indexOf(Math.max(...q))] : null;
  if (u.action == null) return `episode ${u.episode}, step ${u.step}: before its first move it would choose ${best ?? '–'}`;
  return `episode ${u.episode}, step ${u.step}: it chose ${ACTIONS[u.action]}${u.explored ? ' at random (exploring)' : ''}`;
}

export class InferenceView {
  constructor(app) {
    this.app = app;
    this.state = { connected: false, playing: false, speed: 1, step: null, episode: null, x: null, y: null,
                   model: null, frames: 0, restarts: 0, lastRestartReason: null, meters: null,
                   epsilon: 0, startMode: 'fixed', inside: false, insideFrames: 0, noActivations: false };
    this.episodes = []; this.trail = []; this.last = null; this.cap = 500;
    // A watch link (?watch=…) shows someone else's session read-only; otherwise this tab's own
    // session, resumed with the token kept per tab (a reload or a dropped connection comes back).
    this.watch = new URLSearchParams(location.search).get('watch');
    // "Try it yourself" (?fork=…): a session of this tab's own from where the watched one is; once
    // connected it is this tab's session like any other (the URL forgets the fork).
    this.fork = this.watch ? null : new URLSearchParams(location.search).get('fork');
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
    buildMeters($('meters'), 'm'); buildQBars($('qvalues'), 'q');
    this.whatIf = new WhatIf(this);
    this.bind(); this.fitCanvases();
    drawSurvival($('survival'), this.episodes, this.cap);
  }

  /// Canvases draw at their displayed size (and the screen's pixel density), redrawn on resize.
  fitCanvases() {
    const fit = () => {
      for (const c of [$('grid'), $('survival'), $('inside-canvas')]) fitCanvas(c);
      this.redraw();
    };
    new ResizeObserver(fit).observe($('grid'));
    new ResizeObserver(fit).observe($('inside-canvas'));
    window.addEventListener('resize', fit); window.addEventListener('hamlet-theme', fit);
  }

  /// Draws the world, the survival chart and the inside view as they are (what-if shows its own).
  redraw() {
    if (this.whatIf.active) { this.whatIf.draw(); } else {
      drawWorld($('grid'), this.last, this.trail.slice(0, -1));
      if (this.last?.activations && this.state.inside) drawInside($('inside-canvas'), this.last);
    }
    drawSurvival($('survival'), this.episodes, this.cap);
  }

  start() { if (!this.started) { this.started = true; this.socket.connect(); } this.refreshModels(); }

  path() {
    if (this.watch) return `/ws?watch=${encodeURIComponent(this.watch)}`;
    if (this.fork) return `/ws?fork=${encodeURIComponent(this.fork)}`;
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
    $('watch-banner').textContent = `Watching session ${m.watching.slice(0, 8)} (view only): its owner controls it; you see what they see. “What if…?” works here too. `;
    const mine = document.createElement('button');
    mine.id = 'btn-fork'; mine.className = 'primary'; mine.textContent = 'Try it yourself';
    mine.title = 'Your own copy of this session from this very step, paused: the original is not touched';
    mine.onclick = () => { location.href = `/?fork=${encodeURIComponent(this.watch)}`; };
    $('watch-banner').append(mine);
  }

  /// A fork's `connected`: the tab's own session from now on; its first frame says where it began.
  forked() {
    this.fork = null; this.announceFork = true;
    const q = new URLSearchParams(location.search); q.delete('fork');
    history.replaceState(null, '', `${q.toString() ? `?${q}` : location.pathname}${location.hash}`);
  }

  /// The page's URL carries model and speed, so a link reproduces what the teacher shows.
  remember(params) {
    const q = new URLSearchParams(location.search);
    for (const [k, v] of Object.entries(params)) q.set(k, v);
    history.replaceState(null, '', `?${q}${location.hash}`);
  }

  /// After a fresh session's `connected`: apply the model and speed the URL names.
  applyUrl() {
    const q = new URLSearchParams(location.search);
    const model = q.get('model'), speed = Number(q.get('speed'));
    if (model && model !== this.state.model) this.send('load_model', { model });
    if (speed >= 0.1 && speed <= 10) this.send('set_speed', { speed });
  }

  /// The teaching settings as the server says they are (connected, settings): every control
  /// shows the session as it is, also on a reloaded page and on watchers' screens.
  applySettings(m) {
    Object.assign(this.state, { speed: m.speed, epsilon: m.epsilon ?? 0, startMode: m.start_mode ?? 'fixed' });
    $('speed').value = m.speed; $('speed-out').textContent = `${Number(m.speed).toFixed(1)}×`;
    $('epsilon').value = this.state.epsilon; $('epsilon-out').textContent = this.state.epsilon.toFixed(2);
    $('random-start').checked = this.state.startMode === 'random';
    this.showInside(Boolean(m.detail), false);
  }

  /// Shows or hides "Inside the agent"; `ask`: tell the session (the owner's choice).
  showInside(on, ask = true) {
    this.state.inside = on; $('show-inside').checked = on; $('inside').hidden = !on;
    document.body.classList.toggle('inside-on', on);
    if (ask) this.send('set_detail', { activations: on });
    if (on) { fitCanvas($('inside-canvas')); this.redraw(); }
  }

  setPlaying(p) {
    this.state.playing = p;
    $('btn-play').setAttribute('aria-pressed', String(p)); $('btn-pause').setAttribute('aria-pressed', String(!p));
    $('start-hint').hidden = p || this.state.readOnly || this.state.frames > 3 || this.state.episode > 1;
    if (p) this.whatIf.leave();
    this.whatIf.update();
  }

  send(cmd, extra = {}) { if (!this.state.readOnly) this.socket.send({ type: 'control', command: cmd, ...extra }); }

  bind() {
    // The first screen's hint goes as soon as the reader does anything.
    for (const id of ['btn-play', 'btn-step', 'btn-reset', 'btn-whatif']) $(id).addEventListener('click', () => { $('start-hint').hidden = true; });
    $('btn-play').onclick = () => { this.send('play'); this.setPlaying(true); };
    $('btn-pause').onclick = () => { this.send('pause'); this.setPlaying(false); };
    $('btn-step').onclick = () => { this.whatIf.leave(); this.send('step'); };
    $('btn-reset').onclick = () => { this.whatIf.leave(); this.send('reset'); };
    $('btn-share').onclick = () => this.share();
    $('speed').oninput = (e) => { $('speed-out').textContent = `${Number(e.target.value).toFixed(1)}×`; };
    $('speed').onchange = (e) => { this.send('set_speed', { speed: Number(e.target.value) }); this.remember({ speed: e.target.value }); };
    $('model').onchange = (e) => { this.send('load_model', { model: e.target.value }); this.remember({ model: e.target.value }); };
    $('epsilon').oninput = (e) => { $('epsilon-out').textContent = Number(e.target.value).toFixed(2); };
    $('epsilon').onchange = (e) => this.send('set_epsilon', { epsilon: Number(e.target.value) });
    $('random-start').onchange = (e) => this.send('set_start', { mode: e.target.checked ? 'random' : 'fixed' });
    $('show-inside').onchange = (e) => this.showInside(e.target.checked);
    window.addEventListener('focus', () => this.refreshModels());
    setInterval(() => { if (!document.hidden) this.refreshModels(); }, 20000);
  }

  key(e) {
    if (e.key === ' ') { e.preventDefault(); this.state.playing ? $('btn-pause').click() : $('btn-play').click(); }
    else if (e.key === 'ArrowRight') { e.preventDefault(); $('btn-step').click(); }
    else if (e.key === 'r' || e.key === 'R') $('btn-reset').click();
  }

  /// The model list, each named by what it achieved ("trained 14:32 · survives 500 steps ·
  /// return 1040"), the file name second.
  async refreshModels() {
    try {
      const j = await (await fetch('/api/models')).json();
      const sel = $('model'), current = this.state.model;
      sel.replaceChildren(...j.models.map((name) => {
        const d = (j.details || []).find((x) => x.name === name) || { name };
        const o = document.createElement('option'); o.value = name; o.textContent = modelLabel(d);
        return o;
      }));
      if (current) sel.value = current;
    } catch (e) { /* the status line already shows connection trouble */ }
  }

  onMessage(m) {
    switch (m.type) {
      case 'connected':
        Object.assign(this.state, { connected: true, model: m.model, sessionId: m.session_id, resumed: Boolean(m.resumed) });
        this.cap = m.max_steps ?? 500; $('cap').textContent = this.cap;
        // The session's last episodes, so the survival chart is whole after a reload.
        this.episodes = (m.recent_episodes ?? []).map((e) => ({ episode: e.episode, steps: e.length, reason: e.reason }));
        this.refreshModels();
        if (m.read_only) this.watchMode(m);
        this.applySettings(m);
        this.setPlaying(m.playing);
        if (m.read_only) break;
        if (m.resume_token) sessionStorage.setItem(TOKEN, m.resume_token);
        if (this.fork) this.forked();
        this.watchToken = m.watch_token; $('btn-share').hidden = !m.watch_token;
        // A resumed session is as it was; a new one takes the model and speed the URL names.
        if (m.resumed) this.announceResume = true; else this.applyUrl();
        this.redraw();
        break;
      case 'settings': this.applySettings(m); break;
      case 'session_status': Object.assign(this.state, { speed: m.speed, model: m.model }); this.setPlaying(m.playing); break;
      case 'episode_start': this.trail = []; this.state.episode = m.episode; if (m.model_name) this.state.model = m.model_name; break;
      case 'state_update':
        if (this.announceFork) {
          this.announceFork = false;
          const note = $('resumed-note');
          note.textContent = `Your own copy, from episode ${m.episode}, step ${m.step} — paused. Press ▶ Play or Step →; the session you watched is not touched.`;
          note.hidden = false; this.state.forkedAt = { episode: m.episode, step: m.step };
          clearTimeout(this.resumeTimer); this.resumeTimer = setTimeout(() => { note.hidden = true; }, 10000);
        }
        if (this.announceResume) {
          this.announceResume = false;
          const note = $('resumed-note');
          note.textContent = `Resumed at episode ${m.episode}, step ${m.step}.`; note.hidden = false;
          this.state.resumedAt = { episode: m.episode, step: m.step };
          clearTimeout(this.resumeTimer); this.resumeTimer = setTimeout(() => { note.hidden = true; }, 6000);
        }
        // A watcher learns the owner plays from the frames themselves.
        if (this.state.readOnly && m.step > (this.state.step ?? 0) && m.episode === this.state.episode) this.whatIf.leave();
        this.render(m); break;
      case 'episode_end':
        this.episodes.push({ episode: m.episode, steps: m.steps, reason: m.reason });
        if (this.episodes.length > 100) this.episodes.shift();
        this.state.lastEnd = m.reason;
        $('last-end').textContent = `Episode ${m.episode} ended after ${m.steps} steps: ${
          m.reason === 'meter_depleted' ? `${m.meter ?? 'a meter'} ran out` : m.reason === 'max_steps' ? 'it reached the step cap' : 'you reset it'
        } (total reward ${m.total_reward.toFixed(1)}).`;
        drawSurvival($('survival'), this.episodes, this.cap);
        this.app.toast(`Episode ${m.episode} ended after ${m.steps} steps (${m.reason.replace('_', ' ')}), total reward ${m.total_reward.toFixed(1)}`, 'info');
        break;
      case 'model_loaded': this.state.model = m.model; this.state.noActivations = false; $('model').value = m.model; this.app.toast(`Model ${m.model} loaded`, 'info'); break;
      case 'probe_result': this.whatIf.answer(m); break;
      case 'worker_restarted':
        // Students get plain words; the technical reason is for the Workers view (and kept here).
        this.state.restarts += 1; this.state.lastRestartReason = m.reason;
        this.app.toast(`The agent's process crashed and was restarted; your episode ${m.resumed_episode} continues from step ${m.resumed_step}.`, 'warn');
        break;
      case 'error':
        if (m.code === 'no_activations') {
          this.showInside(false, false);
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
    $('f-episode').textContent = u.episode; $('f-step').textContent = u.step;
    $('f-reward').textContent = Number(u.reward).toFixed(3); $('f-total').textContent = Number(u.cumulative_reward).toFixed(2);
    $('f-action').textContent = u.action == null ? '–' : `${ACTIONS[u.action]}${u.explored ? ' (random)' : ''}`;
    this.state.explored = u.explored ?? null;
    if (this.state.frames > 3) $('start-hint').hidden = true;
    this.whatIf.update();
    if (!this.whatIf.active) this.paint(u); // what-if shows its own answer until it is left
  }

  /// Draws frame `u`: the world, meters, Q-values and (when on) the inside view.
  paint(u) {
    drawWorld($('grid'), u, this.trail.slice(0, -1));
    const meters = u.agent_meters?.agent_0?.meters;
    if (meters) { this.state.meters = meters; renderMeters('m', meters); }
    const q = u.q_values;
    if (q && q.length === 5) renderQBars('q', q, u.action ?? q.indexOf(Math.max(...q)));
    if (u.activations && this.state.inside) {
      this.pendingInside = u;
      if (!this.insideFrame) this.insideFrame = requestAnimationFrame(() => {
        // At most once per animation frame, whatever the speed.
        this.insideFrame = 0; drawInside($('inside-canvas'), this.pendingInside); this.state.insideFrames += 1;
        $('inside-what').textContent = insideCaption(this.pendingInside);
      });
    }
  }
}
