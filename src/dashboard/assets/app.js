'use strict';
// The dashboard's pages. Everything comes from the management API (`/v0/management/*`, the
// shapes of src/api.rs) with the session cookie; every change carries the CSRF token. Text
// from the daemon is only ever set as text, never as markup.
(function () {
  const API = '/v0/management';
  let csrf = '';
  let accounts = [];
  let span = '24h';

  // ---- helpers -------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  async function api(method, path, body) {
    const opt = { method, credentials: 'same-origin', headers: {} };
    if (method !== 'GET') opt.headers['X-CSRF-Token'] = csrf;
    if (body !== undefined) {
      opt.headers['Content-Type'] = 'application/json';
      opt.body = JSON.stringify(body);
    }
    const r = await fetch(API + path, opt);
    const j = await r.json().catch(() => ({}));
    if (r.status === 401) location.reload();
    if (!r.ok) throw new Error(j.error || ('HTTP ' + r.status));
    return j;
  }

  function notice(text, bad) {
    const n = document.getElementById('notice');
    n.textContent = text;
    n.className = bad ? 'notice error' : 'notice';
  }

  async function act(what, fn) {
    try {
      await fn();
      notice(what);
      await loadAccounts();
    } catch (e) {
      notice(e.message, true);
    }
  }

  const seg = (s) => encodeURIComponent(s);

  // A table body's rows, or one row saying there is nothing yet.
  function fill(tbodySel, rowsList, columns) {
    const tbody = document.querySelector(tbodySel);
    if (rowsList.length === 0) {
      tbody.replaceChildren(el('tr', { class: 'none' }, el('td', { colspan: String(columns), text: 'nothing yet' })));
    } else {
      tbody.replaceChildren(...rowsList);
    }
  }

  function bytes(n) {
    if (n < 1024 * 1024) return (n / 1024).toFixed(0) + ' KiB';
    return (n / 1048576).toFixed(1) + ' MiB';
  }
  const fmt = (n) => Number(n || 0).toLocaleString('en-US');

  // "in 2h 13m" from an RFC 3339 time.
  function until(t) {
    if (!t) return '';
    let s = Math.round((Date.parse(t) - Date.now()) / 1000);
    if (s <= 0) return 'now';
    const d = Math.floor(s / 86400); s %= 86400;
    const h = Math.floor(s / 3600); s %= 3600;
    const m = Math.floor(s / 60);
    if (d > 0) return 'in ' + d + 'd ' + h + 'h';
    if (h > 0) return 'in ' + h + 'h ' + m + 'm';
    return 'in ' + Math.max(m, 1) + 'm';
  }

  function clock(t) {
    const d = new Date(t);
    return isNaN(d) ? t : d.toLocaleTimeString();
  }

  function bar(label, w, cls) {
    const u = w ? w.utilization : null;
    const pct = u === null ? 0 : Math.round(Math.min(Math.max(u, 0), 1) * 100);
    const level = pct >= 95 ? 'high' : pct >= 80 ? 'mid' : 'low';
    const fill = el('div', { class: 'fill ' + level });
    // Through the CSSOM: the page's policy refuses style attributes.
    fill.style.width = pct + '%';
    return el('div', { class: 'bar ' + cls },
      el('span', { class: 'bar-label', text: label }),
      el('div', {
        class: 'track', role: 'progressbar', 'aria-label': label + ' used',
        'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': String(pct),
        'data-utilization': u === null ? '' : String(u),
      }, fill),
      el('span', { class: 'bar-value', text: u === null ? '?' : pct + '%' }),
      el('span', { class: 'bar-reset', text: w && w.resets_at ? 'resets ' + until(w.resets_at) : '' }));
  }

  // ---- accounts ------------------------------------------------------------------------

  async function loadAccounts() {
    accounts = (await api('GET', '/accounts')).accounts;
    renderAccounts();
    const q = await api('GET', '/quota?pool=claude');
    const runway = document.getElementById('runway');
    runway.textContent = q.runway ? 'Runway: ' + q.runway.text : '';
    const soon = q.runway && q.runway.seconds !== null && q.runway.seconds < 3600;
    runway.dataset.state = soon ? 'soon' : '';
  }

  function ordered() {
    const inPool = accounts.filter((a) => a.position).sort((a, b) => a.position - b.position);
    return inPool.concat(accounts.filter((a) => !a.position));
  }

  async function move(a, by) {
    const order = ordered().filter((x) => x.position).map((x) => x.email);
    const i = order.indexOf(a.email);
    const j = i + by;
    if (i < 0 || j < 0 || j >= order.length) return;
    [order[i], order[j]] = [order[j], order[i]];
    await act('order saved', () => api('PUT', '/pools/claude', { accounts: order }));
  }

  // The authority's page opens in a new tab (opened now, while the click still counts as
  // the person's, and pointed at the authority once the daemon has made the login); this tab
  // stays logged in and shows the new account when the daemon announces it.
  async function startLogin() {
    const tab = window.open('', '_blank');
    try {
      const r = await api('POST', '/login/start');
      if (tab) {
        tab.opener = null;
        tab.location.href = r.url;
        notice('Finish the login in the new tab; the account shows up here when it is done.');
      } else {
        location.href = r.url;
      }
    } catch (e) {
      if (tab) tab.close();
      notice(e.message, true);
    }
  }

  function renderAccounts() {
    const list = document.getElementById('accounts');
    list.replaceChildren();
    if (accounts.length === 0) {
      list.append(el('li', { class: 'empty' }, 'No account is logged in yet: use "Log in a new account".'));
      return;
    }
    const order = ordered();
    const last = order.filter((x) => x.position).length;
    for (const a of order) {
      const tags = el('span', { class: 'tags' },
        el('span', { class: 'state state-' + a.state, text: a.state }),
        a.paused ? el('span', { class: 'tag', text: 'paused' }) : null,
        a.default ? el('span', { class: 'tag', text: 'default' }) : null,
        a.plan ? el('span', { class: 'tag', text: a.plan }) : null);
      const card = el('li', {
        class: 'card', 'data-account': a.email, 'data-state': a.state,
        'data-paused': String(a.paused), 'data-position': a.position ? String(a.position) : '',
      },
      el('div', { class: 'card-head' },
        el('span', { class: 'pos', text: a.position ? '#' + a.position : '–', title: 'place in the pool' }),
        el('strong', { class: 'nick', text: a.nickname }),
        el('span', { class: 'email', text: a.email }), tags),
      bar('5-hour', a.five_hour, 'bar-5h'),
      bar('weekly', a.seven_day, 'bar-7d'),
      a.cooldown_until ? el('p', { class: 'cooldown', text: 'limited: back ' + until(a.cooldown_until) }) : null,
      a.fix ? el('p', { class: 'fix', text: a.fix }) : null,
      el('div', { class: 'actions' },
        el('button', { type: 'button', class: 'quiet up', 'aria-label': 'move ' + a.nickname + ' up',
          disabled: !a.position || a.position === 1, onclick: () => move(a, -1) }, '↑'),
        el('button', { type: 'button', class: 'quiet down', 'aria-label': 'move ' + a.nickname + ' down',
          disabled: !a.position || a.position === last, onclick: () => move(a, 1) }, '↓'),
        a.paused
          ? el('button', { type: 'button', class: 'resume', onclick: () => act(a.email + ' takes traffic again',
            () => api('POST', '/accounts/' + seg(a.email) + '/resume')) }, 'Resume')
          : el('button', { type: 'button', class: 'pause', onclick: () => act(a.email + ' is paused',
            () => api('POST', '/accounts/' + seg(a.email) + '/pause')) }, 'Pause'),
        a.default ? null : el('button', { type: 'button', class: 'default', onclick: () => act(a.email + ' is the default',
          () => api('POST', '/accounts/' + seg(a.email) + '/default')) }, 'Make default'),
        el('button', { type: 'button', class: 'rename', onclick: () => {
          const name = prompt('New nickname for ' + a.email, a.nickname);
          if (name) act('renamed', () => api('POST', '/accounts/' + seg(a.email) + '/rename', { nickname: name }));
        } }, 'Rename'),
        a.state === 'dead' ? el('button', { type: 'button', class: 'relogin', onclick: startLogin }, 'Log in again') : null,
        el('button', { type: 'button', class: 'danger logout', onclick: () => {
          if (confirm('Log out ' + a.email + '? Its token is deleted.')) {
            act(a.email + ' logged out', () => api('DELETE', '/accounts/' + seg(a.email)));
          }
        } }, 'Log out')));
      list.append(card);
    }
  }

  // ---- live ----------------------------------------------------------------------------

  const LIVE_ROWS = 200;

  function liveRow(ev) {
    const tbody = document.querySelector('#live tbody');
    let row;
    if (ev.kind === 'changed') {
      row = el('tr', { class: 'changed', 'data-kind': 'changed' },
        el('td', { text: clock(ev.at) }), el('td', { text: ev.what }), el('td'), el('td'),
        el('td', { text: ev.account }), el('td'), el('td'), el('td'), el('td'));
    } else if (ev.kind === 'hop') {
      row = el('tr', { class: 'hop', 'data-kind': 'hop', 'data-session': ev.session },
        el('td', { text: clock(ev.at) }),
        el('td', { text: 'hop: ' + ev.reason }),
        el('td'),
        el('td', { class: 'mono', text: ev.session.slice(0, 8) }),
        el('td', { text: ev.from + ' → ' + ev.to }),
        el('td'), el('td'), el('td'), el('td'));
    } else {
      const t = ev.tokens;
      row = el('tr', { 'data-kind': 'request', 'data-account': ev.account || '', class: ev.status >= 400 ? 'bad' : '' },
        el('td', { text: clock(ev.at) }),
        el('td', { text: (ev.hops ? 'request (after ' + ev.hops + ' hop' + (ev.hops > 1 ? 's' : '') + ')' : 'request') +
          (ev.fitted ? ' · fitted: ' + ev.fitted.blocks_removed + ' thinking block' + (ev.fitted.blocks_removed === 1 ? '' : 's') + ' removed' +
            (ev.fitted.thinking_lowered ? ', thinking off' : '') : '') +
          (ev.thinking_dropped ? ' · the API dropped ' + ev.thinking_dropped + ' thinking block' + (ev.thinking_dropped === 1 ? '' : 's') : '') }),
        el('td', { text: ev.client || '–' }),
        el('td', { class: 'mono', text: (ev.session || '').slice(0, 8) }),
        el('td', { text: ev.account || '–' }),
        el('td', { text: ev.model || '–' }),
        el('td', { text: String(ev.status) }),
        el('td', { text: ev.latency_ms + ' ms' }),
        el('td', { text: t ? fmt(t.input) + ' in / ' + fmt(t.output) + ' out' : '' }));
    }
    tbody.prepend(row);
    while (tbody.rows.length > LIVE_ROWS) tbody.deleteRow(-1);
  }

  let refreshSoon = null;
  function connect() {
    const feed = document.getElementById('feed');
    const src = new EventSource(API + '/live');
    src.onopen = () => { feed.textContent = '● live'; feed.className = 'feed on'; };
    src.onerror = () => { feed.textContent = '○ reconnecting'; feed.className = 'feed'; };
    src.onmessage = (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch (_) { return; }
      liveRow(ev);
      // Figures moved: refresh the page in view, at most once a second.
      if (!refreshSoon) {
        refreshSoon = setTimeout(() => { refreshSoon = null; refresh(false); }, 1000);
      }
    };
  }

  // ---- usage ---------------------------------------------------------------------------

  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    return e;
  }

  function chart(hours) {
    const W = 720, H = 220, P = 30;
    const max = Math.max(1, ...hours.map((h) => h.tokens.input + h.tokens.output + h.tokens.cache_read + h.tokens.cache_creation));
    const bw = (W - P) / hours.length;
    const root = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': 'tokens per hour', class: 'bars' });
    root.append(svg('line', { x1: P, y1: H - 20, x2: W, y2: H - 20, class: 'axis' }));
    const top = svg('text', { x: 0, y: 12, class: 'label' });
    top.textContent = fmt(max);
    root.append(top);
    hours.forEach((h, i) => {
      let y = H - 20;
      const parts = [['input', h.tokens.input], ['output', h.tokens.output], ['cache', h.tokens.cache_read + h.tokens.cache_creation]];
      for (const [cls, n] of parts) {
        const hh = (n / max) * (H - 40);
        if (hh <= 0) continue;
        y -= hh;
        const r = svg('rect', { x: P + i * bw + 1, y, width: Math.max(bw - 2, 1), height: hh, class: cls });
        const tip = svg('title', {});
        tip.textContent = clock(h.at) + ': ' + fmt(n) + ' ' + cls;
        r.append(tip);
        root.append(r);
      }
      if (i % Math.ceil(hours.length / 8) === 0) {
        const t = svg('text', { x: P + i * bw, y: H - 4, class: 'label' });
        const d = new Date(h.at);
        t.textContent = span === '24h' ? d.getHours() + ':00' : (d.getMonth() + 1) + '/' + d.getDate();
        root.append(t);
      }
    });
    return root;
  }

  function rows(tbodySel, list) {
    fill(tbodySel, list.map((r) => el('tr', { 'data-name': r.name },
      el('td', { text: r.name }), el('td', { text: fmt(r.tokens.requests) }),
      el('td', { text: fmt(r.tokens.input) }), el('td', { text: fmt(r.tokens.output) }),
      el('td', { text: fmt(r.tokens.cache_read) }), el('td', { text: fmt(r.tokens.cache_creation) }))), 6);
  }

  async function loadUsage() {
    const u = await api('GET', '/usage?span=' + span);
    const total = document.getElementById('usage-total');
    total.textContent = fmt(u.total.requests) + (u.total.requests === 1 ? ' request, ' : ' requests, ') + fmt(u.total.input) + ' input, ' +
      fmt(u.total.output) + ' output, ' + fmt(u.total.cache_read + u.total.cache_creation) + ' cache tokens';
    total.dataset.input = String(u.total.input);
    total.dataset.output = String(u.total.output);
    total.dataset.requests = String(u.total.requests);
    document.getElementById('usage-chart').replaceChildren(chart(u.hours));
    rows('#usage-accounts tbody', u.by_account);
    rows('#usage-models tbody', u.by_model);
    rows('#usage-clients tbody', u.by_client);
    accounts = (await api('GET', '/accounts')).accounts;
    const pct = (w) => (w ? Math.round(w.utilization * 100) + '%' : '?');
    fill('#usage-windows tbody', ordered().map((a) => el('tr', {},
      el('td', { text: a.nickname }), el('td', { text: pct(a.five_hour) }),
      el('td', { text: a.five_hour && a.five_hour.resets_at ? until(a.five_hour.resets_at) : '' }),
      el('td', { text: pct(a.seven_day) }),
      el('td', { text: a.seven_day && a.seven_day.resets_at ? until(a.seven_day.resets_at) : '' }))), 5);
  }

  // ---- health --------------------------------------------------------------------------

  async function loadHealth() {
    const s = await api('GET', '/status');
    const up = s.uptime_secs;
    const facts = [
      ['version', s.version], ['listening on', s.url], ['pid', s.pid],
      ['uptime', Math.floor(up / 3600) + 'h ' + Math.floor((up % 3600) / 60) + 'm ' + (up % 60) + 's'],
      ['accounts', s.accounts + ' (' + Object.entries(s.by_state).map(([k, v]) => v + ' ' + k).join(', ') + (s.paused ? ', ' + s.paused + ' paused' : '') + ')'],
      ['conversations', s.sessions], ['last hour', s.requests_last_hour + ' requests, ' + s.hops_last_hour + ' hops'],
      ['store', bytes(s.store_bytes)],
    ];
    for (const n of s.store_notes) facts.push(['at start', n]);
    const st = s.store || { backend: 'sled' };
    facts.push(['store backend', st.backend === 'redis'
      ? 'redis at ' + st.redis_url + (st.reachable === false ? ' (UNREACHABLE: serving from this daemon\'s copy, no refreshes)' : '')
      : 'sled (this daemon alone)']);
    for (const p of st.peers || []) facts.push(['peer', p.id + ' at ' + p.url + (p.me ? ' (this daemon)' : '')]);
    for (const l of st.leases || []) facts.push(['refresh lease', l.account + ': daemon ' + l.daemon + ', ' + Math.ceil(l.expires_in_ms / 1000) + ' s left']);
    document.getElementById('health').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: String(v) })]));
    fill('#refreshes tbody', s.refreshes.slice().reverse().map((r) => el('tr', { class: r.outcome === 'ok' ? '' : 'bad', 'data-outcome': r.outcome },
      el('td', { text: clock(r.at) }), el('td', { text: r.account }), el('td', { text: r.outcome }), el('td', { text: r.millis + ' ms' }))), 4);
    fill('#errors tbody', s.errors.slice().reverse().map((r) => el('tr', {},
      el('td', { text: clock(r.at) }), el('td', { text: r.level }), el('td', { class: 'mono', text: r.message }))), 3);
  }

  // ---- pages ---------------------------------------------------------------------------

  function current() {
    const p = location.hash.replace('#', '');
    return ['accounts', 'live', 'usage', 'health'].includes(p) ? p : 'accounts';
  }

  // ---- alerts: a banner on every page ---------------------------------------------------

  async function loadAlerts() {
    const a = (await api('GET', '/alerts')).active;
    const banner = document.getElementById('alerts');
    banner.replaceChildren(...a.map((x) => el('li', {
      'data-event': x.event, 'data-subject': x.subject, 'data-test': String(x.test),
      text: (x.test ? '(test) ' : '') + x.text,
    })));
    banner.hidden = a.length === 0;
  }

  async function refresh(showErrors) {
    const page = current();
    try {
      await loadAlerts();
      if (page === 'accounts') await loadAccounts();
      if (page === 'usage') await loadUsage();
      if (page === 'health') await loadHealth();
      document.body.dataset.loaded = page;
    } catch (e) {
      if (showErrors) notice(e.message, true);
    }
  }

  function show() {
    const page = current();
    for (const s of document.querySelectorAll('section[data-page]')) s.hidden = s.dataset.page !== page;
    for (const a of document.querySelectorAll('nav a')) {
      if (a.dataset.page === page) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    refresh(true);
  }

  async function start() {
    const r = await fetch('/dashboard/session', { credentials: 'same-origin' });
    if (!r.ok) { location.reload(); return; }
    csrf = (await r.json()).csrf;
    document.getElementById('add-account').addEventListener('click', startLogin);
    document.getElementById('logout').addEventListener('click', async () => {
      await fetch('/dashboard/logout', { method: 'POST', credentials: 'same-origin' });
      location.reload();
    });
    for (const b of document.querySelectorAll('button.span')) {
      b.addEventListener('click', () => {
        span = b.dataset.span;
        for (const o of document.querySelectorAll('button.span')) o.setAttribute('aria-pressed', String(o === b));
        loadUsage().catch((e) => notice(e.message, true));
      });
    }
    window.addEventListener('hashchange', show);
    connect();
    show();
    // Countdowns and windows move with time even when nothing happens.
    setInterval(() => refresh(false), 30000);
    // Alerts come sooner.
    setInterval(() => loadAlerts().catch(() => {}), 5000);
  }

  start();
})();
