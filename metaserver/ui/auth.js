// The secrets this browser holds, kept per browser (localStorage), not per tab: a teacher who
// starts a run in one tab and projects from another keeps control in both.
// - The admin token (the server's --admin-token), entered once with the Teacher button: it makes
//   this browser an operator — the Workers view and every training run's controls.
// - The control token of the training run this browser started (or took over).

const ADMIN = 'hamlet-admin-token';
const CONTROL = 'hamlet-control-token';

export const adminToken = () => localStorage.getItem(ADMIN) || null;
export function setAdminToken(t) {
  if (t) localStorage.setItem(ADMIN, t); else localStorage.removeItem(ADMIN);
  window.dispatchEvent(new Event('hamlet-admin'));
}

export const controlToken = () => localStorage.getItem(CONTROL) || null;
export function setControlToken(t) {
  if (t) localStorage.setItem(CONTROL, t); else localStorage.removeItem(CONTROL);
}

/// Headers for the operator endpoints.
export function authHeaders() {
  const t = adminToken();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

/// Wires the Teacher button and its small form in the page header.
export function setupTeacher(app) {
  const $ = (id) => document.getElementById(id);
  const show = () => {
    $('teacher-state').textContent = adminToken()
      ? 'This browser holds the admin token: the server confirms it when you open the Training view.'
      : 'No admin token on this browser. (On the server machine itself you are an operator anyway, unless it runs with --loopback-is-operator false.)';
    $('btn-teacher').setAttribute('aria-pressed', String(Boolean(adminToken())));
  };
  $('btn-teacher').onclick = () => { $('teacher-box').hidden = !$('teacher-box').hidden; show(); if (!$('teacher-box').hidden) $('admin-token').focus(); };
  $('teacher-form').onsubmit = (e) => {
    e.preventDefault();
    setAdminToken($('admin-token').value.trim());
    $('admin-token').value = '';
    show();
    app.toast('Admin token kept on this browser.', 'info');
  };
  $('btn-forget').onclick = () => { setAdminToken(null); show(); };
  show();
}
