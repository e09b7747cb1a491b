// The class board's chart: every group's greedy-evaluation curve on one plot — a smoothed line,
// and where a group ran several seeds, a band from the lowest to the highest run — each labelled
// at its end with what it changed and its best value beside its last. Labels never overlap (the
// charts' own placer); what was drawn is left in the canvas's dataset for tests.
import { begin, drawAxes, ema, fmt, Labels, record, robustRange, ticks } from './charts.js';

/// Per episode of a group's runs: the mean, lowest and highest value and how many runs had it.
export function bandOf(runs, metric) {
  const at = new Map();
  for (const r of runs) for (const e of r.curve) {
    const v = metric === 'steps' ? e.steps : e.reward;
    if (!at.has(e.episode)) at.set(e.episode, []);
    at.get(e.episode).push(v);
  }
  return [...at.keys()].sort((a, b) => a - b).map((x) => {
    const vs = at.get(x);
    return { x, mean: vs.reduce((a, b) => a + b, 0) / vs.length, lo: Math.min(...vs), hi: Math.max(...vs), n: vs.length };
  });
}

/// `groups`: [{ label, color, runs: [{ curve: [{episode, steps, reward}] }], best, last }];
/// `metric`: 'steps' or 'reward'; `cap`: the step cap (the steps chart's top).
export function drawBoard(canvas, groups, { metric, smooth, cap }) {
  const { ctx, t, W, H, px } = begin(canvas);
  const drawn = groups.map((g) => ({ g, band: bandOf(g.runs, metric) })).filter((d) => d.band.length);
  canvas.dataset.groups = drawn.length;
  if (!drawn.length) {
    ctx.fillStyle = t.muted; ctx.textAlign = 'center'; ctx.textBaseline = 'middle';
    ctx.fillText('Each room’s test-episode curve will appear here after its first evaluation.', W / 2, H / 2);
    canvas.setAttribute('aria-label', 'Class board: no evaluations yet'); canvas.dataset.labels = '[]';
    return;
  }
  const all = drawn.flatMap((d) => d.band.flatMap((p) => [p.lo, p.hi]));
  const [lo, hi] = metric === 'steps' ? [0, cap * 1.04] : robustRange(all, [1000]);
  const xs = drawn.flatMap((d) => d.band.map((p) => p.x));
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  ctx.font = `${px}px system-ui, sans-serif`;
  const yt = ticks(lo, hi, 5);
  const left = Math.ceil(Math.max(...yt.map((v) => ctx.measureText(fmt(v)).width))) + px * 0.8;
  // The right margin holds the end labels: as wide as the widest one, at most 45% of the chart.
  const ends = drawn.map((d) => endLabel(d.g, metric));
  const labelW = Math.min(W * 0.45, Math.max(...ends.map((e) => ctx.measureText(e).width)) + px * 1.2);
  const top = px * 1.2, bottom = H - px * 1.8, right = W - labelW;
  const X = (x) => left + (x - x0) / (x1 - x0) * (right - left);
  const Y = (y) => bottom - (Math.max(lo, Math.min(hi, y)) - lo) / (hi - lo) * (bottom - top);
  const L = new Labels(ctx, [0, 0, W, H], px); L.bgColor = t.card;
  drawAxes({ ctx, t, L, px, H }, { yt, Y, left, right, xLabel: 'episode', x0, x1 });
  L.put(metric === 'steps' ? 'steps survived (test episodes)' : 'return (test episodes)', (left + right) / 2, H - px * 0.75, { align: 'center', color: t.muted, bg: false });
  const finals = [];
  for (const [i, { g, band }] of drawn.entries()) {
    const bx = band.map((p) => X(p.x));
    if (band.some((p) => p.n > 1)) {
      ctx.fillStyle = g.color; ctx.globalAlpha = 0.18; ctx.beginPath();
      band.forEach((p, k) => (k ? ctx.lineTo(bx[k], Y(p.hi)) : ctx.moveTo(bx[k], Y(p.hi))));
      [...band].reverse().forEach((p, k) => ctx.lineTo(bx[band.length - 1 - k], Y(p.lo)));
      ctx.closePath(); ctx.fill(); ctx.globalAlpha = 1;
    }
    const ys = smooth > 0 ? ema(band.map((p) => p.mean), smooth) : band.map((p) => p.mean);
    ctx.strokeStyle = g.color; ctx.lineWidth = Math.max(2.5, px / 5);
    ctx.beginPath(); ys.forEach((y, k) => (k ? ctx.lineTo(bx[k], Y(y)) : ctx.moveTo(bx[k], Y(y)))); ctx.stroke();
    finals.push({ y: Y(ys[ys.length - 1]), text: ends[i], color: g.color, x: bx[bx.length - 1] });
  }
  // End labels in the right margin, nearest their line's end, a swatch of its colour before each.
  finals.sort((a, b) => a.y - b.y);
  for (const f of finals) {
    if (L.put(f.text, right + px * 1.1, f.y, { color: t.fg })) {
      const b = L.boxes[L.boxes.length - 1];
      ctx.fillStyle = f.color; ctx.fillRect(right + px * 0.2, (b[1] + b[3]) / 2 - px * 0.35, px * 0.7, px * 0.7);
    }
  }
  record(canvas, L, { range: `${lo},${hi}`, metric });
  canvas.setAttribute('aria-label', `Class board, ${metric === 'steps' ? 'steps survived' : 'return'} of test episodes: ${finals.map((f) => f.text).join('; ')}`);
}

/// "label: best B · last L" for a group's end label.
function endLabel(g, metric) {
  const v = (e) => (e ? fmt(metric === 'steps' ? e.steps : e.reward) : '–');
  return `${g.label}: best ${v(g.best)} · last ${v(g.last)}`;
}
