// A model as people name it: when it was trained and what it achieved, the file name second —
// "trained 14:32 · survives 500 steps · return 1040 — dqn-qnetwork-….onnx".

/// `d`: a `/api/models` details row.
export function modelLabel(d) {
  const parts = [];
  if (d.created) {
    const t = new Date(d.created);
    const today = new Date().toDateString() === t.toDateString();
    const hm = t.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    parts.push(`trained ${today ? hm : `${t.toLocaleDateString()} ${hm}`}`);
  }
  if (d.room) parts.push(`room ${d.room}`);
  if (d.greedy_steps != null) parts.push(`survives ${d.greedy_steps} steps`);
  if (d.greedy_return != null) parts.push(`return ${Math.round(d.greedy_return)}`);
  if (!parts.length && d.arch) parts.push(d.arch);
  return parts.length ? `${parts.join(' · ')} — ${d.name}` : d.name;
}
