// The training view: the shared run as a class watches it — its progress and controls, the agent
// while it learns (with its meters and Q-values), how well it plays in test episodes (the
// headline), why episodes end, and the training curves; the form to start a run.
import { Socket } from './socket.js';
import { ACTIONS, drawHeat, drawWorld } from './draw.js';
import { drawEndings, drawLine, fitCanvas, theme } from './charts.js';
import { buildMeters, renderMeters } from './meters.js';
import { buildQBars, renderQBars } from './qbars.js';
import { TrainForm } from './trainform.js';
import { TimeMachine } from './timemachine.js';
import { adminToken, controlToken, setControlToken } from './auth.js';

const $ = (id) => document.getElementById(id);
const ENDING_OF = { energy: 'energy', hygiene: 'hygiene', satiation: 'satiation' };

export class TrainingView {
  constructor(app) {
    this.app = app;
    // current: the episode being run (as the server counts it); done: episodes completed.
    this.state = { connected: false, isTraining: false, paused: false, current: 0, done: 0, total: 0, episodes: 0,
                   lastModel: null, restarts: 0, shownFrames: 0, evaluations: 0, operator: false };
    this.reset();
    this.previous = null; // the run before, a faint line for comparison
    this.reference = null; // { random: {steps, reward}, max_steps }
    this.smooth = 0.6;
    // A group's own room (rooms.md): the page's ?room=NAME, passed on to the server as it is
    // (the server checks the name); without it, the class's shared run.
    this.room = new URLSearchParams(location.search).get('room');
    const inRoom = this.room ? `?room=${encodeURIComponent(this.room)}` : '';
    this.historyUrl = `/api/training/history${inRoom}`;
    window.hamlet.room = this.room || 'class';
    const title = document.getElementById('t-room');
    if (title && this.room) title.textContent = `— room “${this.room}”`;
    this.socket = new Socket(`/ws/training${inRoom}`, {
      onMessage: (m) => this.onMessage(m),
      onState: (s, code, reason) => this.app.setConn('training', s, code, reason),
      // Every (re)connection says who this browser is: the admin token, if it holds one.
      onOpen: () => this.send({ command: 'status' }),
    });
    window.hamlet.training = this.state;
    this.form = new TrainForm((msg) => this.send(msg));
    this.timeMachine = new TimeMachine(this.room || 'class');
    this.form.load();
    buildMeters($('t-meters'), 'tm'); buildQBars($('t-qvalues'), 'tq');
    this.bind();
    const fit = () => {
      for (const c of document.querySelectorAll('#view-training canvas')) fitCanvas(c);
      this.draw(); this.drawShown();
    };
    for (const c of document.querySelectorAll('#view-training canvas')) new ResizeObserver(fit).observe(c);
    window.addEventListener('hamlet-theme', fit); window.addEventListener('resize', fit);
    window.addEventListener('hamlet-admin', () => this.send({ command: 'status' }));
  }

  /// A new run's figures start empty.
  reset() {
    this.series = { ep: [], reward: [], length: [], loss: [], eps: [] };
    this.evals = { ep: [], steps: [], ret: [] };
    this.endings = []; // windows { from, to, energy, hygiene, satiation, max_steps }
    this.lastShown = null;
  }

  start() { if (!this.started) { this.started = true; this.socket.connect(); } }

  /// Every message carries the admin token when this browser holds one (a browser cannot send
  /// headers on a WebSocket), and run control carries the run's control token.
  send(msg) {
    const admin = adminToken(), control = controlToken();
    if (admin) msg.admin_token = admin;
    if (control && ['pause', 'resume', 'stop'].includes(msg.command)) msg.control_token = control;
    this.socket.send(msg);
  }

  bind() {
    $('btn-tpause').onclick = () => this.send({ command: 'pause' });
    $('btn-tresume').onclick = () => this.send({ command: 'resume' });
    $('btn-tstop').onclick = () => this.send({ command: 'stop' });
    $('btn-ttake').onclick = () => this.send({ command: 'take_control' });
    $('smoothing').oninput = (e) => { this.smooth = Number(e.target.value); $('smoothing-out').textContent = this.smooth.toFixed(2); this.draw(); };
  }

