// Charts that show learning honestly: a y-scale robust to outliers (the chart says how many it
// clipped), labels that never overlap one another or leave the chart, reference lines, smoothing
// as TensorBoard does it. Every chart leaves what it drew in its dataset for tests and in its
// aria-label for screen readers.

/// The current theme's colours.
export function theme() {
  const cs = getComputedStyle(document.documentElement);
  const v = (k) => cs.getPropertyValue(k).trim();
  return { card: v('--card'), fg: v('--fg'), muted: v('--muted'), line: v('--line'), grid: v('--grid-line'),
           accent: v('--accent'), ok: v('--ok'), bad: v('--bad'), warn: v('--warn'), mid: v('--mid') };
}

/// Label size in CSS pixels: 13 on a screen, 20 in present mode (read from the back of a room).
export function labelPx() { return document.body.classList.contains('present') ? 20 : 13; }

/// TensorBoard's smoothing: an exponential moving average with weight `w`, debiased so the
/// first points are not pulled towards zero.
export function ema(ys, w) {
  const out = []; let last = 0, n = 0;
  for (const y of ys) { last = last * w + (1 - w) * y; n += 1; out.push(w > 0 ? last / (1 - w ** n) : y); }
  return out;
}

function quantile(sorted, q) {
  if (!sorted.length) return 0;
  const i = (sorted.length - 1) * q, lo = Math.floor(i), hi = Math.ceil(i);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (i - lo);
}

/// The y-range to draw: the values' range, except that values far outside the bulk are left off
/// the scale (marked at its edge, and the chart says how many): beyond 1.5 interquartile ranges
/// from the middle half (Tukey's fences) and beyond the 1st and 99th percentiles, so one −575
/// does not flatten a curve that rises from −60 to +40, and at most about 1 % of the points on
/// each side are ever clipped. Widened to hold the reference lines that lie near the data.
/// Returns [lo, hi].
export function robustRange(values, keep = [], { fixed } = {}) {
  if (fixed) return fixed;
  const v = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (!v.length) return [0, 1];
  const q1 = quantile(v, 0.25), q3 = quantile(v, 0.75), iqr = q3 - q1;
  let lo = v[0], hi = v[v.length - 1];
  if (v.length >= 8 && iqr > 0) {
    lo = Math.max(lo, Math.min(q1 - 1.5 * iqr, quantile(v, 0.01)));
    hi = Math.min(hi, Math.max(q3 + 1.5 * iqr, quantile(v, 0.99)));
  }
  const span = Math.max(hi - lo, 1e-9);
  for (const k of keep) if (Number.isFinite(k) && k >= lo - span && k <= hi + span) { lo = Math.min(lo, k); hi = Math.max(hi, k); }
  if (hi - lo < 1e-9) { hi += 1; lo -= 1; }
  const pad = (hi - lo) * 0.06;
  return [lo - pad, hi + pad];
}

/// About five round tick values across [lo, hi].
export function ticks(lo, hi, n = 5) {
  const raw = (hi - lo) / n, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-9; t += step) out.push(Math.abs(t) < step * 1e-9 ? 0 : t);
  return out;
}

export const fmt = (v) => (Math.abs(v) >= 1000 ? `${(v / 1000).toFixed(Math.abs(v) >= 10000 ? 0 : 1)}k` : Math.abs(v) >= 10 || v === 0 ? v.toFixed(0) : v.toPrecision(2));

