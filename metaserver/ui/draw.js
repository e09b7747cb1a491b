// Canvas drawing of the world: the grid with its affordances and the agent, and the visit heat
// map. Charts are in charts.js. Colours of the page come from the theme's CSS variables.
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

/// Each affordance's colour on the grid (also used for it in "Inside the agent").
export const AFF_COLORS = Object.fromEntries(Object.entries(AFF).map(([k, v]) => [k, v.color]));

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

/// The world of state_update `u`, the agent's recent `trail`, and (for "what if") a `ghost`: the
/// cell being probed, drawn as a dashed agent.
export function drawWorld(canvas, u, trail, ghost) {
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
    ctx.globalAlpha = ghost ? 0.35 : 1;
    ctx.fillStyle = ag.color ?? '#3b82f6'; ctx.strokeStyle = t.agentLine; ctx.lineWidth = Math.max(2, cs * .05);
    ctx.beginPath(); ctx.arc(ag.x * cs + cs / 2, ag.y * cs + cs / 2, cs * .3, 0, Math.PI * 2); ctx.fill(); ctx.stroke();
    ctx.globalAlpha = 1;
  }
  if (ghost) {
    ctx.fillStyle = '#3b82f6'; ctx.strokeStyle = t.agentLine; ctx.lineWidth = Math.max(2, cs * .05); ctx.setLineDash([cs * .08, cs * .06]);
    ctx.beginPath(); ctx.arc(ghost.x * cs + cs / 2, ghost.y * cs + cs / 2, cs * .3, 0, Math.PI * 2); ctx.fill(); ctx.stroke(); ctx.setLineDash([]);
  }
}

/// The grid cell under a click on the canvas, or null.
export function cellAt(canvas, ev) {
  const r = canvas.getBoundingClientRect();
  const x = Math.floor((ev.clientX - r.left) / r.width * 8), y = Math.floor((ev.clientY - r.top) / r.height * 8);
  return x >= 0 && x < 8 && y >= 0 && y < 8 ? { x, y } : null;
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
