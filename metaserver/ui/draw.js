// Canvas drawing: the world with its affordances, the heat map, line and bar charts. Colours of
// the page (background, text, lines) come from the theme's CSS variables.
export const ACTIONS = ['up', 'down', 'left', 'right', 'interact'];

/// The current theme's colours.
function theme() {
  const cs = getComputedStyle(document.documentElement);
  const v = (k) => cs.getPropertyValue(k).trim();
  return { card: v('--card'), fg: v('--fg'), muted: v('--muted'), line: v('--line'), grid: v('--grid-line'),
           agentLine: v('--agent-line'), ok: v('--ok'), bad: v('--bad') };
}
const AFF = {
  Bed:        { color: '#6d28d9', label: 'Bed' },
  Shower:     { color: '#0369a1', label: 'Shower' },
  HomeMeal:   { color: '#15803d', label: 'Meal' },
  FastFood:   { color: '#b45309', label: 'Fast food' },
  Job:        { color: '#374151', label: 'Job' },
  Bar:        { color: '#be123c', label: 'Bar' },
  Recreation: { color: '#0f766e', label: 'Fun' },
};

function icon(ctx, type, cx, cy, s) {
  ctx.save(); ctx.strokeStyle = '#fff'; ctx.fillStyle = '#fff'; ctx.lineWidth = Math.max(1.5, s / 12);
  ctx.beginPath();
  switch (type) {
    case 'Bed': ctx.rect(cx - s*.4, cy - s*.05, s*.8, s*.25); ctx.rect(cx - s*.4, cy - s*.25, s*.25, s*.2); ctx.stroke(); break;
    case 'Shower': for (const dx of [-.2, 0, .2]) { ctx.moveTo(cx + dx*s, cy - s*.1); ctx.lineTo(cx + dx*s - s*.06, cy + s*.25); } ctx.moveTo(cx - s*.3, cy - s*.2); ctx.lineTo(cx + s*.3, cy - s*.2); ctx.stroke(); break;
    case 'HomeMeal': ctx.arc(cx, cy + s*.05, s*.28, 0, Math.PI*2); ctx.stroke(); ctx.beginPath(); ctx.arc(cx, cy + s*.05, s*.12, 0, Math.PI*2); ctx.stroke(); break;
    case 'FastFood': ctx.arc(cx, cy, s*.3, Math.PI, 0); ctx.fill(); ctx.fillRect(cx - s*.3, cy + s*.06, s*.6, s*.08); ctx.fillRect(cx - s*.3, cy + s*.18, s*.6, s*.07); break;
    case 'Job': ctx.rect(cx - s*.32, cy - s*.12, s*.64, s*.38); ctx.rect(cx - s*.12, cy - s*.25, s*.24, s*.13); ctx.stroke(); break;
    case 'Bar': ctx.moveTo(cx - s*.25, cy - s*.25); ctx.lineTo(cx + s*.25, cy - s*.25); ctx.lineTo(cx, cy + s*.05); ctx.closePath(); ctx.moveTo(cx, cy + s*.05); ctx.lineTo(cx, cy + s*.28); ctx.moveTo(cx - s*.15, cy + s*.28); ctx.lineTo(cx + s*.15, cy + s*.28); ctx.stroke(); break;
    default: ctx.arc(cx, cy, s*.26, 0, Math.PI*2); ctx.stroke(); ctx.beginPath(); ctx.moveTo(cx - s*.26, cy); ctx.lineTo(cx + s*.26, cy); ctx.moveTo(cx, cy - s*.26); ctx.lineTo(cx, cy + s*.26); ctx.stroke();
  }
  ctx.restore();
}

export function drawWorld(canvas, u, trail) {
  const ctx = canvas.getContext('2d');
  const w = u?.grid?.width ?? 8, h = u?.grid?.height ?? 8;
  const cs = canvas.width / w, t = theme();
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = t.card; ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = t.grid; ctx.lineWidth = 1;
  for (let i = 0; i <= w; i++) { ctx.beginPath(); ctx.moveTo(i * cs, 0); ctx.lineTo(i * cs, h * cs); ctx.stroke(); }
  for (let j = 0; j <= h; j++) { ctx.beginPath(); ctx.moveTo(0, j * cs); ctx.lineTo(w * cs, j * cs); ctx.stroke(); }
  const affs = u?.grid?.affordances ?? u?.affordances ?? [];
  for (const a of affs) {
    const st = AFF[a.type] ?? { color: '#555', label: a.type };
    ctx.fillStyle = st.color; ctx.beginPath(); ctx.roundRect(a.x * cs + 3, a.y * cs + 3, cs - 6, cs - 6, 6); ctx.fill();
    icon(ctx, a.type, a.x * cs + cs / 2, a.y * cs + cs * .42, cs * .7);
    ctx.fillStyle = '#fff'; ctx.font = `${Math.round(cs * .2)}px system-ui`; ctx.textAlign = 'center';
    ctx.fillText(st.label, a.x * cs + cs / 2, a.y * cs + cs - 6);
  }
  (trail ?? []).forEach((p, i) => {
    ctx.fillStyle = `rgba(37, 99, 235, ${0.08 + 0.25 * i / Math.max(1, trail.length)})`;
    ctx.beginPath(); ctx.arc(p.x * cs + cs / 2, p.y * cs + cs / 2, cs * .12, 0, Math.PI * 2); ctx.fill();
  });
  for (const ag of u?.grid?.agents ?? u?.agents ?? []) {
    ctx.fillStyle = ag.color ?? '#3b82f6'; ctx.strokeStyle = t.agentLine; ctx.lineWidth = Math.max(2, cs * .05);
    ctx.beginPath(); ctx.arc(ag.x * cs + cs / 2, ag.y * cs + cs / 2, cs * .3, 0, Math.PI * 2); ctx.fill(); ctx.stroke();
  }
}

