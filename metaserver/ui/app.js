// Hamlet UI: tabs, connection status, notices, keyboard. Modes come from GET /api/status.
import { InferenceView } from './inference.js';
import { TrainingView } from './training.js';
import { OperatorView } from './operator.js';

const $ = (id) => document.getElementById(id);
window.hamlet = { conn: {}, notices: [] };

const app = {
  tab: 'inference',
  conn: {},
  setConn(which, state, code, reason) {
    this.conn[which] = state; window.hamlet.conn[which] = state;
    if (which !== this.tab) return;
    const el = $('conn'); el.dataset.state = state;
    const label = { connecting: 'connecting…', connected: 'connected', reconnecting: 'connection lost — reconnecting…' }[state] ?? state;
    el.textContent = `${which === 'inference' ? 'Session' : 'Training'}: ${label}`;
    if (state === 'reconnecting' && reason) this.toast(`Connection closed (${code}): ${reason}`, 'warn');
  },
  toast(text, kind = 'info') {
    window.hamlet.notices.push({ text, kind, at: Date.now() });
    if (kind === 'info') return; // lifecycle chatter stays out of the way; warnings and errors show
    const n = $('notice'); n.textContent = text; n.hidden = false; n.dataset.kind = kind;
    clearTimeout(this.noticeTimer); this.noticeTimer = setTimeout(() => { n.hidden = true; }, 10000);
  },
  markTraining(active) { $('tab-training').textContent = active ? 'Training ● live' : 'Training'; },
  modelsChanged() { this.inference.refreshModels(); },
  show(tab) {
    this.tab = tab;
    for (const t of ['inference', 'training', 'operator']) {
      $(`view-${t}`).hidden = t !== tab; $(`tab-${t}`).setAttribute('aria-selected', String(t === tab));
    }
    if (tab === 'inference') this.inference.start();
    if (tab === 'training') this.training.start();
    if (tab === 'operator') this.operator.start(); else this.operator.stop();
    const s = this.conn[tab]; if (s) this.setConn(tab, s);
    else if (tab === 'operator') { $('conn').dataset.state = 'idle'; $('conn').textContent = 'Operator view'; }
    history.replaceState(null, '', `#${tab}`);
  },
};

async function main() {
  app.inference = new InferenceView(app);
  app.training = new TrainingView(app);
  app.operator = new OperatorView(app);
  for (const t of ['inference', 'training', 'operator']) $(`tab-${t}`).onclick = () => app.show(t);
  document.addEventListener('keydown', (e) => {
    if (app.tab !== 'inference' || ['INPUT', 'SELECT', 'TEXTAREA'].includes(e.target.tagName)) return;
    app.inference.key(e);
  });
  try {
    const st = await (await fetch('/api/status')).json();
    window.hamlet.status = st;
    if (st.modes && !st.modes.training) $('tab-training').hidden = true;
    app.markTraining(st.training?.is_training);
  } catch (e) { app.toast('The server does not answer /api/status', 'error'); }
  const want = location.hash.slice(1);
  app.show(['inference', 'training', 'operator'].includes(want) ? want : 'inference');
}
main();
