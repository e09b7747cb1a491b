// "What if…?": on a paused frame a student drags a meter or clicks a cell of the grid, and sees
// at once what the agent would do there — its Q-values, its choice and (with "Inside the agent")
// its hidden layers — while the session itself stays as it was (the server's `probe`). Owners and
// watchers alike may ask.
import { ACTIONS, cellAt, drawWorld } from './draw.js';
import { drawInside } from './inside.js';
import { METERS, RANGES } from './meters.js';
import { renderQBars } from './qbars.js';

const $ = (id) => document.getElementById(id);

export class WhatIf {
  constructor(view) {
    this.view = view;
    this.active = false;
    this.meters = null; // the edited meters (browser scale)
    this.position = null; // the probed cell
    this.result = null; // the last probe_result
    this.inFlight = false; this.dirty = false;
    this.build();
    $('btn-whatif').onclick = () => (this.active ? this.leave() : this.enter());
    $('grid').addEventListener('click', (e) => {
      if (!this.active) return;
      const c = cellAt($('grid'), e);
      if (c) { this.position = c; this.ask(); }
    });
  }

  /// One slider per meter, on the scale `state_update` uses.
  build() {
    $('whatif-meters').replaceChildren(...METERS.flatMap(([k, label, , text]) => {
      const [lo, hi] = RANGES[k];
      const l = document.createElement('label'); l.textContent = label; l.htmlFor = `wi-${k}`;
      const i = document.createElement('input');
      Object.assign(i, { type: 'range', id: `wi-${k}`, min: lo, max: hi, step: (hi - lo) / 100 });
      const v = document.createElement('span'); v.className = 'num'; v.id = `wiv-${k}`;
      i.oninput = () => { this.meters[k] = Number(i.value); v.textContent = text(Number(i.value)); this.ask(); };
      return [l, i, v];
    }));
  }

  /// What-if is possible on a paused frame.
  update() {
    const paused = !this.view.state.playing && this.view.last != null;
    $('btn-whatif').disabled = !paused && !this.active;
    $('btn-whatif').title = paused || this.active
      ? 'Change a meter or click a cell of the grid: see what the agent would do there. The session stays as it is.'
      : 'Pause the agent first, then ask what it would do if a meter were different or it stood elsewhere.';
    $('whatif-note').hidden = !this.active;
  }

  enter() {
    const u = this.view.last; if (!u || this.view.state.playing) return;
    this.active = true; this.view.state.whatIf = true;
    this.meters = { ...(u.agent_meters?.agent_0?.meters ?? {}) };
    const a = (u.grid?.agents ?? [])[0];
    this.position = a ? { x: a.x, y: a.y } : null;
    for (const [k, , , text] of METERS) { $(`wi-${k}`).value = this.meters[k]; $(`wiv-${k}`).textContent = text(this.meters[k]); }
    $('meters').hidden = true; $('whatif-meters').hidden = false;
    $('btn-whatif').setAttribute('aria-pressed', 'true'); $('btn-whatif').textContent = 'Back to the session';
    document.body.classList.add('whatif-on');
    $('whatif-note').hidden = false;
    $('whatif-note').textContent = 'What if: drag a meter or click a cell of the grid.';
    this.ask();
  }

  /// Back to the session as it is (also when it plays or steps on).
  leave() {
    if (!this.active) return;
    this.active = false; this.view.state.whatIf = false; this.result = null;
    $('meters').hidden = false; $('whatif-meters').hidden = true;
    $('btn-whatif').setAttribute('aria-pressed', 'false'); $('btn-whatif').textContent = 'What if…?';
    document.body.classList.remove('whatif-on');
    this.update();
    if (this.view.last) this.view.paint(this.view.last);
  }

  /// Sends the edited state; while one probe is unanswered, the newest edit waits for it.
  ask() {
    if (this.inFlight) { this.dirty = true; return; }
    this.inFlight = true; this.dirty = false;
    this.view.socket.send({ type: 'control', command: 'probe', meters: this.meters, position: this.position });
    this.view.state.probes = (this.view.state.probes ?? 0) + 1;
    this.draw();
  }

  answer(r) {
    this.inFlight = false;
    if (this.dirty) { this.ask(); }
    if (!this.active) return;
    this.result = r; this.view.state.probeResults = (this.view.state.probeResults ?? 0) + 1;
    renderQBars('q', r.q_values, r.action);
    const best = ACTIONS[r.action];
    $('whatif-note').textContent = `What if: here the agent would choose ${best} (Q ${r.q_values[r.action].toFixed(2)}). Nothing has changed in the session itself.`;
    this.draw();
  }

  /// The grid with the probed cell, and the inside view of the probed state.
  draw() {
    const u = this.view.last; if (!u) return;
    drawWorld($('grid'), u, [], this.position);
    const r = this.result;
    if (r && r.activations && this.view.state.inside) {
      const probed = { ...u, q_values: r.q_values, action: r.action, activations: r.activations, explored: false,
                       agent_meters: { agent_0: { meters: r.meters } },
                       grid: { ...u.grid, agents: [{ ...(u.grid?.agents?.[0] ?? {}), x: r.position.x, y: r.position.y }] } };
      drawInside($('inside-canvas'), probed);
      $('inside-what').textContent = `what if: it would choose ${ACTIONS[r.action]}`;
    }
  }
}
