// The training view: the shared run's form, controls, progress, charts and heat map.
import { Socket } from './socket.js';
import { drawLine, drawHeat } from './draw.js';

const $ = (id) => document.getElementById(id);
// name, label, default, min, max, step  (limits as protocol.md and the server enforce them)
const FIELDS = [
  ['num_episodes', 'Episodes', 100, 1, 100000, 1],
  ['batch_size', 'Batch size', 32, 1, 1024, 1],
  ['buffer_capacity', 'Replay buffer', 10000, 100, 1000000, 100],
  ['show_every', 'Show every N episodes', 5, 1, 100000, 1],
  ['step_delay', 'Step delay (s, shown episodes)', 0.2, 0, 5, 0.05],
  ['learning_rate', 'Learning rate', 0.001, 0.000001, 1, 0.0001],
  ['gamma', 'Discount γ', 0.99, 0, 1, 0.01],
  ['epsilon_start', 'ε start', 1.0, 0, 1, 0.01],
  ['epsilon_min', 'ε floor', 0.05, 0, 1, 0.01],
  ['epsilon_decay', 'ε decay per episode', 0.995, 0.5, 1, 0.001],
  ['target_update', 'Target copy every N episodes', 10, 1, 100000, 1],
  ['max_steps', 'Step cap per episode', 500, 1, 100000, 1],
  ['checkpoint_every', 'Checkpoint every N episodes', 5, 1, 100000, 1],
];

export class TrainingView {
  constructor(app) {
    this.app = app;
    this.state = { connected: false, isTraining: false, paused: false, current: 0, total: 0, episodes: 0, lastModel: null, restarts: 0 };
    this.series = { ep: [], reward: [], length: [], loss: [], eps: [] };
    this.affordances = null;
    this.socket = new Socket('/ws/training', {
      onMessage: (m) => this.onMessage(m),
      onState: (s, code, reason) => this.app.setConn('training', s, code, reason),
    });
    window.hamlet.training = this.state;
    this.buildForm(); this.bind(); this.draw();
  }

  start() { if (!this.started) { this.started = true; this.socket.connect(); } }

  buildForm() {
    const grid = $('train-fields');
    const inputs = FIELDS.map(([name, label, def, min, max, step]) => {
      const l = document.createElement('label'); l.textContent = `${label} (${min}–${max})`;
      // Integer fields step by 1; real-valued ones accept any value in range (the server validates).
      const i = document.createElement('input'); Object.assign(i, { type: 'number', name, id: `t-${name}`, value: def, min, max, step: Number.isInteger(step) ? step : 'any', required: true });
      l.append(i); return l;
    });
    const net = document.createElement('label'); net.textContent = 'Network';
    net.innerHTML += '<select id="t-network" name="network"><option value="qnetwork">qnetwork (72→128→128→5)</option><option value="dueling">dueling (V + A − mean A)</option></select>';
    const seed = document.createElement('label'); seed.textContent = 'Seed (blank: random)';
    seed.innerHTML += '<input id="t-seed" name="seed" type="number" min="0" step="1">';
    const name = document.createElement('label'); name.textContent = 'Model name (blank: automatic)';
    name.innerHTML += '<input id="t-model_name" name="model_name" type="text" pattern="[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}">';
    grid.replaceChildren(net, ...inputs, seed, name);
  }

  bind() {
    $('train-form').onsubmit = (e) => {
      e.preventDefault();
      const msg = { command: 'start_training', network: $('t-network').value };
      for (const [name] of FIELDS) msg[name] = Number($(`t-${name}`).value);
      if ($('t-seed').value !== '') msg.seed = Number($('t-seed').value);
      if ($('t-model_name').value) msg.model_name = $('t-model_name').value;
      this.socket.send(msg);
    };
    $('btn-tpause').onclick = () => this.socket.send({ command: 'pause' });
    $('btn-tresume').onclick = () => this.socket.send({ command: 'resume' });
    $('btn-tstop').onclick = () => this.socket.send({ command: 'stop' });
  }

  progress() {
    const s = this.state;
    $('t-bar').style.width = s.total ? `${(100 * s.current / s.total).toFixed(1)}%` : '0';
    $('t-progress').textContent = s.isTraining
      ? `Episode ${s.current} of ${s.total}${s.paused ? ' — paused' : ''}`
      : s.lastModel ? `Finished: saved ${s.lastModel} (episode ${s.current}). Load it in “Watch an agent”.` : s.current ? `Run ended at episode ${s.current}.` : 'No run in progress. Start one below — everyone watching will see it.';
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
    drawLine($('c-reward'), S.ep, S.reward, { color: '#1d4ed8', label: 'reward' });
    drawLine($('c-length'), S.ep, S.length, { color: '#15803d', label: 'steps' });
    drawLine($('c-loss'), S.ep, S.loss, { color: '#b45309', label: 'loss' });
    drawLine($('c-eps'), S.ep, S.eps, { color: '#6d28d9', label: 'ε', avg: 1 });
  }

  onMessage(m) {
    const s = this.state;
    switch (m.type) {
      case 'training_status':
        Object.assign(s, { connected: true, isTraining: m.is_training, paused: m.paused, current: m.current_episode, total: m.total_episodes });
        if (m.last_episode && !this.series.ep.length) { this.addEpisode(m.last_episode); this.draw(); }
        this.app.markTraining(m.is_training);
        break;
      case 'training_started':
        Object.assign(s, { isTraining: true, paused: false, current: 0, total: m.num_episodes, lastModel: null });
        for (const k of Object.keys(this.series)) this.series[k] = [];
        this.draw(); this.app.markTraining(true);
        break;
      case 'episode_complete': s.current = m.episode; this.addEpisode(m); this.draw(); break;
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
        s.restarts += 1;
        this.app.toast(`The training process was restarted (${m.reason}); the run continues from episode ${m.resumed_from_episode}.`, 'warn');
        break;
      case 'error': this.app.toast(`Training: ${m.message}`, 'error'); break;
    }
    this.progress();
  }
}
