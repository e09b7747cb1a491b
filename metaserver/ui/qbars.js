// "Why this action?": one bar per action. A bar's length is how much better the action is than
// the worst one (charts.js `qBarFractions`), so the best action always has the longest bar; the
// exact Q-value is printed beside it, and the gap to the best.
import { ACTIONS } from './draw.js';
import { qBarFractions } from './charts.js';

/// Rows of label, bar, value and gap in `container`; ids are `${prefix}…-i`.
export function buildQBars(container, prefix) {
  container.replaceChildren(...ACTIONS.flatMap((a, i) => {
    const label = document.createElement('span'); label.textContent = a; label.id = `${prefix}l-${i}`;
    const bar = document.createElement('div'); bar.className = 'bar'; bar.id = `${prefix}b-${i}`;
    bar.setAttribute('role', 'meter'); bar.setAttribute('aria-labelledby', label.id);
    const fill = document.createElement('div'); fill.id = `${prefix}-${i}`; fill.style.width = '0'; bar.append(fill);
    const value = document.createElement('span'); value.className = 'num'; value.id = `${prefix}v-${i}`; value.textContent = '–';
    const gap = document.createElement('span'); gap.className = 'num gap'; gap.id = `${prefix}g-${i}`;
    return [label, bar, value, gap];
  }));
}

/// Shows Q-values `q`, `chosen` marked (the action taken; with exploration not always the best).
export function renderQBars(prefix, q, chosen) {
  const hi = Math.max(...q), fr = qBarFractions(q);
  q.forEach((v, i) => {
    const fill = document.getElementById(`${prefix}-${i}`); if (!fill) return;
    // A sliver for the worst, so its bar is still seen to exist.
    fill.style.width = `${(2 + 98 * fr[i]).toFixed(1)}%`;
    const bar = fill.parentElement;
    bar.title = `Q(${ACTIONS[i]}) = ${v.toFixed(4)}`;
    bar.setAttribute('aria-valuenow', String(v));
    bar.setAttribute('aria-valuetext', `${v.toFixed(2)}${v === hi ? ', the best' : `, ${(hi - v).toFixed(2)} below the best`}`);
    document.getElementById(`${prefix}v-${i}`).textContent = v.toFixed(2);
    document.getElementById(`${prefix}g-${i}`).textContent = v === hi ? 'best' : `−${(hi - v).toFixed(2)}`;
    for (const el of [document.getElementById(`${prefix}l-${i}`), bar, document.getElementById(`${prefix}v-${i}`)]) el.classList.toggle('chosen', i === chosen);
  });
}