  progress() {
    const s = this.state;
    this.showControls();
    $('t-bar').style.width = s.total ? `${(100 * s.done / s.total).toFixed(1)}%` : '0';
    const best = s.best ? ` · best test so far: survives ${s.best.steps} steps, return ${Math.round(s.best.return)}` : '';
    $('t-progress').textContent = s.isTraining
      ? `Episode ${s.current} of ${s.total}${s.paused ? ' — paused' : ''}${best}`
      : s.lastModel ? `Finished: saved ${s.lastModel}${s.lastBest ? ` (survives ${s.lastBest.steps} steps, return ${Math.round(s.lastBest.return)})` : ''} after ${s.done} episodes. Try it in “Watch an agent”.`
      : s.done ? `Run ended after ${s.done} episodes.` : 'No run in progress. Pick a preset and press Start training — everyone watching will see it.';
    $('btn-train').disabled = s.isTraining;
  }

  /// Controls for whoever may use them; a note for everyone else. Teachers may take over.
  showControls() {
    const s = this.state, may = s.canControl || Boolean(controlToken()) || s.operator;
    for (const id of ['btn-tpause', 'btn-tresume', 'btn-tstop']) $(id).hidden = !may || !s.isTraining;
    $('btn-ttake').hidden = !(s.operator && s.isTraining && !s.canControl);
    $('t-control').hidden = may || !s.isTraining;
  }

  addEpisode(e) {
    const S = this.series;
    if (S.ep.length && e.episode <= S.ep[S.ep.length - 1]) { // a resumed run re-numbers: keep the chart monotonic
      const keep = S.ep.findIndex((x) => x >= e.episode);
      for (const k of Object.keys(S)) S[k].length = keep;
    }
    S.ep.push(e.episode); S.reward.push(e.reward); S.length.push(e.length); S.loss.push(e.loss); S.eps.push(e.epsilon);
    this.state.episodes = S.ep.length;
    const kind = e.reason === 'max_steps' ? 'max_steps' : ENDING_OF[e.meter];
    if (kind) {
      // Windows of about a 60th of the run, so the chart has ~60 bars whatever its length.
      const size = Math.max(1, Math.ceil((this.state.total || 100) / 60));
      let w = this.endings[this.endings.length - 1];
      if (!w || w.to - w.from + 1 >= size || e.episode <= w.to) { w = { from: e.episode, to: e.episode, energy: 0, hygiene: 0, satiation: 0, max_steps: 0 }; this.endings.push(w); }
      w.to = e.episode; w[kind] += 1;
    }
  }

  addEvaluation(e) {
    const E = this.evals;
    if (E.ep.length && e.episode <= E.ep[E.ep.length - 1]) {
      const keep = E.ep.findIndex((x) => x >= e.episode);
      for (const k of Object.keys(E)) E[k].length = keep;
    }
    E.ep.push(e.episode); E.steps.push(e.steps); E.ret.push(e.return ?? e.reward);
    this.state.evaluations = E.ep.length;
  }

  draw() {
    const t = theme(), S = this.series, E = this.evals, P = this.previous, R = this.reference, smooth = this.smooth;
    const cap = this.config?.max_steps ?? R?.max_steps ?? 500, rnd = R?.random;
    const prev = (xs, ys) => (P && xs?.length ? [{ xs, ys, faint: true, smooth }] : []);
    drawLine($('c-eval-steps'), {
      title: 'Survival in test episodes', fixed: [0, cap * 1.04],
      series: [...prev(P?.evals?.ep, P?.evals?.steps), { xs: E.ep, ys: E.steps, color: t.ok, label: 'survives (steps)' }],
      refs: [{ value: cap, label: `step cap ${cap}` }, ...(rnd ? [{ value: rnd.steps, label: `random agent ${Math.round(rnd.steps)}` }] : [])],
      empty: 'will appear after the first test episode',
    });
    drawLine($('c-eval-return'), {
      title: 'Return of test episodes',
      series: [...prev(P?.evals?.ep, P?.evals?.ret), { xs: E.ep, ys: E.ret, color: t.accent, label: 'return' }],
      refs: [{ value: 1000, label: 'competent: 1000' }, ...(rnd ? [{ value: rnd.reward, label: `random agent ${Math.round(rnd.reward)}` }] : [])],
      empty: 'will appear after the first test episode',
    });
    drawEndings($('c-endings'), this.endings);
    drawLine($('c-reward'), {
      title: 'Reward per training episode',
      series: [...prev(P?.ep, P?.reward), { xs: S.ep, ys: S.reward, color: t.accent, label: 'reward', smooth }],
      refs: rnd ? [{ value: rnd.reward, label: `random agent ${Math.round(rnd.reward)}` }] : [],
    });
    drawLine($('c-length'), {
      title: 'Length of training episodes',
      series: [...prev(P?.ep, P?.length), { xs: S.ep, ys: S.length, color: t.ok, label: 'steps', smooth }],
      refs: [{ value: cap, label: `step cap ${cap}` }, ...(rnd ? [{ value: rnd.steps, label: `random agent ${Math.round(rnd.steps)}` }] : [])],
      fixed: [0, cap * 1.04],
    });
    drawLine($('c-loss'), { title: 'Loss', series: [{ xs: S.ep, ys: S.loss, color: t.mid, label: 'loss', smooth }] });
    drawLine($('c-eps'), { title: 'Exploration ε', series: [{ xs: S.ep, ys: S.eps, color: t.warn, label: 'ε' }], fixed: [0, 1.02] });
    this.story();
  }

