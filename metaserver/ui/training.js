// The training view: the shared run's form, controls, progress, charts and heat map.
import { Socket } from './socket.js';
import { drawLine, drawHeat, drawWorld } from './draw.js';

const $ = (id) => document.getElementById(id);
export class TrainingView {
  constructor(app) {
    this.app = app;
    // current: the episode being run (as the server counts it); done: episodes completed.
    this.state = { connected: false, isTraining: false, paused: false, current: 0, done: 0, total: 0, episodes: 0, lastModel: null, restarts: 0 };
    this.series = { ep: [], reward: [], length: [], loss: [], eps: [] };
    this.previous = null; // the run before, a faint line for comparison
    this.reference = null; // { random: {steps, reward}, max_steps }
    this.smooth = 0.6;
    this.affordances = null;
    this.socket = new Socket('/ws/training', {
      onMessage: (m) => this.onMessage(m),
      onState: (s, code, reason) => this.app.setConn('training', s, code, reason),
    });
    window.hamlet.training = this.state;
    this.state.shownFrames = 0;
    this.buildForm(); this.bind(); this.draw();
    const fit = () => {
      for (const c of document.querySelectorAll('#view-training canvas.chart')) {
        const r = c.getBoundingClientRect(); if (!r.width) continue;
        const w = Math.round(r.width), h = Math.round(r.height);
        if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
      }
      this.draw();
    };
    new ResizeObserver(fit).observe($('c-reward'));
    window.addEventListener('hamlet-theme', fit);
  }

  start() { if (!this.started) { this.started = true; this.socket.connect(); } }

  // The form is built from the server's one table of start_training fields (GET
  // /api/training/config): names, defaults, limits and help all come from there.
  async buildForm() {
    const grid = $('train-fields');
    let fields;
    try {
      this.config = await (await fetch('/api/training/config')).json();
      fields = this.config.fields;
    } catch (e) {
      grid.textContent = `Could not load the training settings (${e}); reload the page.`;
      return;
    }
    this.fields = fields;
    grid.replaceChildren(...fields.map((f) => this.fieldInput(f)));
    this.buildPresets(this.config);
    window.hamlet.trainingForm = fields.length;
  }

  /// Lesson presets, each with its expected duration on this server: computed from the training
  /// speed measured by earlier runs here (none yet: it says so) and the last run's mean episode
  /// length (or the random policy's, measured at start).
  buildPresets(cfg) {
    const pace = cfg.pace ?? {}, len = pace.mean_episode_length ?? cfg.random_policy_steps ?? 100;
    const merged = (p) => ({ ...cfg.defaults, ...p.config });
    // A speed is measured with one network; a dueling update costs several times a qnetwork's.
    const rateFor = (c) => (pace.network === c.network ? pace.env_steps_per_sec : null);
    // Shown episodes are replayed beside the run, so pacing does not lengthen it.
    const seconds = (c) => c.num_episodes * len / rateFor(c);
    const minutes = (s) => (s < 90 ? `${Math.round(s)} s` : `${(s / 60).toFixed(1)} min`);
    const buttons = cfg.presets.map((p, i) => {
      const b = document.createElement('button'); b.type = 'button'; b.id = `preset-${p.name}`;
      const c = merged(p), rate = rateFor(c);
      const how = rate ? `about ${minutes(seconds(c))} on this server (measured ${Math.round(rate)} steps/s)` : `duration: measured after the first ${c.network} run on this server`;
      b.innerHTML = `<strong></strong><small></small>`;
      b.querySelector('strong').textContent = `${p.label} — ${how}`;
      b.querySelector('small').textContent = p.description;
      b.onclick = () => this.applyPreset(p, cfg);
      b.setAttribute('aria-pressed', String(i === 0));
      return b;
    });
    $('presets').replaceChildren(...buttons);
    if (cfg.presets.length) this.applyPreset(cfg.presets[0], cfg); // the demo is the default
  }

  applyPreset(p, cfg) {
    for (const f of this.fields) {
      const v = p.config[f.name] ?? cfg.defaults[f.name];
      if (v !== undefined && v !== null && f.kind !== 'text' && f.name !== 'seed') $(`t-${f.name}`).value = v;
    }
    for (const b of $('presets').children) b.setAttribute('aria-pressed', String(b.id === `preset-${p.name}`));
    window.hamlet.training.preset = p.name;
  }

