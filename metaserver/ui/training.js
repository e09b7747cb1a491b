// The training view: the shared run's form, controls, progress, charts and heat map.
import { Socket } from './socket.js';
import { drawLine, drawHeat } from './draw.js';

const $ = (id) => document.getElementById(id);
export class TrainingView {
  constructor(app) {
    this.app = app;
    // current: the episode being run (as the server counts it); done: episodes completed.
    this.state = { connected: false, isTraining: false, paused: false, current: 0, done: 0, total: 0, episodes: 0, lastModel: null, restarts: 0 };
    this.series = { ep: [], reward: [], length: [], loss: [], eps: [] };
    this.affordances = null;
    this.socket = new Socket('/ws/training', {
      onMessage: (m) => this.onMessage(m),
      onState: (s, code, reason) => this.app.setConn('training', s, code, reason),
    });
    window.hamlet.training = this.state;
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
      fields = (await (await fetch('/api/training/config')).json()).fields;
    } catch (e) {
      grid.textContent = `Could not load the training settings (${e}); reload the page.`;
      return;
    }
    this.fields = fields;
    grid.replaceChildren(...fields.map((f) => this.fieldInput(f)));
    window.hamlet.trainingForm = fields.length;
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
    $('btn-tpause').onclick = () => this.socket.send({ command: 'pause' });
    $('btn-tresume').onclick = () => this.socket.send({ command: 'resume' });
    $('btn-tstop').onclick = () => this.socket.send({ command: 'stop' });
  }

  progress() {
    const s = this.state;
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
    drawLine($('c-reward'), S.ep, S.reward, { color: v('--accent'), label: 'Reward' });
    drawLine($('c-length'), S.ep, S.length, { color: v('--ok'), label: 'Length (steps)' });
    drawLine($('c-loss'), S.ep, S.loss, { color: v('--mid'), label: 'Loss' });
    drawLine($('c-eps'), S.ep, S.eps, { color: v('--warn'), label: 'ε', avg: 1 });
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
        Object.assign(s, { connected: true, isTraining: m.is_training, paused: m.paused, current: m.current_episode, done, total: m.total_episodes });
        // A late joiner sees where the run is at once: the latest episode and its averages.
        if (m.last_episode) { this.showLast(m.last_episode); if (!this.series.ep.length) { this.addEpisode(m.last_episode); this.draw(); } }
        this.app.markTraining(m.is_training);
        break;
      }
      case 'training_started':
        Object.assign(s, { isTraining: true, paused: false, current: 1, done: 0, total: m.num_episodes, lastModel: null });
        $('t-last').textContent = '';
        for (const k of Object.keys(this.series)) this.series[k] = [];
        this.draw(); this.app.markTraining(true);
        break;
      case 'episode_complete':
        s.done = m.episode; s.current = Math.min(m.episode + 1, Math.max(s.total, m.episode));
        this.addEpisode(m); this.showLast(m); this.draw();
        break;
      case 'state_update':
        this.affordances = m.grid?.affordances ?? m.affordances;
        if (m.heat_map) drawHeat($('heat'), m.heat_map, this.affordances);
        break;
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
      case 'error': this.app.toast(`Training: ${m.message}`, 'error'); break;
    }
    this.progress();
  }
}
