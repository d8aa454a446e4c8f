'use strict';
// The login form, and the one-time link `ccs config` opens (its token is in the fragment, so
// it never reaches a server log). Both trade what they hold for a session cookie.
(function () {
  const form = document.getElementById('login-form');
  const error = document.getElementById('login-error');

  async function login(body) {
    const r = await fetch('/dashboard/login', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (r.ok) {
      history.replaceState(null, '', '/dashboard#accounts');
      location.reload();
      return;
    }
    const j = await r.json().catch(() => ({}));
    error.textContent = j.error || ('login failed (HTTP ' + r.status + ')');
  }

  const m = location.hash.match(/^#link=([A-Za-z0-9_-]+)$/);
  if (m) {
    history.replaceState(null, '', '/dashboard');
    document.getElementById('via-link').hidden = false;
    login({ link: m[1] });
  }
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    error.textContent = '';
    login({ secret: document.getElementById('secret').value });
  });
})();