/// Places label boxes without overlap: each label keeps its wanted y if free, else moves to the
/// nearest free place within the chart (or is dropped when there is none). Boxes are
/// [x0, y0, x1, y1].
export class Labels {
  constructor(ctx, bounds, px) { this.ctx = ctx; this.bounds = bounds; this.px = px; this.boxes = []; this.placed = []; }
  overlaps(b) { return this.boxes.some((o) => b[0] < o[2] && b[2] > o[0] && b[1] < o[3] && b[3] > o[1]); }
  /// Reserve a box nothing else may cover (the plot's own marks, say).
  reserve(b) { this.boxes.push(b); }
  put(text, x, y, { align = 'left', color, bg = true } = {}) {
    const { ctx, px } = this, w = ctx.measureText(text).width + px * 0.5, h = px * 1.3;
    const [bx0, by0, bx1, by1] = this.bounds;
    let x0 = align === 'right' ? x - w : align === 'center' ? x - w / 2 : x;
    x0 = Math.max(bx0, Math.min(bx1 - w, x0));
    for (let k = 0; k < 40; k++) {
      for (const dir of k ? [1, -1] : [1]) {
        const yy = Math.max(by0, Math.min(by1 - h, y - h / 2 + dir * k * h * 0.5));
        const b = [x0, yy, x0 + w, yy + h];
        if (this.overlaps(b)) continue;
        this.boxes.push(b);
        if (bg) { ctx.fillStyle = this.bgColor; ctx.globalAlpha = 0.85; ctx.fillRect(...b.slice(0, 2), w, h); ctx.globalAlpha = 1; }
        ctx.fillStyle = color; ctx.textAlign = 'left'; ctx.textBaseline = 'middle';
        ctx.fillText(text, x0 + px * 0.25, yy + h / 2);
        this.placed.push({ text, box: b });
        return true;
      }
    }
    return false;
  }
}

/// Prepares a canvas drawn at its displayed size: the context, its size and the label size, all in
/// device pixels.
export function begin(canvas) {
  const ctx = canvas.getContext('2d'), t = theme(), dpr = window.devicePixelRatio || 1;
  const W = canvas.width, H = canvas.height, px = Math.round(labelPx() * dpr);
  ctx.clearRect(0, 0, W, H); ctx.fillStyle = t.card; ctx.fillRect(0, 0, W, H);
  ctx.font = `${px}px system-ui, sans-serif`;
  return { ctx, t, W, H, px, dpr };
}

/// Records what a chart drew (label boxes in CSS pixels of the canvas) for tests.
export function record(canvas, labels, extra) {
  const scale = canvas.getBoundingClientRect().width / Math.max(1, canvas.width);
  canvas.dataset.labels = JSON.stringify(labels.placed.map((l) => ({ text: l.text, box: l.box.map((v) => +(v * scale).toFixed(1)) })));
  Object.assign(canvas.dataset, extra);
}

/// Axes: y ticks with faint grid lines and their values, x from the first to the last point.
export function drawAxes({ ctx, t, L, px, H }, { yt, Y, left, right, xLabel, x0, x1 }) {
  ctx.strokeStyle = t.grid; ctx.lineWidth = 1;
  for (const v of yt) {
    ctx.beginPath(); ctx.moveTo(left, Y(v)); ctx.lineTo(right, Y(v)); ctx.stroke();
    L.put(fmt(v), left - px * 0.3, Y(v), { align: 'right', color: t.muted, bg: false });
  }
  L.put(`${xLabel} ${x0}`, left, H - px * 0.75, { color: t.muted, bg: false });
  L.put(`${xLabel} ${x1}`, right, H - px * 0.75, { align: 'right', color: t.muted, bg: false });
}

