// The six meters as the page shows them, in one place: names, the browser's scale (world.md),
// how to draw each as a bar, and how dangerous a value is — so the meter panel, the training
// view and "Inside the agent" colour a meter the same way.

const pct = (v) => `${Math.round(v * 100)}%`;

// [key, label, bar fraction 0..1, text, danger(v): 0 fine … 1 critical]. Danger follows
// world.md: low energy, hygiene or satiation ends the episode; high stress costs reward; debt is
// bad; loneliness costs reward.
export const METERS = [
  ['energy', 'Energy', (v) => v, pct, (v) => 1 - v],
  ['hygiene', 'Hygiene', (v) => v, pct, (v) => 1 - v],
  ['satiation', 'Satiation', (v) => v, pct, (v) => 1 - v],
  ['money', 'Money', (v) => (v + 100) / 200, (v) => `$${v.toFixed(0)}`, (v) => (v < 0 ? 0.6 + Math.min(0.4, -v / 250) : 0)],
  ['stress', 'Stress', (v) => v / 100, (v) => `${v.toFixed(0)}/100`, (v) => v / 100],
  ['social', 'Social', (v) => v, pct, (v) => 1 - v],
];

/// [min, max] of each meter as the browser gets it (`state_update`'s `agent_meters`).
export const RANGES = { energy: [0, 1], hygiene: [0, 1], satiation: [0, 1], money: [-100, 100], stress: [0, 100], social: [0, 1] };

/// `low` (critical), `mid` (worrying) or '' for a danger level.
export function dangerClass(d) { return d > 0.8 ? 'low' : d > 0.5 ? 'mid' : ''; }

/// The CSS colour variable for a danger level: the meter panel's bar colours.
export function dangerVar(d) { return { low: '--bad', mid: '--mid', '': '--ok' }[dangerClass(d)]; }

/// Builds labelled meter bars (role="meter") in `container`; ids are `${prefix}-…`.
export function buildMeters(container, prefix) {
  container.replaceChildren(...METERS.flatMap(([k, label]) => {
    const [lo, hi] = RANGES[k];
    const l = document.createElement('span'); l.textContent = label; l.id = `${prefix}l-${k}`;
    const b = document.createElement('div'); b.className = 'bar'; b.id = `${prefix}b-${k}`;
    Object.entries({ role: 'meter', 'aria-labelledby': `${prefix}l-${k}`, 'aria-valuemin': lo, 'aria-valuemax': hi, 'aria-valuenow': lo })
      .forEach(([a, v]) => b.setAttribute(a, v));
    const fill = document.createElement('div'); fill.id = `${prefix}-${k}`; fill.style.width = '0';
    b.append(fill);
    const v = document.createElement('span'); v.className = 'num'; v.id = `${prefix}v-${k}`; v.textContent = '–';
    return [l, b, v];
  }));
}

/// Shows `meters` in bars built by [`buildMeters`] with the same prefix.
export function renderMeters(prefix, meters) {
  for (const [k, , frac, text, danger] of METERS) {
    const v = meters[k]; if (v == null) continue;
    const f = Math.max(0, Math.min(1, frac(v))), d = danger(v);
    const bar = document.getElementById(`${prefix}-${k}`); if (!bar) continue;
    bar.style.width = `${(f * 100).toFixed(1)}%`;
    bar.className = dangerClass(d);
    const box = document.getElementById(`${prefix}b-${k}`);
    box.classList.toggle('empty', f <= 0.001 && d > 0.8);
    box.setAttribute('aria-valuenow', String(v));
    box.setAttribute('aria-valuetext', text(v));
    const t = document.getElementById(`${prefix}v-${k}`);
    t.textContent = f <= 0.001 && d > 0.8 ? `${text(v)} ⚠` : text(v);
    t.classList.toggle('low', d > 0.8);
  }
}
