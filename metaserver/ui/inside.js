// "Inside the agent": what the network sees and how it decides, for one step. Four columns, each
// with its caption: the 72 inputs laid out by meaning (where things are, and the six meters
// coloured by danger as in the meter panel), the two hidden layers as cells whose brightness is
// how strongly a unit fires, and the actions with their Q-values (bars measured from the worst
// action, exact values printed). Lines join the hidden units that pull hardest on the chosen
// action to it: green for it, red against. The HTML legend under the canvas says all this.
import { ACTIONS, AFF_COLORS } from './draw.js';
import { qBarFractions } from './charts.js';
import { METERS, dangerVar } from './meters.js';

function theme() {
  const cs = getComputedStyle(document.documentElement);
  const v = (k) => cs.getPropertyValue(k).trim();
  return { card: v('--card'), fg: v('--fg'), muted: v('--muted'), line: v('--line'), accent: v('--accent'),
           ok: v('--ok'), bad: v('--bad'), mid: v('--mid'), cssVar: v };
}

/// Label size in CSS pixels: at least 14 on a screen, 20 in present mode.
function insidePx() { return document.body.classList.contains('present') ? 20 : 14; }

// Cells of a layer: brightness = activation / the layer's largest activation.
function cells(ctx, values, x, y, w, h, cols, color) {
  const rows = Math.ceil(values.length / cols), cw = w / cols, ch = h / rows;
  const max = Math.max(1e-6, ...values.map((v) => Math.abs(v)));
  const at = [];
  values.forEach((v, i) => {
    const cx = x + (i % cols) * cw, cy = y + Math.floor(i / cols) * ch;
    ctx.globalAlpha = 0.08 + 0.92 * Math.min(1, Math.abs(v) / max);
    ctx.fillStyle = color; ctx.fillRect(cx + 1, cy + 1, cw - 2, ch - 2);
    at.push([cx + cw / 2, cy + ch / 2]);
  });
  ctx.globalAlpha = 1;
  return at;
}

/// The inputs: where things are on the 8×8 grid (coloured as on the world's grid, the agent
/// blue), then each meter as a bar coloured by its danger, with its name and value.
function inputs(ctx, u, x, top, w, bottom, px, t) {
  const side = Math.min(w, (bottom - top) * 0.45), cs = side / 8;
  const ag = (u.grid?.agents ?? [])[0];
  const affs = new Map((u.grid?.affordances ?? []).map((f) => [`${f.x},${f.y}`, f.type]));
  for (let y = 0; y < 8; y++) for (let xx = 0; xx < 8; xx++) {
    const here = ag && ag.x === xx && ag.y === y, kind = affs.get(`${xx},${y}`);
    ctx.fillStyle = here ? '#3b82f6' : kind ? (AFF_COLORS[kind] ?? t.muted) : t.line;
    ctx.globalAlpha = here || kind ? 1 : 0.45;
    ctx.fillRect(x + xx * cs + 1, top + y * cs + 1, cs - 2, cs - 2);
  }
  ctx.globalAlpha = 1;
  const m = u.agent_meters?.agent_0?.meters ?? {};
  const rowH = (bottom - top - side - px * 0.6) / METERS.length;
  METERS.forEach(([k, label, frac, text, danger], i) => {
    const v = m[k] ?? 0, f = Math.max(0, Math.min(1, frac(v)));
    const y = top + side + px * 0.6 + i * rowH;
    ctx.fillStyle = t.fg; ctx.textAlign = 'left'; ctx.textBaseline = 'top';
    ctx.fillText(`${label} ${text(v)}`, x, y);
    const barY = y + px * 1.15, barH = Math.max(3, Math.min(px * 0.45, rowH - px * 1.3));
    ctx.fillStyle = t.line; ctx.fillRect(x, barY, w, barH);
    ctx.fillStyle = t.cssVar(dangerVar(danger(v))); ctx.fillRect(x, barY, w * f, barH);
  });
}