/// A line chart. `series`: [{ xs, ys, color, label, smooth (EMA weight, or null for none),
/// faint }]; `refs`: dashed reference lines [{ value, label }]; `fixed`: a y-range that is not
/// scaled (e.g. [0, cap] for survival); `empty`: what the chart will show.
export function drawLine(canvas, { series = [], refs = [], fixed, title = '', unit = '', empty = 'will appear here when a run starts', xLabel = 'episode' } = {}) {
  const { ctx, t, W, H, px } = begin(canvas);
  const main = series.find((s) => !s.faint && s.ys.length);
  canvas.dataset.points = main ? main.ys.length : 0;
  if (!main) {
    ctx.fillStyle = t.muted; ctx.textAlign = 'center'; ctx.textBaseline = 'middle';
    ctx.fillText(`${title} ${empty}`, W / 2, H / 2);
    canvas.setAttribute('aria-label', `${title}: nothing yet`);
    canvas.dataset.labels = '[]';
    return;
  }
  const smoothed = series.map((s) => (s.smooth != null && s.smooth > 0 ? ema(s.ys, s.smooth) : null));
  const raw = series.flatMap((s) => s.ys);
  // The smoothed line follows the values' scale (an outlier drags it too, and it is drawn clamped).
  const [lo, hi] = robustRange(raw, refs.map((r) => r.value), { fixed });
  const clipped = main.ys.filter((y) => y < lo || y > hi).length;
  const yt = ticks(lo, hi, H > 240 * (px / 13) ? 5 : 3);
  ctx.font = `${px}px system-ui, sans-serif`;
  const left = Math.ceil(Math.max(...yt.map((v) => ctx.measureText(fmt(v)).width))) + px * 0.8;
  const top = px * 1.9, bottom = H - px * 1.7, right = W - px * 0.6;
  const xsAll = series.flatMap((s) => s.xs);
  const x0 = Math.min(...xsAll), x1 = Math.max(...xsAll, x0 + 1);
  const X = (x) => left + (x - x0) / (x1 - x0) * (right - left);
  const Y = (y) => bottom - (Math.max(lo, Math.min(hi, y)) - lo) / (hi - lo) * (bottom - top);
  const L = new Labels(ctx, [0, 0, W, H], px); L.bgColor = t.card;
  drawAxes({ ctx, t, L, px, H }, { yt, Y, left, right, xLabel, x0, x1 });
  const line = (xs, ys, style, width, dash = []) => {
    ctx.strokeStyle = style; ctx.lineWidth = width; ctx.setLineDash(dash); ctx.beginPath();
    ys.forEach((y, i) => (i ? ctx.lineTo(X(xs[i]), Y(y)) : ctx.moveTo(X(xs[i]), Y(y)))); ctx.stroke(); ctx.setLineDash([]);
  };
  ctx.save(); ctx.beginPath(); ctx.rect(left, top - 2, right - left, bottom - top + 4); ctx.clip();
  for (const r of refs) line([x0, x1], [r.value, r.value], t.muted, Math.max(1, px / 12), [px / 2, px / 3]);
  series.forEach((s, i) => {
    if (s.faint) { line(s.xs, smoothed[i] ?? s.ys, t.line, Math.max(1.5, px / 8)); return; }
    if (smoothed[i]) { line(s.xs, s.ys, `${s.color}55`, Math.max(1, px / 13)); line(s.xs, smoothed[i], s.color, Math.max(2, px / 6)); }
    else line(s.xs, s.ys, s.color, Math.max(2, px / 6));
    // Points beyond the scale are marked at its edge.
    ctx.fillStyle = s.color;
    s.ys.forEach((y, k) => { if (y < lo || y > hi) { const yy = y > hi ? top : bottom; ctx.beginPath(); ctx.arc(X(s.xs[k]), yy, px / 5, 0, Math.PI * 2); ctx.fill(); } });
  });
  ctx.restore();
  // Title row: each series' name, last and smoothed values; the clipping note.
  let tx = 0;
  for (const [i, s] of series.entries()) {
    if (!s.ys.length || s.faint) continue;
    const last = s.ys[s.ys.length - 1], sm = smoothed[i]?.[smoothed[i].length - 1];
    const text = `${s.label}: ${fmt(last)}${unit}${sm != null ? ` (smoothed ${fmt(sm)})` : ''}`;
    ctx.fillStyle = s.color; ctx.fillRect(tx + px * 0.2, px * 0.45, px * 0.7, px * 0.7);
    if (L.put(text, tx + px * 1.0, px * 0.8, { color: t.fg, bg: false })) tx = L.boxes[L.boxes.length - 1][2] + px * 0.6;
  }
  if (series.some((s) => s.faint && s.ys.length)) L.put('faint: the previous run', right, px * 0.8, { align: 'right', color: t.muted, bg: false });
  if (clipped) L.put(`${clipped} outlier${clipped > 1 ? 's' : ''} beyond the scale, marked at its edge`, right, top + px * 0.8, { align: 'right', color: t.muted });
  // Reference labels at the right end of their lines, never over another label.
  for (const r of refs) if (r.value >= lo && r.value <= hi) L.put(r.label, right, Y(r.value) - px * 0.7, { align: 'right', color: t.muted });
  record(canvas, L, { range: `${lo},${hi}`, clipped });
  const sm = smoothed[series.indexOf(main)];
  canvas.setAttribute('aria-label', `${title} over ${xLabel}s ${x0} to ${x1}: last ${fmt(main.ys[main.ys.length - 1])}${sm ? `, smoothed ${fmt(sm[sm.length - 1])}` : ''}, lowest ${fmt(Math.min(...main.ys))}, highest ${fmt(Math.max(...main.ys))}${clipped ? `; ${clipped} outliers drawn at the edge` : ''}`);
}

