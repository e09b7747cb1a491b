// Canvas drawing: the world with its affordances, the heat map, line and bar charts.
export const ACTIONS = ['up', 'down', 'left', 'right', 'interact'];
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
  const cs = canvas.width / w;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = '#ffffff'; ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = '#d6d9de'; ctx.lineWidth = 1;
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
    ctx.fillStyle = ag.color ?? '#3b82f6'; ctx.strokeStyle = '#0b1220'; ctx.lineWidth = 3;
    ctx.beginPath(); ctx.arc(ag.x * cs + cs / 2, ag.y * cs + cs / 2, cs * .3, 0, Math.PI * 2); ctx.fill(); ctx.stroke();
  }
}

export function drawHeat(canvas, heat, affordances) {
  const ctx = canvas.getContext('2d'); const cs = canvas.width / 8;
  ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, canvas.width, canvas.height);
  for (let y = 0; y < 8; y++) for (let x = 0; x < 8; x++) {
    const v = heat?.[`${x},${y}`] ?? 0;
    ctx.fillStyle = `rgba(220, 38, 38, ${v})`; ctx.fillRect(x * cs, y * cs, cs, cs);
  }
  ctx.strokeStyle = '#d6d9de';
  for (let i = 0; i <= 8; i++) { ctx.beginPath(); ctx.moveTo(i * cs, 0); ctx.lineTo(i * cs, 8 * cs); ctx.moveTo(0, i * cs); ctx.lineTo(8 * cs, i * cs); ctx.stroke(); }
  for (const a of affordances ?? []) {
    const st = AFF[a.type] ?? { color: '#555', label: a.type };
    ctx.strokeStyle = st.color; ctx.lineWidth = 3; ctx.strokeRect(a.x * cs + 2, a.y * cs + 2, cs - 4, cs - 4);
    ctx.fillStyle = '#1d232b'; ctx.font = `${Math.round(cs * .22)}px system-ui`; ctx.textAlign = 'center';
    ctx.fillText(st.label, a.x * cs + cs / 2, a.y * cs + cs / 2 + 4);
  }
}

function movingAverage(v, n) {
  const out = []; let s = 0;
  v.forEach((x, i) => { s += x; if (i >= n) s -= v[i - n]; out.push(s / Math.min(i + 1, n)); });
  return out;
}

// A line chart of (x, y) points with a moving average; keeps `canvas.dataset.points` for tests.
export function drawLine(canvas, xs, ys, { color = '#1d4ed8', avg = 10, label = '' } = {}) {
  const ctx = canvas.getContext('2d'); const W = canvas.width, H = canvas.height, pad = 34;
  ctx.clearRect(0, 0, W, H); ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, W, H);
  canvas.dataset.points = ys.length;
  ctx.fillStyle = '#4a5563'; ctx.font = '11px system-ui';
  if (!ys.length) { ctx.fillText('waiting for episodes…', pad, H / 2); return; }
  let lo = Math.min(...ys), hi = Math.max(...ys); if (hi === lo) { hi += 1; lo -= 1; }
  const x0 = xs[0], x1 = Math.max(xs[xs.length - 1], x0 + 1);
  const X = (x) => pad + (x - x0) / (x1 - x0) * (W - pad - 8), Y = (y) => H - 16 - (y - lo) / (hi - lo) * (H - 26);
  ctx.textAlign = 'right'; ctx.fillText(hi.toPrecision(3), pad - 3, 12); ctx.fillText(lo.toPrecision(3), pad - 3, H - 16);
  ctx.textAlign = 'left'; ctx.fillText(`ep ${x0}`, pad, H - 3); ctx.textAlign = 'right'; ctx.fillText(`ep ${xs[xs.length - 1]}`, W - 8, H - 3);
  if (lo < 0 && hi > 0) { ctx.strokeStyle = '#c9cdd3'; ctx.beginPath(); ctx.moveTo(pad, Y(0)); ctx.lineTo(W - 8, Y(0)); ctx.stroke(); }
  ctx.strokeStyle = color + '66'; ctx.lineWidth = 1; ctx.beginPath();
  ys.forEach((y, i) => (i ? ctx.lineTo(X(xs[i]), Y(y)) : ctx.moveTo(X(xs[i]), Y(y)))); ctx.stroke();
  const ma = movingAverage(ys, avg);
  ctx.strokeStyle = color; ctx.lineWidth = 2.2; ctx.beginPath();
  ma.forEach((y, i) => (i ? ctx.lineTo(X(xs[i]), Y(y)) : ctx.moveTo(X(xs[i]), Y(y)))); ctx.stroke();
  ctx.fillStyle = '#1d232b'; ctx.textAlign = 'left';
  ctx.textAlign = 'right';
  ctx.fillText(`${label}: last ${ys[ys.length - 1].toPrecision(4)} · avg${avg} ${ma[ma.length - 1].toPrecision(4)}`, W - 8, 12);
}

// Bars of recent episode lengths, coloured by how the episode ended.
export function drawSurvival(canvas, episodes, cap) {
  const ctx = canvas.getContext('2d'); const W = canvas.width, H = canvas.height;
  ctx.clearRect(0, 0, W, H); ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, W, H);
  canvas.dataset.points = episodes.length;
  const n = 30, recent = episodes.slice(-n), bw = (W - 40) / n;
  const Y = (v) => H - 14 - v / cap * (H - 24);
  ctx.strokeStyle = '#15803d'; ctx.setLineDash([4, 3]); ctx.beginPath(); ctx.moveTo(30, Y(cap)); ctx.lineTo(W, Y(cap)); ctx.stroke(); ctx.setLineDash([]);
  ctx.fillStyle = '#4a5563'; ctx.font = '11px system-ui'; ctx.textAlign = 'right'; ctx.fillText(String(cap), 27, Y(cap) + 4); ctx.fillText('0', 27, H - 14);
  recent.forEach((e, i) => {
    ctx.fillStyle = e.reason === 'max_steps' ? '#15803d' : e.reason === 'reset' ? '#6b7280' : '#b91c1c';
    ctx.fillRect(34 + i * bw, Y(e.steps), Math.max(2, bw - 3), H - 14 - Y(e.steps));
  });
  if (!recent.length) { ctx.textAlign = 'left'; ctx.fillText('no finished episode yet', 40, H / 2); }
}