  /// The curves in words: what the class should notice right now.
  story() {
    const w = this.endings.filter((x) => x.to - x.from >= 0), E = this.evals;
    if (w.length < 2) { $('t-story').textContent = ''; return; }
    const share = (x, k) => x[k] / Math.max(1, x.energy + x.hygiene + x.satiation + x.max_steps);
    const last = w[w.length - 1];
    const worst = ['energy', 'hygiene', 'satiation'].sort((a, b) => share(last, b) - share(last, a))[0];
    const cap = Math.round(100 * share(last, 'max_steps'));
    let text = `Lately ${cap}% of training episodes reach the step cap`;
    text += cap < 100 ? `; when the agent dies, it is mostly because ${worst} ran out.` : '.';
    const S = this.series, n = S.reward.length;
    if (n >= 40) {
      const mean = (a) => a.reduce((s, v) => s + v, 0) / Math.max(1, a.length);
      const dr = mean(S.reward.slice(-20)) - mean(S.reward.slice(-40, -20)), dl = mean(S.length.slice(-20)) - mean(S.length.slice(-40, -20));
      if (dr > 0 && dl < 0) text += ' Reward is rising while episodes get shorter: the agent earns more per step (work, the bar) and lets a meter run down.';
    }
    if (E.steps.length && E.steps[E.steps.length - 1] >= (this.config?.max_steps ?? this.reference?.max_steps ?? 500)) text += ' Its last test episode survived to the cap.';
    $('t-story').textContent = text;
  }

  /// The whole run so far (and the one before), so a late joiner or a reloaded page draws the
  /// full curve at once.
  async loadHistory() {
    try {
      const h = await (await fetch(this.historyUrl)).json();
      const rows = (r) => ({ ep: r.map((x) => x.episode), reward: r.map((x) => x.reward), length: r.map((x) => x.length),
                             loss: r.map((x) => x.loss), eps: r.map((x) => x.epsilon) });
      const evals = (r) => ({ ep: r.map((x) => x.episode), steps: r.map((x) => x.steps), ret: r.map((x) => x.reward) });
      this.reference = h.reference; this.config = h.config;
      this.previous = h.previous?.episodes?.length ? { ...rows(h.previous.episodes), evals: evals(h.previous.evaluations ?? []) } : null;
      const known = this.series.ep.length ? this.series.ep[0] : Infinity;
      // Frames that arrived while fetching are kept; the history fills in what came before.
      const hs = rows(h.episodes.filter((r) => r.episode < known));
      for (const k of Object.keys(this.series)) this.series[k] = [...hs[k], ...this.series[k]];
      const knownEval = this.evals.ep.length ? this.evals.ep[0] : Infinity;
      const he = evals((h.evaluations ?? []).filter((r) => r.episode < knownEval));
      for (const k of Object.keys(this.evals)) this.evals[k] = [...he[k], ...this.evals[k]];
      const firstLive = this.endings.length ? this.endings[0].from : Infinity;
      this.endings = [...(h.endings ?? []).filter((w) => w.to < firstLive), ...this.endings];
      this.state.historyRows = this.series.ep.length; this.state.evaluations = this.evals.ep.length;
      this.draw();
    } catch (e) { /* the charts fill from live frames */ }
  }

  /// The latest episode in words, with the 5-episode averages.
  showLast(e) {
    $('t-last').textContent = `Episode ${e.episode}: reward ${e.reward.toFixed(1)}, ${e.length} steps, ε ${e.epsilon.toFixed(3)} · last 5 episodes on average: reward ${e.avg_reward_5.toFixed(1)}, ${e.avg_length_5.toFixed(0)} steps`;
  }

