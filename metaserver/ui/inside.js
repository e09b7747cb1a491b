// "Inside the agent": the 72 inputs laid out by meaning, the two hidden layers as rows of cells
// whose brightness is the activation, the strongest connections from the last hidden layer to the
// chosen action, the Q-values (and V(s) with the advantages for a dueling network).
import { ACTIONS } from './draw.js';

const METER_NAMES = ['energy', 'hygiene', 'satiation', 'money', 'stress', 'social'];

function theme() {
  const cs = getComputedStyle(document.documentElement);
  const v = (k) => cs.getPropertyValue(k).trim();
  return { card: v('--card'), fg: v('--fg'), muted: v('--muted'), line: v('--line'), accent: v('--accent'), ok: v('--ok'), bad: v('--bad') };
}

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

/// Draws one frame's inside view; `u` is a state_update with `activations`.
export function drawInside(canvas, u) {
  const a = u.activations; if (!a) return;
  const ctx = canvas.getContext('2d'), W = canvas.width, H = canvas.height, t = theme();
  const d = window.devicePixelRatio || 1, font = (px) => `${Math.round(px * d)}px system-ui`;
  ctx.clearRect(0, 0, W, H); ctx.fillStyle = t.card; ctx.fillRect(0, 0, W, H);
  const col = W / 4, top = 22 * d, bottom = H - 10 * d;
  ctx.fillStyle = t.fg; ctx.font = font(12); ctx.textAlign = 'left';
  ['inputs (72)', `hidden 1 (${a.h1.length})`, `hidden 2 (${a.h2.length})`, 'actions (Q)'].forEach((s, i) => ctx.fillText(s, i * col + 8 * d, 14 * d));

  // Inputs by meaning: the 8×8 grid codes with the agent, the six meters as bars.
  const m = u.agent_meters?.agent_0?.meters ?? {};
  const gx = 8 * d, gs = Math.min(col - 16 * d, (bottom - top) * 0.55), cs = gs / 8;
  const ag = (u.grid?.agents ?? [])[0];
  const affs = new Set((u.grid?.affordances ?? []).map((f) => `${f.x},${f.y}`));
  for (let y = 0; y < 8; y++) for (let x = 0; x < 8; x++) {
    ctx.fillStyle = ag && ag.x === x && ag.y === y ? t.accent : affs.has(`${x},${y}`) ? t.muted : t.line;
    ctx.globalAlpha = ag && ag.x === x && ag.y === y ? 1 : 0.6;
    ctx.fillRect(gx + x * cs + 1, top + y * cs + 1, cs - 2, cs - 2);
  }
  ctx.globalAlpha = 1;
  const norm = { money: (v) => (v + 100) / 200, stress: (v) => v / 100 };
  METER_NAMES.forEach((k, i) => {
    const v = m[k] ?? 0, f = Math.max(0, Math.min(1, (norm[k] ?? ((x) => x))(v)));
    const y = top + gs + 8 * d + i * ((bottom - top - gs - 8 * d) / 6);
    ctx.fillStyle = t.fg; ctx.font = font(10); ctx.fillText(k, gx, y + 9 * d);
    ctx.fillStyle = t.line; ctx.fillRect(gx + 58 * d, y + 2 * d, col - 74 * d, 7 * d);
    ctx.fillStyle = t.ok; ctx.fillRect(gx + 58 * d, y + 2 * d, (col - 74 * d) * f, 7 * d);
  });

  const h1at = cells(ctx, a.h1, col + 8 * d, top, col - 16 * d, bottom - top, 8, t.accent);
  const h2at = cells(ctx, a.h2, 2 * col + 8 * d, top, col - 16 * d, bottom - top, 8, t.accent);

  // Actions: Q-values as bars from zero, the chosen one marked.
  const q = u.q_values ?? [], chosen = u.action;
  const qmax = Math.max(1e-6, ...q.map((v) => Math.abs(v)));
  const ax = 3 * col + 8 * d, rowH = (bottom - top) / ACTIONS.length;
  const actAt = ACTIONS.map((name, i) => {
    const y = top + i * rowH;
    ctx.fillStyle = i === chosen ? t.accent : t.fg; ctx.font = font(i === chosen ? 13 : 11);
    ctx.fillText(`${name}${i === chosen ? ' ←' : ''}`, ax, y + 12 * d);
    const w = (col - 24 * d) * Math.abs(q[i] ?? 0) / qmax;
    ctx.fillStyle = i === chosen ? t.accent : t.muted; ctx.fillRect(ax, y + 16 * d, w, 6 * d);
    return [ax - 4 * d, y + 10 * d];
  });

  // The strongest connections from hidden 2 to the chosen action (width: |contribution|,
  // green: for the action, red: against it).
  const top8 = a.top ?? [];
  const cmax = Math.max(1e-6, ...top8.map(([, c]) => Math.abs(c)));
  if (chosen != null && actAt[chosen]) {
    for (const [unit, c] of top8) {
      const from = h2at[unit]; if (!from) continue;
      ctx.strokeStyle = c >= 0 ? t.ok : t.bad; ctx.lineWidth = Math.max(1, 4 * d * Math.abs(c) / cmax);
      ctx.beginPath(); ctx.moveTo(from[0], from[1]); ctx.lineTo(actAt[chosen][0], actAt[chosen][1]); ctx.stroke();
    }
  }
  if (a.value != null) {
    ctx.fillStyle = t.fg; ctx.font = font(11); ctx.textAlign = 'right';
    ctx.fillText(`V(s) ${a.value.toFixed(2)} · advantages ${a.advantage.map((v) => v.toFixed(2)).join(' ')}`, W - 8 * d, H - 2 * d);
  }
  canvas.dataset.frame = String(u.step);
}