export const ENDING_KINDS = [
  ['energy', 'energy ran out', '--bad'],
  ['hygiene', 'hygiene ran out', '--accent'],
  ['satiation', 'satiation ran out', '--mid'],
  ['max_steps', 'survived to the cap', '--ok'],
];

/// How episodes ended, window by window, as stacked shares: the chart that explains why the
/// reward can rise while survival falls (an agent that earns more may die of hunger sooner).
/// `windows`: [{ from, to, energy, hygiene, satiation, max_steps }].
export function drawEndings(canvas, windows) {
  const { ctx, t, W, H, px } = begin(canvas);
  const total = (w) => ENDING_KINDS.reduce((s, [k]) => s + (w[k] || 0), 0);
  const ws = windows.filter((w) => total(w) > 0);
  canvas.dataset.points = ws.length;
  if (!ws.length) {
    ctx.fillStyle = t.muted; ctx.textAlign = 'center'; ctx.textBaseline = 'middle';
    ctx.fillText('How episodes end will appear here when a run starts', W / 2, H / 2);
    canvas.setAttribute('aria-label', 'Why episodes ended: nothing yet'); canvas.dataset.labels = '[]';
    return;
  }
  const L = new Labels(ctx, [0, 0, W, H], px); L.bgColor = t.card;
  const left = ctx.measureText('100%').width + px * 0.8, top = px * 3.4, bottom = H - px * 1.7, right = W - px * 0.6;
  const x0 = ws[0].from, x1 = Math.max(ws[ws.length - 1].to, x0 + 1);
  const X = (x) => left + (x - x0) / (x1 - x0 + 1) * (right - left);
  for (const w of ws) {
    let acc = 0; const n = total(w);
    for (const [k, , color] of ENDING_KINDS) {
      const share = (w[k] || 0) / n; if (!share) continue;
      const y1 = bottom - acc * (bottom - top), y0 = bottom - (acc + share) * (bottom - top);
      ctx.fillStyle = t[color.slice(2)] ?? t.muted; ctx.fillRect(X(w.from), y0, Math.max(1, X(w.to + 1) - X(w.from) - 1), y1 - y0);
      acc += share;
    }
  }
  for (const v of [0, 0.5, 1]) L.put(`${v * 100}%`, left - px * 0.3, bottom - v * (bottom - top), { align: 'right', color: t.muted, bg: false });
  L.put(`episode ${x0}`, left, H - px * 0.75, { color: t.muted, bg: false });
  L.put(`episode ${x1}`, right, H - px * 0.75, { align: 'right', color: t.muted, bg: false });
  // The legend, two rows above the plot.
  let x = 0, row = 0;
  for (const [, words, color] of ENDING_KINDS) {
    const w = ctx.measureText(words).width + px * 1.8;
    if (x + w > W) { x = 0; row += 1; }
    ctx.fillStyle = t[color.slice(2)]; ctx.fillRect(x + px * 0.2, px * (0.45 + row * 1.4), px * 0.7, px * 0.7);
    L.put(words, x + px * 1.0, px * (0.8 + row * 1.4), { color: t.fg, bg: false });
    x += w;
  }
  record(canvas, L, {});
  const last = ws[ws.length - 1], n = total(last);
  const said = ENDING_KINDS.map(([k, words]) => `${words} ${Math.round(100 * (last[k] || 0) / n)}%`).join(', ');
  canvas.setAttribute('aria-label', `Why episodes ended, episodes ${last.from} to ${last.to}: ${said}`);
}