  /// The shown episode's frame: the world, its meters, the Q-values it acted on.
  shown(m) {
    const s = this.state;
    this.lastShown = m;
    if (m.heat_map) drawHeat($('heat'), m.heat_map, m.grid?.affordances ?? m.affordances);
    this.drawShown();
    s.shownFrames += 1; s.shownEpisode = m.episode; s.explored = m.explored ?? null;
    const meters = m.agent_meters?.agent_0?.meters;
    if (meters) renderMeters('tm', meters);
    if (m.q_values?.length === 5) renderQBars('tq', m.q_values, m.action);
    $('t-explore').textContent = m.action == null ? '' : m.explored
      ? `It explored: ${ACTIONS[m.action]} was a random move (ε ${this.epsilon?.toFixed(2) ?? '–'}), not its best.`
      : `It exploited: ${ACTIONS[m.action]} has its highest Q-value.`;
    const replay = m.replay ? ` · a recording, replayed — training is at episode ${m.live_episode ?? s.current}` : '';
    $('t-now').textContent = `(episode ${m.episode}, step ${m.step}${replay})`;
  }

  drawShown() { drawWorld($('t-grid'), this.lastShown, []); }

  onMessage(m) {
    const s = this.state;
    switch (m.type) {
      case 'training_status': {
        const done = m.last_episode?.episode ?? 0;
        Object.assign(s, { connected: true, isTraining: m.is_training, paused: m.paused, current: m.current_episode, done,
                           total: m.total_episodes, canControl: Boolean(m.can_control), operator: Boolean(m.operator), best: m.best ?? s.best });
        if (m.config) this.config = m.config;
        if (!this.historyLoaded) { this.historyLoaded = true; this.loadHistory(); }
        // A late joiner sees where the run is at once: the latest episode and its averages.
        if (m.last_episode) { this.showLast(m.last_episode); if (!this.series.ep.length) { this.addEpisode(m.last_episode); this.draw(); } }
        this.app.markTraining(m.is_training);
        break;
      }
      case 'queued':
        // Every training slot of the server is busy: the run starts when one frees.
        s.queued = m.position;
        $('t-last').textContent = `Waiting for a free training slot: place ${m.position} in the queue. The run starts by itself.`;
        break;
      case 'training_started':
        s.queued = null;
        if (m.control_token) { setControlToken(m.control_token); s.canControl = true; } else s.canControl = s.operator;
        if (this.series.ep.length) this.previous = { ...this.series, evals: { ...this.evals } };
        Object.assign(s, { isTraining: true, paused: false, current: 1, done: 0, total: m.num_episodes, lastModel: null, best: null, lastBest: null });
        this.config = m.config;
        $('t-last').textContent = '';
        this.reset(); this.draw(); this.app.markTraining(true);
        break;
      case 'control_granted': setControlToken(m.control_token); s.canControl = true; this.app.toast('You control this run now.', 'info'); break;
      case 'episode_complete':
        s.done = m.episode; s.current = Math.min(m.episode + 1, Math.max(s.total, m.episode));
        this.addEpisode(m); this.showLast(m); this.draw();
        break;
      case 'evaluation':
        s.best = m.best; this.addEvaluation(m); this.draw();
        if (m.competent) this.app.toast(`Episode ${m.episode}: the agent survived all ${m.steps} steps with a return of ${Math.round(m.return)} — it has learned.`, 'info');
        break;
      case 'state_update': this.shown(m); break;
      case 'episode_start': this.epsilon = m.epsilon; break;
      case 'paused': s.paused = true; break;
      case 'resumed': s.paused = false; break;
      case 'training_complete':
        Object.assign(s, { isTraining: false, paused: false, lastModel: m.model_saved, lastBest: m.best ?? null, competent: Boolean(m.competent) });
        this.app.markTraining(false); this.app.modelsChanged();
        this.app.toast(`Training finished: ${m.model_saved} saved${m.best ? ` — in its best test it survived ${m.best.steps} steps with a return of ${Math.round(m.best.return)}` : ''}.`, 'info');
        break;
      case 'training_restarted':
        s.restarts += 1; s.lastRestartReason = m.reason;
        this.app.toast(`The training process was restarted; the run continues after episode ${m.resumed_from_episode}.`, 'warn');
        break;
      case 'error':
        if (m.code === 'not_run_owner') { setControlToken(null); s.canControl = false; }
        this.app.toast(`Training: ${m.message}`, 'error');
        break;
    }
    this.progress();
  }
}