export function drawHeat(canvas, heat, affordances) {
  const ctx = canvas.getContext('2d'); const cs = canvas.width / 8, t = theme();
  ctx.fillStyle = t.card; ctx.fillRect(0, 0, canvas.width, canvas.height);
  for (let y = 0; y < 8; y++) for (let x = 0; x < 8; x++) {
    const v = heat?.[`${x},${y}`] ?? 0;
    ctx.fillStyle = `rgba(220, 38, 38, ${v})`; ctx.fillRect(x * cs, y * cs, cs, cs);
  }
  ctx.strokeStyle = t.grid;
  for (let i = 0; i <= 8; i++) { ctx.beginPath(); ctx.moveTo(i * cs, 0); ctx.lineTo(i * cs, 8 * cs); ctx.moveTo(0, i * cs); ctx.lineTo(8 * cs, i * cs); ctx.stroke(); }
  const visited = Object.keys(heat ?? {}).length;
  canvas.setAttribute('aria-label', `Visit heat map: ${visited} of 64 cells visited so far`);
  for (const a of affordances ?? []) {
    const st = AFF[a.type] ?? { color: '#555', label: a.type };
    ctx.strokeStyle = st.color; ctx.lineWidth = 3; ctx.strokeRect(a.x * cs + 2, a.y * cs + 2, cs - 4, cs - 4);
    ctx.fillStyle = t.fg; ctx.font = `${Math.round(cs * .22)}px system-ui`; ctx.textAlign = 'center';
    ctx.fillText(st.label, a.x * cs + cs / 2, a.y * cs + cs / 2 + 4);
  }
}

function movingAverage(v, n) {
  const out = []; let s = 0;
  v.forEach((x, i) => { s += x; if (i >= n) s -= v[i - n]; out.push(s / Math.min(i + 1, n)); });
  return out;
}

/// TensorBoard's smoothing: an exponential moving average with weight `w`, debiased so the
/// first points are not pulled towards zero.
export function ema(ys, w) {
  const out = []; let last = 0, n = 0;
  for (const y of ys) { last = last * w + (1 - w) * y; n += 1; out.push(w > 0 ? last / (1 - w ** n) : y); }
  return out;
}