/// Draws one frame's inside view; `u` is a state_update (or probe result shaped like one) with
/// `activations`.
export function drawInside(canvas, u) {
  const a = u.activations; if (!a) return;
  const ctx = canvas.getContext('2d'), W = canvas.width, H = canvas.height, t = theme();
  const d = window.devicePixelRatio || 1, px = insidePx() * d;
  ctx.clearRect(0, 0, W, H); ctx.fillStyle = t.card; ctx.fillRect(0, 0, W, H);
  ctx.font = `${px}px system-ui, sans-serif`;
  const gap = px * 0.8, col = (W - 3 * gap) / 4, top = px * 2.6, bottom = H - px * 0.4;
  const xs = [0, 1, 2, 3].map((i) => i * (col + gap));
  ctx.fillStyle = t.fg; ctx.textAlign = 'left'; ctx.textBaseline = 'top';
  const captions = ['what it sees', `hidden layer 1`, `hidden layer 2`, 'its choice (Q)'];
  const subs = ['72 inputs', `${a.h1.length} units`, `${a.h2.length} units`, 'bar: better than the worst'];
  captions.forEach((s, i) => {
    ctx.font = `600 ${px}px system-ui, sans-serif`; ctx.fillStyle = t.fg; ctx.fillText(fit(ctx, s, col), xs[i], 0);
    ctx.font = `${px * 0.9}px system-ui, sans-serif`; ctx.fillStyle = t.muted; ctx.fillText(fit(ctx, subs[i], col), xs[i], px * 1.2);
  });
  ctx.font = `${px}px system-ui, sans-serif`;
  inputs(ctx, u, xs[0], top, col, bottom, px, t);
  cells(ctx, a.h1, xs[1], top, col, bottom - top, 8, t.accent);
  const h2at = cells(ctx, a.h2, xs[2], top, col, bottom - top, 8, t.accent);
  const dueling = a.value != null;
  const actAt = actions(ctx, u, xs[3], top, col, dueling ? bottom - px * 2.6 : bottom, px, t);
  if (dueling) {
    // A dueling network's two streams: how good the situation is, V(s), and each action's
    // advantage (Q = V + A − mean A).
    ctx.fillStyle = t.muted; ctx.font = `${px * 0.9}px system-ui, sans-serif`; ctx.textAlign = 'left'; ctx.textBaseline = 'top';
    ctx.fillText(fit(ctx, `situation V(s) ${a.value.toFixed(2)}`, col), xs[3], bottom - px * 2.3);
    ctx.fillText(fit(ctx, `advantages ${a.advantage.map((v) => v.toFixed(1)).join(' ')}`, col), xs[3], bottom - px * 1.15);
  }
  // The hidden units of layer 2 that pull hardest on the chosen action (width: how hard).
  const chosen = u.action;
  const top8 = a.top ?? [];
  const cmax = Math.max(1e-6, ...top8.map(([, c]) => Math.abs(c)));
  if (chosen != null && actAt[chosen]) {
    for (const [unit, c] of top8) {
      const from = h2at[unit]; if (!from) continue;
      ctx.strokeStyle = c >= 0 ? t.ok : t.bad; ctx.lineWidth = Math.max(1, 4 * d * Math.abs(c) / cmax);
      ctx.beginPath(); ctx.moveTo(from[0], from[1]); ctx.lineTo(actAt[chosen][0], actAt[chosen][1]); ctx.stroke();
    }
  }
  canvas.dataset.frame = String(u.step ?? '');
  canvas.dataset.px = String(insidePx());
}

/// The actions: name (the chosen one marked), exact Q-value, and a bar of how much better than
/// the worst action it is. Returns where each row's line should end.
function actions(ctx, u, x, top, w, bottom, px, t) {
  const q = u.q_values ?? [], chosen = u.action, fr = q.length ? qBarFractions(q) : [];
  const rowH = (bottom - top) / ACTIONS.length;
  return ACTIONS.map((name, i) => {
    const y = top + i * rowH, mine = i === chosen;
    ctx.fillStyle = mine ? t.accent : t.fg;
    ctx.font = `${mine ? '700 ' : ''}${px}px system-ui, sans-serif`; ctx.textAlign = 'left'; ctx.textBaseline = 'top';
    ctx.fillText(fit(ctx, `${mine ? '→ ' : ''}${name}  ${q[i] != null ? q[i].toFixed(2) : '–'}`, w), x, y);
    ctx.fillStyle = t.line; ctx.fillRect(x, y + px * 1.3, w, px * 0.5);
    ctx.fillStyle = mine ? t.accent : t.muted; ctx.fillRect(x, y + px * 1.3, w * (0.02 + 0.98 * (fr[i] ?? 0)), px * 0.5);
    return [x - px * 0.2, y + px * 1.55];
  });
}

/// `s` shortened with an ellipsis to fit `w` device pixels.
function fit(ctx, s, w) {
  if (ctx.measureText(s).width <= w) return s;
  let out = s;
  while (out.length > 1 && ctx.measureText(`${out}…`).width > w) out = out.slice(0, -1);
  return `${out}…`;
}