  fieldInput(f) {
    const l = document.createElement('label');
    const range = f.min !== undefined && f.max !== undefined ? ` (${f.min}–${f.max})` : '';
    l.textContent = `${f.label}${range}`;
    l.title = f.help;
    let i;
    if (f.kind === 'choice') {
      i = document.createElement('select');
      for (const c of f.choices) i.append(new Option(c, c, c === f.default, c === f.default));
    } else {
      i = document.createElement('input');
      if (f.kind === 'text') Object.assign(i, { type: 'text', pattern: '[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}' });
      // Integer fields step by 1; real-valued ones accept any value in range (the server validates).
      else Object.assign(i, { type: 'number', step: f.kind === 'integer' ? 1 : 'any' });
      if (f.min !== undefined) i.min = f.min;
      if (f.max !== undefined) i.max = f.max;
      if (f.default !== null) { i.value = f.default; i.required = true; } else i.placeholder = 'blank: automatic';
    }
    Object.assign(i, { id: `t-${f.name}`, name: f.name });
    l.append(i);
    return l;
  }

  bind() {
    $('train-form').onsubmit = (e) => {
      e.preventDefault();
      const msg = { command: 'start_training' };
      for (const f of this.fields || []) {
        const v = $(`t-${f.name}`).value;
        if (v === '') continue; // blank: the server's default
        msg[f.name] = f.kind === 'integer' || f.kind === 'number' ? Number(v) : v;
      }
      this.socket.send(msg);
    };
    // The run's control token (given to the starter) is kept per tab, so a reload keeps control.
    const ctl = (command) => this.socket.send({ command, control_token: sessionStorage.getItem('hamlet-control-token') ?? undefined });
    $('btn-tpause').onclick = () => ctl('pause');
    $('btn-tresume').onclick = () => ctl('resume');
    $('btn-tstop').onclick = () => ctl('stop');
    $('smoothing').oninput = (e) => { this.smooth = Number(e.target.value); $('smoothing-out').textContent = this.smooth.toFixed(2); this.draw(); };
  }

  progress() {
    const s = this.state;
    this.showControls();
    $('t-bar').style.width = s.total ? `${(100 * s.done / s.total).toFixed(1)}%` : '0';
    $('t-progress').textContent = s.isTraining
      ? `Episode ${s.current} of ${s.total}${s.paused ? ' — paused' : ''}`
      : s.lastModel ? `Finished: saved ${s.lastModel} after ${s.done} episodes. Load it in “Watch an agent”.` : s.done ? `Run ended after ${s.done} episodes.` : 'No run in progress. Start one below — everyone watching will see it.';
    $('btn-train').disabled = s.isTraining;
  }

  addEpisode(e) {
    const S = this.series;
    if (S.ep.length && e.episode <= S.ep[S.ep.length - 1]) { // a restarted run re-numbers: keep the chart monotonic
      const keep = S.ep.findIndex((x) => x >= e.episode);
      for (const k of Object.keys(S)) S[k].length = keep;
    }
    S.ep.push(e.episode); S.reward.push(e.reward); S.length.push(e.length); S.loss.push(e.loss); S.eps.push(e.epsilon);
    this.state.episodes = S.ep.length;
  }

  draw() {
    const S = this.series;
    const v = (k) => getComputedStyle(document.documentElement).getPropertyValue(k).trim();
    const P = this.previous, R = this.reference, smooth = this.smooth;
    const overlay = (k) => (P ? { xs: P.ep, ys: P[k] } : undefined);
    const rnd = R?.random;
    drawLine($('c-reward'), S.ep, S.reward, { color: v('--accent'), label: 'Reward', smooth, overlay: overlay('reward'),
      refs: rnd ? [{ value: rnd.reward, label: `random policy ${rnd.reward.toFixed(0)}` }] : [] });
    drawLine($('c-length'), S.ep, S.length, { color: v('--ok'), label: 'Length (steps)', smooth, overlay: overlay('length'),
      refs: R ? [{ value: R.max_steps, label: `cap ${R.max_steps}` }, ...(rnd ? [{ value: rnd.steps, label: `random policy ${rnd.steps.toFixed(0)}` }] : [])] : [] });
    drawLine($('c-loss'), S.ep, S.loss, { color: v('--mid'), label: 'Loss', smooth, overlay: overlay('loss') });
    drawLine($('c-eps'), S.ep, S.eps, { color: v('--warn'), label: 'ε', avg: 1 });
  }