// A line chart of (x, y) points and their smoothed line (EMA weight `smooth`, or a moving average
// of `avg`); dashed reference lines (`refs`); the previous run as a faint `overlay`. Keeps
// `canvas.dataset.points` for tests and a text alternative in its aria-label. An empty chart says
// what will appear.
export function drawLine(canvas, xs, ys, { color = '#1d4ed8', avg = 10, smooth, label = '', empty = 'will appear here when a run starts', refs = [], overlay } = {}) {
  const ctx = canvas.getContext('2d'); const W = canvas.width, H = canvas.height, pad = 40, t = theme();
  ctx.clearRect(0, 0, W, H); ctx.fillStyle = t.card; ctx.fillRect(0, 0, W, H);
  canvas.dataset.points = ys.length;
  ctx.fillStyle = t.muted; ctx.font = '12px system-ui';
  if (!ys.length) {
    ctx.textAlign = 'center'; ctx.fillText(`${label} of each episode ${empty}`, W / 2, H / 2);
    canvas.setAttribute('aria-label', `${label}: no episodes yet`);
    return;
  }
  const oys = overlay?.ys ?? [], oxs = overlay?.xs ?? [];
  const all = [...ys, ...oys, ...refs.map((r) => r.value)];
  let lo = Math.min(...all), hi = Math.max(...all); if (hi === lo) { hi += 1; lo -= 1; }
  const x0 = Math.min(xs[0], oxs[0] ?? xs[0]), x1 = Math.max(xs[xs.length - 1], oxs[oxs.length - 1] ?? 0, x0 + 1);
  const X = (x) => pad + (x - x0) / (x1 - x0) * (W - pad - 8), Y = (y) => H - 16 - (y - lo) / (hi - lo) * (H - 26);
  ctx.textAlign = 'right'; ctx.fillText(hi.toPrecision(3), pad - 3, 12); ctx.fillText(lo.toPrecision(3), pad - 3, H - 16);
  ctx.textAlign = 'left'; ctx.fillText(`ep ${x0}`, pad, H - 3); ctx.textAlign = 'right'; ctx.fillText(`ep ${x1}`, W - 8, H - 3);
  for (const r of refs) {
    ctx.strokeStyle = t.muted; ctx.setLineDash([5, 4]); ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(pad, Y(r.value)); ctx.lineTo(W - 8, Y(r.value)); ctx.stroke(); ctx.setLineDash([]);
    ctx.fillStyle = t.muted; ctx.textAlign = 'left'; ctx.fillText(r.label, pad + 4, Y(r.value) - 3);
  }
  const line = (px, py, style, width) => {
    ctx.strokeStyle = style; ctx.lineWidth = width; ctx.beginPath();
    py.forEach((y, i) => (i ? ctx.lineTo(X(px[i]), Y(y)) : ctx.moveTo(X(px[i]), Y(y)))); ctx.stroke();
  };
  if (oys.length) line(oxs, smooth != null ? ema(oys, smooth) : oys, t.line, 1.5);
  line(xs, ys, color + '55', 1);
  const sm = smooth != null ? ema(ys, smooth) : movingAverage(ys, avg);
  line(xs, sm, color, 2.2);
  const last = ys[ys.length - 1].toPrecision(4), mean = sm[sm.length - 1].toPrecision(4);
  const how = smooth != null ? `smoothed ${smooth}` : `avg${avg}`;
  ctx.fillStyle = t.fg; ctx.textAlign = 'right';
  ctx.fillText(`${label}: last ${last} · ${how} ${mean}`, W - 8, 12);
  canvas.setAttribute('aria-label', `${label} over episodes ${xs[0]} to ${xs[xs.length - 1]}: last ${last}, ${how} ${mean}, lowest ${Math.min(...ys).toPrecision(4)}, highest ${Math.max(...ys).toPrecision(4)}`);
}

const ENDINGS = {
  max_steps: { mark: '✓', words: 'reached the cap' },
  meter_depleted: { mark: '✕', words: 'a meter ran out' },
  reset: { mark: '↺', words: 'reset' },
};

// Bars of recent episode lengths. How each ended is shown by colour *and* a mark above the bar
// (✓ cap, ✕ a meter ran out, ↺ reset), and said in the aria-label.
export function drawSurvival(canvas, episodes, cap) {
  const ctx = canvas.getContext('2d'); const W = canvas.width, H = canvas.height, t = theme();
  const d = window.devicePixelRatio || 1;
  ctx.clearRect(0, 0, W, H); ctx.fillStyle = t.card; ctx.fillRect(0, 0, W, H);
  canvas.dataset.points = episodes.length;
  const n = 30, recent = episodes.slice(-n), left = 34 * d, bw = (W - left - 6 * d) / n;
  const top = 16 * d, Y = (v) => H - 14 * d - v / cap * (H - 14 * d - top);
  ctx.font = `${Math.round(11 * d)}px system-ui`;
  ctx.strokeStyle = t.ok; ctx.setLineDash([4 * d, 3 * d]); ctx.beginPath(); ctx.moveTo(left - 4 * d, Y(cap)); ctx.lineTo(W, Y(cap)); ctx.stroke(); ctx.setLineDash([]);
  ctx.fillStyle = t.muted; ctx.textAlign = 'right'; ctx.fillText(String(cap), left - 7 * d, Y(cap) + 4 * d); ctx.fillText('0', left - 7 * d, H - 14 * d);
  if (!recent.length) {
    ctx.textAlign = 'center'; ctx.fillText('Each finished episode will appear here as a bar of its length.', (W + left) / 2, H / 2);
    canvas.setAttribute('aria-label', 'Steps survived in recent episodes: none finished yet');
    return;
  }
  recent.forEach((e, i) => {
    const x = left + i * bw, y = Y(e.steps);
    ctx.fillStyle = e.reason === 'max_steps' ? t.ok : e.reason === 'reset' ? t.muted : t.bad;
    ctx.fillRect(x, y, Math.max(2, bw - 3 * d), H - 14 * d - y);
    ctx.fillStyle = t.fg; ctx.textAlign = 'center';
    ctx.fillText(ENDINGS[e.reason]?.mark ?? '', x + bw / 2, Math.max(top - 3 * d, y - 3 * d));
  });
  const said = recent.slice(-5).map((e) => `episode ${e.episode}: ${e.steps} steps, ${ENDINGS[e.reason]?.words ?? e.reason}`);
  canvas.setAttribute('aria-label', `Steps survived, last ${said.length} episodes: ${said.join('; ')}`);
}