const ENDINGS = {
  max_steps: { mark: '✓', words: 'reached the cap' },
  meter_depleted: { mark: '✕', words: 'a meter ran out' },
  reset: { mark: '↺', words: 'reset' },
};

// Bars of recent episode lengths. How each ended is shown by colour *and* a mark above the bar
// (✓ cap, ✕ a meter ran out, ↺ reset), and said in the aria-label.
export function drawSurvival(canvas, episodes, cap) {
  const { ctx, t, W, H, px } = begin(canvas);
  canvas.dataset.points = episodes.length;
  const n = 30, recent = episodes.slice(-n), left = ctx.measureText(String(cap)).width + px * 0.9, bw = (W - left - px * 0.5) / n;
  const top = px * 1.3, base = H - px * 1.1, Y = (v) => base - v / cap * (base - top);
  ctx.strokeStyle = t.ok; ctx.setLineDash([px / 3, px / 4]); ctx.beginPath(); ctx.moveTo(left - px * 0.3, Y(cap)); ctx.lineTo(W, Y(cap)); ctx.stroke(); ctx.setLineDash([]);
  ctx.fillStyle = t.muted; ctx.textAlign = 'right'; ctx.textBaseline = 'middle';
  ctx.fillText(String(cap), left - px * 0.5, Y(cap)); ctx.fillText('0', left - px * 0.5, base);
  if (!recent.length) {
    ctx.textAlign = 'center'; ctx.fillText('Each finished episode will appear here as a bar of its length.', (W + left) / 2, H / 2);
    canvas.setAttribute('aria-label', 'Steps survived in recent episodes: none finished yet');
    return;
  }
  recent.forEach((e, i) => {
    const x = left + i * bw, y = Y(Math.min(e.steps, cap));
    ctx.fillStyle = e.reason === 'max_steps' ? t.ok : e.reason === 'reset' ? t.muted : t.bad;
    ctx.fillRect(x, y, Math.max(2, bw - px * 0.25), base - y);
    ctx.fillStyle = t.fg; ctx.textAlign = 'center'; ctx.textBaseline = 'alphabetic';
    ctx.fillText(ENDINGS[e.reason]?.mark ?? '', x + bw / 2, Math.max(top, y - px * 0.2));
  });
  const said = recent.slice(-5).map((e) => `episode ${e.episode}: ${e.steps} steps, ${ENDINGS[e.reason]?.words ?? e.reason}`);
  canvas.setAttribute('aria-label', `Steps survived, last ${said.length} episodes: ${said.join('; ')}`);
}

/// Q-value bars that never mislead: each bar's length is how much better that action is than the
/// worst one, so the best action always has the longest bar — whether the values are negative,
/// or large and close together. All equal: all full. Returns fractions 0..1.
export function qBarFractions(q) {
  const lo = Math.min(...q), hi = Math.max(...q);
  return q.map((v) => (hi - lo > 1e-12 ? (v - lo) / (hi - lo) : 1));
}

/// Sizes a canvas's drawing buffer to its displayed size on this screen; true if it changed.
export function fitCanvas(c) {
  const r = c.getBoundingClientRect(), d = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(r.width * d)), h = Math.max(1, Math.round(r.height * d));
  if (c.width === w && c.height === h) return false;
  c.width = w; c.height = h;
  return true;
}
