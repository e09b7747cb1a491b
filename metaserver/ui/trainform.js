// The training form, built from the server's one table of `start_training` fields
// (GET /api/training/config): the lesson presets and Start first, every other setting under
// "Advanced" with its plain-language help. Each preset says how long it takes on this server,
// from the training speed the server has measured (kept across restarts).

const $ = (id) => document.getElementById(id);

export class TrainForm {
  constructor(onStart) {
    this.onStart = onStart;
    this.fields = [];
    this.preset = null;
    $('train-form').onsubmit = (e) => { e.preventDefault(); this.onStart(this.message()); };
  }

  async load() {
    let cfg;
    try {
      cfg = await (await fetch('/api/training/config')).json();
    } catch (e) {
      $('train-fields').textContent = `Could not load the training settings (${e}); reload the page.`;
      return;
    }
    this.cfg = cfg; this.fields = cfg.fields;
    $('train-fields').replaceChildren(...this.fields.map((f) => this.input(f)));
    this.buildPresets();
    window.hamlet.trainingForm = this.fields.length;
  }

  /// Seconds a preset is expected to take here: its measured env steps at this server's
  /// measured speed for its network (none measured yet: null).
  expectedSecs(p) {
    const c = { ...this.cfg.defaults, ...p.config };
    const rate = this.cfg.pace?.env_steps_per_sec?.[c.network];
    return rate ? p.expected_env_steps / rate : null;
  }

  buildPresets() {
    const minutes = (s) => (s < 90 ? `${Math.round(s)} s` : `${(s / 60).toFixed(1)} min`);
    const buttons = this.cfg.presets.map((p, i) => {
      const b = document.createElement('button'); b.type = 'button'; b.id = `preset-${p.name}`;
      const secs = this.expectedSecs(p), net = p.config.network ?? 'qnetwork';
      const rate = this.cfg.pace?.env_steps_per_sec?.[net];
      const how = secs ? `about ${minutes(secs)} here (measured ${Math.round(rate)} steps/s)` : `how long: known after the first ${net} run on this server`;
      b.innerHTML = '<strong></strong><span class="how"></span><small></small>';
      b.querySelector('strong').textContent = p.label;
      b.querySelector('.how').textContent = how;
      b.querySelector('small').textContent = p.description;
      b.onclick = () => this.apply(p);
      b.setAttribute('aria-pressed', String(i === 0));
      return b;
    });
    $('presets').replaceChildren(...buttons);
    if (this.cfg.presets.length && !this.preset) this.apply(this.cfg.presets[0]); // the lesson is the default
  }

  apply(p) {
    for (const f of this.fields) {
      const v = p.config[f.name] ?? this.cfg.defaults[f.name];
      const el = $(`t-${f.name}`);
      if (v === undefined || v === null || f.kind === 'text' || f.name === 'seed') continue;
      if (f.kind === 'boolean') el.checked = Boolean(v); else el.value = v;
    }
    for (const b of $('presets').children) b.setAttribute('aria-pressed', String(b.id === `preset-${p.name}`));
    this.preset = p.name; window.hamlet.training.preset = p.name;
  }

  input(f) {
    const l = document.createElement('label'); l.className = `field ${f.kind}`;
    const name = document.createElement('span'); name.className = 'name'; name.textContent = f.label;
    const help = document.createElement('span'); help.className = 'help'; help.textContent = f.help;
    let i;
    if (f.kind === 'choice') {
      i = document.createElement('select');
      for (const c of f.choices) i.append(new Option(c, c, c === f.default, c === f.default));
    } else if (f.kind === 'boolean') {
      i = document.createElement('input'); i.type = 'checkbox'; i.checked = Boolean(f.default);
    } else {
      i = document.createElement('input');
      if (f.kind === 'text') Object.assign(i, { type: 'text', pattern: '[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}' });
      // Integer fields step by 1; real-valued ones accept any value in range (the server validates).
      else Object.assign(i, { type: 'number', step: f.kind === 'integer' ? 1 : 'any' });
      if (f.min !== undefined) i.min = f.min;
      if (f.max !== undefined) i.max = f.max;
      if (f.default !== null) { i.value = f.default; i.required = true; } else i.placeholder = 'blank: automatic';
      const range = f.min !== undefined && f.max !== undefined ? ` (${f.min}–${f.max})` : '';
      name.textContent += range;
    }
    Object.assign(i, { id: `t-${f.name}`, name: f.name });
    i.setAttribute('aria-describedby', `th-${f.name}`); help.id = `th-${f.name}`;
    l.append(name, i, help);
    return l;
  }

  /// The `start_training` message the form describes (blank fields: the server's defaults).
  message() {
    const msg = { command: 'start_training' };
    for (const f of this.fields) {
      const el = $(`t-${f.name}`);
      if (f.kind === 'boolean') { msg[f.name] = el.checked; continue; }
      if (el.value === '') continue;
      msg[f.name] = f.kind === 'integer' || f.kind === 'number' ? Number(el.value) : el.value;
    }
    return msg;
  }
}
