// Hamlet UI: tabs, connection status, notices, keyboard, theme and present mode. Modes come from
// GET /api/status.
import { InferenceView } from './inference.js';
import { TrainingView } from './training.js';
import { OperatorView } from './operator.js';
import { BoardView } from './board.js';
import { setupTeacher } from './auth.js';

const $ = (id) => document.getElementById(id);
const TABS = ['inference', 'training', 'board', 'operator'];
window.hamlet = { conn: {}, notices: [] };

const app = {
  tab: 'inference',
  conn: {},
  setConn(which, state, code, reason) {
    this.conn[which] = state; window.hamlet.conn[which] = state;
    if (which !== this.tab) return;
    const el = $('conn'); el.dataset.state = state;
    const label = { connecting: 'connecting…', connected: 'connected', reconnecting: 'connection lost — reconnecting…', ended: 'ended' }[state] ?? state;
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
    for (const t of TABS) {
      const selected = t === tab;
      $(`view-${t}`).hidden = !selected;
      $(`tab-${t}`).setAttribute('aria-selected', String(selected));
      $(`tab-${t}`).tabIndex = selected ? 0 : -1; // one tab stop for the tab list; arrows move in it
    }
    if (tab === 'inference') this.inference.start();
    if (tab === 'training') this.training.start();
    if (tab === 'operator') this.operator.start(); else this.operator.stop();
    if (tab === 'board') this.board.start(); else this.board.stop();
    const s = this.conn[tab]; if (s) this.setConn(tab, s);
    else if (tab === 'operator' || tab === 'board') { $('conn').dataset.state = 'idle'; $('conn').textContent = tab === 'board' ? 'Class board' : 'Operator view'; }
    const q = new URLSearchParams(location.search);
    history.replaceState(null, '', `${q.toString() ? `?${q}` : location.pathname}#${tab}`);
  },
};

/// Light or dark: the reader's choice (kept per browser), else the system's (followed live).
function setupTheme() {
  const system = matchMedia('(prefers-color-scheme: dark)');
  const apply = () => {
    const theme = localStorage.getItem('hamlet-theme') ?? (system.matches ? 'dark' : 'light');
    document.documentElement.dataset.theme = theme;
    $('btn-theme').textContent = theme === 'dark' ? 'Light theme' : 'Dark theme';
    window.hamlet.theme = theme;
    window.dispatchEvent(new Event('hamlet-theme'));
  };
  apply();
  system.addEventListener('change', apply);
  $('btn-theme').onclick = () => {
    localStorage.setItem('hamlet-theme', window.hamlet.theme === 'dark' ? 'light' : 'dark');
    apply();
  };
}

/// Present mode for a projector: ?present=1 or the Present button.
function setupPresent() {
  const set = (on) => {
    document.body.classList.toggle('present', on);
    $('btn-present').setAttribute('aria-pressed', String(on));
    const q = new URLSearchParams(location.search);
    if (on) q.set('present', '1'); else q.delete('present');
    history.replaceState(null, '', `${q.toString() ? `?${q}` : location.pathname}${location.hash}`);
    window.dispatchEvent(new Event('resize'));
  };
  set(new URLSearchParams(location.search).get('present') === '1');
  $('btn-present').onclick = () => set(!document.body.classList.contains('present'));
}

/// Keys: arrows move between tabs; on the inference view, space/→/r drive playback — unless the
/// focus is on a control, which keeps its own keys (space on a focused button presses it).
function setupKeys() {
  for (const [i, t] of TABS.entries()) {
    $(`tab-${t}`).onclick = () => app.show(t);
    $(`tab-${t}`).onkeydown = (e) => {
      const d = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      if (!d) return;
      e.preventDefault();
      const visible = TABS.filter((x) => !$(`tab-${x}`).hidden);
      const next = visible[(visible.indexOf(TABS[i]) + d + visible.length) % visible.length];
      app.show(next); $(`tab-${next}`).focus();
    };
  }
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    if (app.tab !== 'inference' || e.altKey || e.ctrlKey || e.metaKey) return;
    if (['INPUT', 'SELECT', 'TEXTAREA', 'BUTTON', 'A'].includes(t.tagName) || t.getAttribute?.('role') === 'tab') return;
    app.inference.key(e);
  });
}

async function main() {
  setupTheme(); setupPresent(); setupTeacher(app);
  app.inference = new InferenceView(app);
  app.training = new TrainingView(app);
  app.operator = new OperatorView(app);
  app.board = new BoardView(app);
  // For the browser tests (and the curious, in the console): the views themselves.
  window.hamlet.views = { inference: app.inference, training: app.training };
  setupKeys();
  try {
    const st = await (await fetch('/api/status')).json();
    window.hamlet.status = st;
    if (st.modes && !st.modes.training) $('tab-training').hidden = true;
    app.markTraining(st.training?.is_training);
  } catch (e) { app.toast('The server does not answer /api/status', 'error'); }
  const want = location.hash.slice(1);
  app.show(TABS.includes(want) ? want : 'inference');
}
main();