  /// The whole run so far (and the one before), so a late joiner or a reloaded page draws the
  /// full curve at once.
  async loadHistory() {
    try {
      const h = await (await fetch('/api/training/history')).json();
      const series = (rows) => ({
        ep: rows.map((r) => r.episode), reward: rows.map((r) => r.reward), length: rows.map((r) => r.length),
        loss: rows.map((r) => r.loss), eps: rows.map((r) => r.epsilon),
      });
      this.reference = h.reference;
      this.previous = h.previous?.episodes?.length ? series(h.previous.episodes) : null;
      const known = this.series.ep.length ? this.series.ep[0] : Infinity;
      // Frames that arrived while fetching are kept; the history fills in what came before.
      const before = h.episodes.filter((r) => r.episode < known);
      const hs = series(before);
      for (const k of Object.keys(this.series)) this.series[k] = [...hs[k], ...this.series[k]];
      this.state.historyRows = this.series.ep.length;
      this.draw();
    } catch (e) { /* the charts fill from live frames */ }
  }

  /// Controls for whoever may use them; a note for everyone else.
  showControls() {
    const may = this.state.canControl || Boolean(sessionStorage.getItem('hamlet-control-token'));
    for (const id of ['btn-tpause', 'btn-tresume', 'btn-tstop']) $(id).hidden = !may;
    $('t-control').hidden = may || !this.state.isTraining;
  }

  /// The latest episode in words, with the 5-episode averages.
  showLast(e) {
    $('t-last').textContent = `Episode ${e.episode}: reward ${e.reward.toFixed(1)}, ${e.length} steps, ε ${e.epsilon.toFixed(3)} · last 5 episodes on average: reward ${e.avg_reward_5.toFixed(1)}, ${e.avg_length_5.toFixed(0)} steps, loss ${e.avg_loss_5.toFixed(3)}`;
  }

  onMessage(m) {
    const s = this.state;
    switch (m.type) {
      case 'training_status': {
        const done = m.last_episode?.episode ?? 0;
        Object.assign(s, { connected: true, isTraining: m.is_training, paused: m.paused, current: m.current_episode, done, total: m.total_episodes, canControl: Boolean(m.can_control) });
        if (!this.historyLoaded) { this.historyLoaded = true; this.loadHistory(); }
        // A late joiner sees where the run is at once: the latest episode and its averages.
        if (m.last_episode) { this.showLast(m.last_episode); if (!this.series.ep.length) { this.addEpisode(m.last_episode); this.draw(); } }
        this.app.markTraining(m.is_training);
        break;
      }
      case 'training_started':
        if (m.control_token) { sessionStorage.setItem('hamlet-control-token', m.control_token); s.canControl = true; }
        else s.canControl = false;
        if (this.series.ep.length) this.previous = { ...this.series };
        Object.assign(s, { isTraining: true, paused: false, current: 1, done: 0, total: m.num_episodes, lastModel: null });
        $('t-last').textContent = '';
        for (const k of Object.keys(this.series)) this.series[k] = [];
        this.draw(); this.app.markTraining(true);
        break;
      case 'episode_complete':
        s.done = m.episode; s.current = Math.min(m.episode + 1, Math.max(s.total, m.episode));
        this.addEpisode(m); this.showLast(m); this.draw();
        break;
      case 'state_update': {
        this.affordances = m.grid?.affordances ?? m.affordances;
        if (m.heat_map) drawHeat($('heat'), m.heat_map, this.affordances);
        // Watch it learn: the shown episode's world, step by step, and how it chose.
        drawWorld($('t-grid'), m, []);
        s.shownFrames += 1; s.shownEpisode = m.episode; s.explored = m.explored ?? null;
        // Paced episodes are replays of a recorded training episode while the run goes on ahead.
        const behind = s.done >= m.episode ? `, replayed at a watchable pace — training is at episode ${s.current}` : '';
        $('t-now').textContent = `(episode ${m.episode}, step ${m.step}, ε ${this.epsilon?.toFixed(3) ?? '–'}: ${m.explored ? 'explored (random action)' : 'exploited (best Q-value)'}${behind})`;
        break;
      }
      case 'episode_start': this.epsilon = m.epsilon; break;
      case 'paused': s.paused = true; break;
      case 'resumed': s.paused = false; break;
      case 'training_complete':
        Object.assign(s, { isTraining: false, paused: false, lastModel: m.model_saved });
        this.app.markTraining(false); this.app.modelsChanged();
        this.app.toast(`Training finished: model ${m.model_saved} saved (last 10 episodes: ${m.final_avg_length.toFixed(0)} steps on average).`, 'info');
        break;
      case 'training_restarted':
        s.restarts += 1; s.lastRestartReason = m.reason;
        this.app.toast(`The training process was restarted; the run continues after episode ${m.resumed_from_episode}.`, 'warn');
        break;
      case 'error':
        if (m.code === 'not_run_owner') { sessionStorage.removeItem('hamlet-control-token'); s.canControl = false; }
        this.app.toast(`Training: ${m.message}`, 'error');
        break;
    }
    this.progress();
  }
}
