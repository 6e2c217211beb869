// ferrotrace web UI. Plain JavaScript, no dependencies, no build step.
// Span data is attacker-controlled: it only ever reaches the page through
// textContent / createTextNode / setAttribute on non-event attributes, never
// through innerHTML. (The page's Content-Security-Policy is a second fence.)
'use strict';
(function () {
  const app = document.getElementById('app');
  const SVGNS = 'http://www.w3.org/2000/svg';
  const ROW_H = 24;

  // ---------- DOM helpers (text only) ----------
  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    setProps(e, props);
    for (const k of kids) append(e, k);
    return e;
  }
  function sv(tag, props, ...kids) {
    const e = document.createElementNS(SVGNS, tag);
    setProps(e, props);
    for (const k of kids) append(e, k);
    return e;
  }
  function setProps(e, props) {
    if (!props) return;
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') e.textContent = String(v);
      else if (k === 'cls') e.setAttribute('class', v);
      else if (k === 'on') for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
      else if (k === 'style') e.style.cssText = v; // CSSOM: allowed under the CSP, unlike style attributes
      else if (/^on/i.test(k)) throw new Error('event attributes are not allowed');
      else e.setAttribute(k, String(v));
    }
  }
  function append(e, k) {
    if (k === null || k === undefined || k === false) return;
    if (Array.isArray(k)) { for (const x of k) append(e, x); return; }
    e.appendChild(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); }

  // ---------- formatting ----------
  function pad(n, w) { return String(n).padStart(w, '0'); }
  // Times are always shown in UTC, and say so.
  function fmtTime(ns) {
    const ms = Number(ns) / 1e6;
    const d = new Date(ms);
    if (isNaN(d.getTime())) return '?';
    return d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1, 2) + '-' + pad(d.getUTCDate(), 2) + ' ' +
      pad(d.getUTCHours(), 2) + ':' + pad(d.getUTCMinutes(), 2) + ':' + pad(d.getUTCSeconds(), 2) + '.' +
      pad(d.getUTCMilliseconds(), 3) + ' UTC';
  }
  function fmtDur(ns) {
    ns = Number(ns);
    if (ns >= 1e9) return (ns / 1e9).toFixed(ns >= 1e10 ? 1 : 2) + 's';
    if (ns >= 1e6) return (ns / 1e6).toFixed(ns >= 1e7 ? 1 : 2) + 'ms';
    if (ns >= 1e3) return (ns / 1e3).toFixed(ns >= 1e4 ? 1 : 2) + 'µs';
    return Math.round(ns) + 'ns';
  }
  function fmtPct(x) { return (x * 100).toFixed(x < 0.1 ? 2 : 1) + '%'; }
  const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#b07aa1', '#76b7b2', '#edc948', '#ff9da7', '#9c755f', '#bab0ac', '#86bc86', '#d37295', '#a0cbe8'];
  const colorCache = new Map();
  function svcColor(name) {
    if (!colorCache.has(name)) {
      let h = 0;
      for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
      colorCache.set(name, PALETTE[h % PALETTE.length]);
    }
    return colorCache.get(name);
  }
  function attrText(a) {
    const v = a.value;
    return typeof v === 'string' ? v : JSON.stringify(v);
  }

  // ---------- data access ----------
  // With a query token configured, the API answers 401 until the page sends
  // `Authorization: Bearer <token>`. The token is asked for in the page, kept
  // in sessionStorage (gone when the tab closes) and only ever sent in that
  // header: never in a URL, never logged.
  const TOKEN_KEY = 'ferrotrace.queryToken';
  function storedToken() { try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (_) { return ''; } }
  function storeToken(t) { try { if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* storage disabled */ } }
  let tokenPrompt = null; // one prompt shared by every request waiting for a token
  function askToken(rejected) {
    if (tokenPrompt) return tokenPrompt;
    tokenPrompt = new Promise((resolve) => {
      const input = el('input', { type: 'password', id: 'auth-token', name: 'token', autocomplete: 'current-password', required: 'required' });
      const form = el('form', { cls: 'auth-box', id: 'auth-form' },
        el('h3', { text: 'Query token required' }),
        el('p', { text: 'This collector protects its query API with a bearer token. Enter the query token to continue; it is kept only for this browser tab.' }),
        rejected ? el('p', { cls: 'error-box', id: 'auth-rejected', text: 'The token was rejected; check it and try again.' }) : null,
        el('label', null, 'Token ', input),
        el('button', { type: 'submit', id: 'auth-submit', text: 'Continue' }));
      const overlay = el('div', { cls: 'auth-overlay', id: 'auth-prompt', role: 'dialog', 'aria-modal': 'true' }, form);
      form.addEventListener('submit', (ev) => {
        ev.preventDefault();
        const t = input.value.trim();
        if (!t) return;
        storeToken(t);
        overlay.remove();
        tokenPrompt = null;
        resolve();
      });
      document.body.appendChild(overlay);
      input.focus();
    });
    return tokenPrompt;
  }
  async function api(url) {
    let r;
    for (;;) {
      const sent = storedToken();
      const headers = { Accept: 'application/json' };
      if (sent) headers.Authorization = 'Bearer ' + sent;
      r = await fetch(url, { headers, credentials: 'omit' });
      if (r.status !== 401) break;
      // A token entered meanwhile (by another request's prompt) is tried first.
      if (storedToken() && storedToken() !== sent) continue;
      if (sent) storeToken('');
      await askToken(!!sent);
    }
    let body = null;
    try { body = await r.json(); } catch (_) { /* not JSON */ }
    if (!r.ok) throw new Error((body && body.error) || ('HTTP ' + r.status));
    return body;
  }
  function errorBox(msg) { return el('div', { cls: 'error-box', role: 'alert', text: msg }); }

  const LOOKBACKS = [['15m', 15 * 60e3], ['1h', 3600e3], ['6h', 6 * 3600e3], ['24h', 24 * 3600e3], ['7d', 7 * 24 * 3600e3]];
  function windowFrom(params) {
    if (params.get('start') && params.get('end')) return { start: params.get('start'), end: params.get('end') };
    const lb = LOOKBACKS.find((x) => x[0] === (params.get('lookback') || '1h')) || LOOKBACKS[1];
    const end = Date.now() + 60e3;
    return { start: new Date(end - lb[1]).toISOString(), end: new Date(end).toISOString() };
  }

  // ---------- routing (the URL fragment holds the whole view state) ----------
  function route() {
    const h = location.hash.replace(/^#/, '') || '/search';
    const qi = h.indexOf('?');
    const path = qi >= 0 ? h.slice(0, qi) : h;
    const params = new URLSearchParams(qi >= 0 ? h.slice(qi + 1) : '');
    for (const a of document.querySelectorAll('header nav a')) a.classList.remove('active');
    clear(app);
    let m;
    if ((m = path.match(/^\/trace\/([0-9a-fA-F]{1,32})$/))) { mark('nav-search'); return tracePage(m[1], params); }
    if (path === '/dependencies') { mark('nav-deps'); return depsPage(params); }
    if (path === '/service' || path.startsWith('/service/')) {
      mark('nav-service');
      return servicePage(decodeURIComponent(path.slice('/service/'.length)), params);
    }
    mark('nav-search');
    return searchPage(params);
  }
  function mark(id) { const a = document.getElementById(id); if (a) a.classList.add('active'); }
  window.addEventListener('hashchange', () => { route().catch(showFatal); });
  function showFatal(e) { clear(app); app.appendChild(errorBox(String(e && e.message || e))); }

  function lookbackSelect(name, current) {
    return el('select', { name }, LOOKBACKS.map(([k]) => el('option', { value: k, selected: k === current ? 'selected' : null, text: 'last ' + k })));
  }

  // ---------- search page ----------
  async function searchPage(params) {
    const form = el('form', { cls: 'filters', id: 'search-form' });
    const svcSel = el('select', { name: 'service', id: 'f-service' }, el('option', { value: '', text: '(any service)' }));
    const opSel = el('select', { name: 'operation', id: 'f-operation' }, el('option', { value: '', text: '(any operation)' }));
    const input = (name, ph) => el('input', { name, id: 'f-' + name, placeholder: ph, value: params.get(name) || '' });
    form.append(
      el('label', null, 'Service', svcSel),
      el('label', null, 'Operation', opSel),
      el('label', null, 'Attributes (key=value, space separated)', input('attrs', 'http.status_code=500')),
      el('label', null, 'Min duration', input('min_duration', '100ms')),
      el('label', null, 'Max duration', input('max_duration', '2s')),
      el('label', null, 'Lookback', lookbackSelect('lookback', params.get('lookback') || '1h')),
      el('label', null, 'Limit', el('input', { name: 'limit', id: 'f-limit', type: 'number', min: 1, max: 100, value: params.get('limit') || '20' })),
      el('label', { cls: 'check' }, el('input', { type: 'checkbox', name: 'errors_only', id: 'f-errors', checked: params.get('errors_only') === 'true' ? 'checked' : null }), 'Errors only'),
      el('button', { type: 'submit', id: 'f-submit', text: 'Find traces' }),
    );
    const out = el('div', { id: 'search-results' });
    app.append(form, out);

    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const fd = new FormData(form);
      const q = new URLSearchParams();
      for (const k of ['service', 'operation', 'attrs', 'min_duration', 'max_duration', 'lookback', 'limit']) {
        const v = (fd.get(k) || '').toString().trim();
        if (v) q.set(k, v);
      }
      if (fd.get('errors_only')) q.set('errors_only', 'true');
      q.set('run', '1');
      location.hash = '#/search?' + q.toString();
    });

    const win = windowFrom(params);
    try {
      const s = await api('/api/native/services?' + new URLSearchParams({ start: win.start, end: win.end }));
      for (const name of s.services) svcSel.appendChild(el('option', { value: name, text: name, selected: name === params.get('service') ? 'selected' : null }));
    } catch (e) { out.appendChild(errorBox('Could not load services: ' + e.message)); }
    const loadOps = async () => {
      clear(opSel);
      opSel.appendChild(el('option', { value: '', text: '(any operation)' }));
      if (!svcSel.value) return;
      try {
        const o = await api('/api/native/services/' + encodeURIComponent(svcSel.value) + '/operations?' + new URLSearchParams({ start: win.start, end: win.end }));
        for (const op of o.operations) opSel.appendChild(el('option', { value: op.name, text: op.name + ' (' + op.span_kind + ')', selected: op.name === params.get('operation') ? 'selected' : null }));
      } catch (e) { /* operations are a convenience; the search still works */ }
    };
    svcSel.addEventListener('change', loadOps);
    await loadOps();

    if (!params.has('run') && !params.has('service')) {
      out.appendChild(el('p', { cls: 'muted', text: 'Choose filters and press “Find traces”. Times are shown in UTC.' }));
      return;
    }
    const q = new URLSearchParams({ start: win.start, end: win.end, limit: params.get('limit') || '20' });
    for (const k of ['service', 'operation', 'min_duration', 'max_duration']) if (params.get(k)) q.set(k, params.get(k));
    if (params.get('errors_only') === 'true') q.set('errors_only', 'true');
    for (const a of (params.get('attrs') || '').split(/\s+/).filter(Boolean)) q.append('attr', a);
    await runSearch(out, q, win);
  }

  async function runSearch(out, q, win) {
    const status = el('p', { cls: 'muted', text: 'Searching…' });
    out.appendChild(status);
    let page;
    try { page = await api('/api/native/search?' + q); } catch (e) { status.remove(); out.appendChild(errorBox(e.message)); return; }
    status.remove();
    const traces = page.traces.slice();
    const scatterBox = el('div', { cls: 'scatter', id: 'scatter' });
    const tbody = el('tbody');
    const table = el('table', { cls: 'results', id: 'results' },
      el('thead', null, el('tr', null, ['Trace', 'Start', 'Duration', 'Spans', 'Services', 'Errors'].map((h) => el('th', { text: h })))), tbody);
    const count = el('p', { cls: 'muted', id: 'result-count' });
    const more = el('button', { cls: 'secondary', id: 'load-more', text: 'Load more' });
    out.append(count, scatterBox, table, more);
    let cursor = page.next_cursor;
    const render = (rows) => {
      for (const t of rows) {
        tbody.appendChild(el('tr', { 'data-trace-id': t.trace_id },
          el('td', null, el('a', { href: '#/trace/' + t.trace_id, cls: 'trace-link' }, el('b', { text: t.root_service }), ': ', t.root_operation), el('div', { cls: 'muted', text: t.trace_id })),
          el('td', { text: fmtTime(t.start_ns) }),
          el('td', { text: fmtDur(t.duration_ns) }),
          el('td', { text: t.span_count }),
          el('td', null, t.services.map((s) => el('span', { cls: 'badge', style: 'border-left:3px solid ' + svcColor(s), text: s }))),
          el('td', null, t.error_count > 0 ? el('span', { cls: 'badge err', text: t.error_count + ' errors' }) : '0'),
        ));
      }
      count.textContent = traces.length + (cursor ? '+ traces (newest first)' : ' traces (newest first)');
      drawScatter(scatterBox, traces, win);
      more.style.display = cursor ? '' : 'none';
    };
    more.addEventListener('click', async () => {
      if (!cursor) return;
      const q2 = new URLSearchParams(q); q2.set('cursor', cursor);
      try {
        const p2 = await api('/api/native/search?' + q2);
        cursor = p2.next_cursor;
        traces.push(...p2.traces);
        render(p2.traces);
      } catch (e) { out.appendChild(errorBox(e.message)); }
    });
    render(traces);
  }

  function drawScatter(box, traces, win) {
    clear(box);
    const W = Math.max(400, box.clientWidth || 900), H = 180, L = 60, B = 22, T = 8, R = 12;
    const s = sv('svg', { width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': 'duration over time' });
    const t0 = Date.parse(win.start) * 1e6, t1 = Date.parse(win.end) * 1e6;
    const maxD = Math.max(1, ...traces.map((t) => t.duration_ns));
    const x = (ns) => L + (W - L - R) * Math.min(1, Math.max(0, (ns - t0) / Math.max(1, t1 - t0)));
    const y = (d) => H - B - (H - B - T) * (d / maxD);
    const axis = sv('g', { cls: 'axis' });
    axis.append(sv('line', { x1: L, y1: H - B, x2: W - R, y2: H - B }), sv('line', { x1: L, y1: T, x2: L, y2: H - B }));
    for (let i = 0; i <= 4; i++) {
      const d = maxD * i / 4;
      axis.append(sv('text', { x: L - 4, y: y(d) + 3, 'text-anchor': 'end', text: fmtDur(d) }));
      const tt = t0 + (t1 - t0) * i / 4;
      axis.append(sv('text', { x: x(tt), y: H - 6, 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle', text: fmtTime(tt).slice(11, 19) + (i === 4 ? ' UTC' : '') }));
    }
    s.appendChild(axis);
    for (const t of traces) {
      const c = sv('circle', { cx: x(t.start_ns), cy: y(t.duration_ns), r: Math.min(9, 3 + Math.log2(1 + t.span_count) / 2), fill: t.error_count ? '#d32f2f' : '#1a5fb4', 'fill-opacity': 0.6, 'data-trace-id': t.trace_id });
      c.appendChild(sv('title', { text: t.root_service + ': ' + t.root_operation + ' — ' + fmtDur(t.duration_ns) }));
      c.addEventListener('click', () => { location.hash = '#/trace/' + t.trace_id; });
      s.appendChild(c);
    }
    box.appendChild(s);
  }

  // ---------- trace page ----------
  async function tracePage(id, params) {
    const t0 = performance.now();
    const raw = params.get('raw') === 'true';
    const status = el('p', { cls: 'muted', text: 'Loading trace…' });
    app.appendChild(status);
    let tr;
    try { tr = await api('/api/native/traces/' + encodeURIComponent(id) + (raw ? '?raw=true' : '')); } catch (e) { status.remove(); app.appendChild(errorBox(e.message)); return; }
    status.remove();
    const spans = tr.spans;
    const total = Math.max(1, tr.duration_ns);
    const rawToggle = el('a', { href: '#/trace/' + id + (raw ? '' : '?raw=true'), id: 'raw-toggle', text: raw ? 'show adjusted timings' : 'show raw timings' });
    const head = el('div', { cls: 'trace-head' },
      el('h2', { id: 'trace-title' }, (tr.root_service || '?') + ': ' + (tr.root_operation || '?')),
      el('span', { text: 'Trace ' + tr.trace_id }),
      el('span', { text: 'Start ' + fmtTime(tr.start_ns) }),
      el('span', { text: 'Duration ' + fmtDur(tr.duration_ns) }),
      el('span', { id: 'span-count', text: tr.span_count + ' spans' }),
      el('span', { text: tr.services.length + ' services' }),
      tr.error_count ? el('span', { cls: 'badge err', text: tr.error_count + ' errors' }) : null,
      tr.partial ? el('span', { cls: 'badge warn', id: 'partial', text: tr.root_missing ? 'partial: root span not received yet' : 'partial: has orphan spans' }) : null,
      tr.skew_adjusted_spans ? el('span', { cls: 'badge warn', text: tr.skew_adjusted_spans + (tr.skew_adjusted_spans === 1 ? ' span' : ' spans') + ' clock-skew adjusted' }) : null,
      raw ? el('span', { cls: 'badge', text: 'raw timings' }) : null,
      rawToggle,
      el('button', { cls: 'secondary', id: 'expand-all', text: 'Expand all' }),
      el('button', { cls: 'secondary', id: 'collapse-all', text: 'Collapse all' }),
    );
    const mini = el('div', { cls: 'minimap', id: 'minimap' });
    const canvas = el('canvas');
    const viewBox = el('div', { cls: 'view' });
    mini.append(canvas, viewBox);
    const ticks = el('div', { cls: 'ticks' });
    for (let i = 0; i <= 4; i++) ticks.appendChild(el('span', { style: 'left:' + (i * 25) + '%;' + (i === 4 ? 'transform:translateX(-100%)' : ''), text: fmtDur(total * i / 4) }));
    const ruler = el('div', { cls: 'ruler' }, el('div', { cls: 'lbl', text: 'Service: operation' }), ticks);
    const wf = el('div', { cls: 'waterfall', id: 'waterfall', tabindex: 0 });
    const spacer = el('div', { cls: 'spacer' });
    wf.appendChild(spacer);
    const detail = el('aside', { cls: 'detail', id: 'detail' }, el('p', { cls: 'muted', text: 'Select a span to see its details.' }));
    app.append(head, el('div', { cls: 'trace-layout' }, el('div', { cls: 'trace-main' }, mini, ruler, wf), detail));

    const collapsed = new Set();
    let visible = [];
    let selected = -1;
    // Visible rows: span indexes, with -(i+1) for the placeholder drawn above
    // orphan i to stand for its missing parent.
    function computeVisible() {
      visible = [];
      for (let i = 0; i < spans.length;) {
        if (spans[i].orphan && spans[i].missing_parent_id) visible.push(-(i + 1));
        visible.push(i);
        i = collapsed.has(i) ? spans[i].subtree_end : i + 1;
      }
      spacer.style.height = (visible.length * ROW_H) + 'px';
    }
    let pending = false;
    function schedule() { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; renderRows(); }); } }
    function renderRows() {
      const top = wf.scrollTop, h = wf.clientHeight || 600;
      const first = Math.max(0, Math.floor(top / ROW_H) - 8);
      const last = Math.min(visible.length, Math.ceil((top + h) / ROW_H) + 8);
      clear(spacer);
      for (let r = first; r < last; r++) spacer.appendChild(makeRow(visible[r], r));
      const n = Math.max(1, visible.length);
      viewBox.style.top = (100 * first / n) + '%';
      viewBox.style.height = Math.max(2, 100 * (last - first) / n) + '%';
    }
    function makeRow(v, r) {
      if (v < 0) {
        const s = spans[-v - 1];
        return el('div', { cls: 'row placeholder', style: 'top:' + (r * ROW_H) + 'px' },
          el('div', { cls: 'lbl', style: 'padding-left:' + (4 + s.depth * 14) + 'px' }, '⚠ missing parent span ' + s.missing_parent_id + ' (not received)'));
      }
      const s = spans[v];
      const hasKids = s.subtree_end > v + 1;
      const row = el('div', { cls: 'row' + (v === selected ? ' selected' : ''), style: 'top:' + (r * ROW_H) + 'px', 'data-index': v, 'data-span-id': s.span_id });
      const tog = el('span', { cls: 'tog', text: hasKids ? (collapsed.has(v) ? '▸' : '▾') : '' });
      if (hasKids) tog.addEventListener('click', (ev) => { ev.stopPropagation(); toggle(v); });
      const lbl = el('div', { cls: 'lbl', style: 'padding-left:' + (4 + Math.min(s.depth, 60) * 14) + 'px', title: s.service + ': ' + s.name },
        tog, el('span', { cls: 'chip', style: 'background:' + svcColor(s.service) }),
        el('span', { cls: 'svc', text: s.service }), el('span', { cls: 'op', text: s.name }));
      if (s.error) lbl.appendChild(el('span', { cls: 'mark err', title: 'error', text: '●' }));
      if (s.skew_shift_ns) lbl.appendChild(el('span', { cls: 'mark skew', title: 'clock skew corrected by ' + fmtDur(Math.abs(s.skew_shift_ns)), text: '⇆' }));
      if (s.orphan) lbl.appendChild(el('span', { cls: 'mark orphan', title: 'orphan: parent not in trace', text: '⚠' }));
      const left = 100 * s.offset_ns / total, width = Math.max(0.15, 100 * s.duration_ns / total);
      const bar = el('div', { cls: 'bar' + (s.critical ? ' crit' : '') + (s.error ? ' err' : ''), style: 'left:' + left + '%;width:' + width + '%;background:' + svcColor(s.service) });
      const dur = el('span', { cls: 'dur', style: left + width > 80 ? 'right:' + (100 - left + 0.5) + '%' : 'left:' + (left + width + 0.5) + '%', text: fmtDur(s.duration_ns) });
      row.append(lbl, el('div', { cls: 'lane' }, bar, dur));
      row.addEventListener('click', () => { selected = v; showDetail(s); schedule(); });
      return row;
    }
    function toggle(i) { if (collapsed.has(i)) collapsed.delete(i); else collapsed.add(i); computeVisible(); schedule(); }
    function kvTable(list) {
      if (!list || !list.length) return el('p', { cls: 'muted', text: 'none' });
      return el('table', null, list.map((a) => el('tr', null, el('td', { cls: 'k', text: a.key }), el('td', { text: attrText(a) }))));
    }
    function showDetail(s) {
      clear(detail);
      const rows = [
        ['Service', s.service], ['Operation', s.name], ['Span ID', s.span_id], ['Parent ID', s.parent_span_id || '(root)'],
        ['Kind', s.kind], ['Start', fmtTime(tr.start_ns + s.offset_ns) + ' (+' + fmtDur(s.offset_ns) + ')'],
        ['Duration', fmtDur(s.duration_ns)], ['Self time', fmtDur(s.self_ns)],
        ['Status', s.status.code + (s.status.message ? ': ' + s.status.message : '')],
        ['Critical path', s.critical ? 'yes' : 'no'],
      ];
      if (s.error_path) rows.push(['Error chain', s.error_source ? 'error starts here' : (s.error ? 'error (propagated)' : 'leads to an error')]);
      if (s.skew_shift_ns) rows.push(['Clock skew shift', (s.skew_shift_ns > 0 ? '+' : '-') + fmtDur(Math.abs(s.skew_shift_ns))]);
      if (s.orphan) rows.push(['Orphan', 'parent ' + (s.missing_parent_id || '?') + ' is missing']);
      detail.append(
        el('h3', { id: 'detail-title', text: s.name }),
        el('table', null, rows.map(([k, v]) => el('tr', null, el('td', { cls: 'k', text: k }), el('td', { text: v })))),
        el('h4', { text: 'Attributes' }), el('div', { id: 'detail-attributes' }, kvTable(s.attributes)),
        el('h4', { text: 'Events' }),
        s.events.length ? el('div', { id: 'detail-events' }, s.events.map((e) => el('div', null, el('b', { text: '+' + fmtDur(e.offset_ns) + ' ' }), el('span', { text: e.name }), kvTable(e.attributes)))) : el('p', { cls: 'muted', text: 'none' }),
        el('h4', { text: 'Links' }),
        s.links.length ? el('div', null, s.links.map((l) => el('div', null, el('a', { href: '#/trace/' + l.trace_id, text: l.trace_id + ' / ' + l.span_id }), kvTable(l.attributes)))) : el('p', { cls: 'muted', text: 'none' }),
        el('h4', { text: 'Resource' }), kvTable(s.resource),
        el('h4', { text: 'Scope' }), el('p', { text: (s.scope.name || '(none)') + (s.scope.version ? ' ' + s.scope.version : '') }),
      );
    }
    function drawMinimap() {
      const w = mini.clientWidth || 800, h = mini.clientHeight || 48;
      canvas.width = w; canvas.height = h;
      const ctx = canvas.getContext('2d');
      if (!ctx) return;
      const n = Math.max(1, spans.length);
      for (let i = 0; i < spans.length; i++) {
        const s = spans[i];
        ctx.fillStyle = s.error ? '#d32f2f' : svcColor(s.service);
        ctx.fillRect(w * s.offset_ns / total, h * i / n, Math.max(1, w * s.duration_ns / total), Math.max(1, h / n));
      }
    }
    mini.addEventListener('click', (ev) => {
      const rect = mini.getBoundingClientRect();
      wf.scrollTop = (ev.clientY - rect.top) / rect.height * visible.length * ROW_H - wf.clientHeight / 2;
    });
    wf.addEventListener('scroll', schedule, { passive: true });
    window.addEventListener('resize', schedule);
    document.getElementById('expand-all').addEventListener('click', () => { collapsed.clear(); computeVisible(); schedule(); });
    document.getElementById('collapse-all').addEventListener('click', () => {
      collapsed.clear();
      for (let i = 0; i < spans.length; i++) if (spans[i].depth === 0 && spans[i].subtree_end > i + 1) collapsed.add(i);
      computeVisible(); schedule();
    });
    computeVisible();
    renderRows();
    drawMinimap();
    const root = spans.findIndex((s) => !s.parent_span_id);
    if (spans.length) { selected = root >= 0 ? root : 0; showDetail(spans[selected]); renderRows(); }
    // Exposed for the browser tests and the render benchmark.
    window.__ftTrace = { id: tr.trace_id, spans: spans.length, renderMs: performance.now() - t0, sinceNavigationMs: performance.now() };
  }

  // ---------- dependency graph ----------
  async function depsPage(params) {
    const lb = params.get('lookback') || '1h';
    const sel = lookbackSelect('lookback', lb);
    sel.id = 'deps-lookback';
    sel.addEventListener('change', () => { location.hash = '#/dependencies?lookback=' + sel.value; });
    app.append(el('div', { cls: 'filters' }, el('label', null, 'Window ', sel)));
    const win = windowFrom(params);
    let deps, svcs;
    try {
      [deps, svcs] = await Promise.all([
        api('/api/native/dependencies?' + new URLSearchParams({ start: win.start, end: win.end })),
        api('/api/native/services?' + new URLSearchParams({ start: win.start, end: win.end })),
      ]);
    } catch (e) { app.appendChild(errorBox(e.message)); return; }
    if (!deps.edges.length) { app.appendChild(el('p', { cls: 'muted', id: 'deps-empty', text: 'No calls between services in this window.' })); return; }
    const known = new Set(svcs.services);
    // Layered layout: a node's column is the longest call chain reaching it
    // (bounded by the node count, so cycles cannot loop forever).
    const nodes = deps.nodes;
    const level = new Map(nodes.map((n) => [n, 0]));
    for (let pass = 0; pass < nodes.length; pass++) {
      let changed = false;
      for (const e of deps.edges) {
        if (e.caller === e.callee) continue;
        const want = level.get(e.caller) + 1;
        if (want > level.get(e.callee) && want < nodes.length) { level.set(e.callee, want); changed = true; }
      }
      if (!changed) break;
    }
    const cols = new Map();
    for (const n of nodes) { const l = level.get(n); if (!cols.has(l)) cols.set(l, []); cols.get(l).push(n); }
    // One barycentre pass: order each column by the mean row of its callers,
    // which removes most crossings (and so most overlapping labels).
    const rowOf = new Map();
    for (const l of [...cols.keys()].sort((a, c) => a - c)) {
      const list = cols.get(l);
      const bary = (n) => {
        const rows = deps.edges.filter((e) => e.callee === n && rowOf.has(e.caller)).map((e) => rowOf.get(e.caller));
        return rows.length ? rows.reduce((x, y) => x + y, 0) / rows.length : list.indexOf(n);
      };
      const keyed = list.map((n) => [bary(n), n]).sort((a, c) => a[0] - c[0] || (a[1] < c[1] ? -1 : 1));
      cols.set(l, keyed.map((k) => k[1]));
      cols.get(l).forEach((n, i) => rowOf.set(n, i));
    }
    const NW = 170, NH = 34, GX = 110, GY = 46;
    const pos = new Map();
    let maxRows = 1;
    for (const [l, list] of cols) { maxRows = Math.max(maxRows, list.length); list.forEach((n, i) => pos.set(n, { x: 20 + l * (NW + GX), y: 20 + i * (NH + GY) })); }
    const W = 40 + (Math.max(...cols.keys()) + 1) * (NW + GX), H = 40 + maxRows * (NH + GY);
    const s = sv('svg', { width: W, height: H, cls: 'graph', id: 'deps-graph', role: 'img', 'aria-label': 'service dependency graph' });
    const defs = sv('defs');
    defs.appendChild(sv('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, sv('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#7d8a99' })));
    s.appendChild(defs);
    for (const e of deps.edges) {
      const a = pos.get(e.caller), b = pos.get(e.callee);
      let d, lx, ly;
      if (e.caller === e.callee) {
        d = 'M' + (a.x + NW - 30) + ',' + a.y + ' C' + (a.x + NW) + ',' + (a.y - 40) + ' ' + (a.x + NW + 30) + ',' + (a.y + 10) + ' ' + (a.x + NW) + ',' + (a.y + NH / 2);
        lx = a.x + NW + 10; ly = a.y - 18;
      } else {
        const x1 = a.x + NW, y1 = a.y + NH / 2, x2 = b.x, y2 = b.y + NH / 2;
        const back = x2 <= x1;
        const sx = back ? a.x + NW / 2 : x1, sy = back ? a.y + NH : y1, ex = back ? b.x + NW / 2 : x2, ey = back ? b.y + NH : y2;
        const mx = (sx + ex) / 2;
        d = back ? 'M' + sx + ',' + sy + ' C' + sx + ',' + (sy + 60) + ' ' + ex + ',' + (ey + 60) + ' ' + ex + ',' + ey
          : 'M' + sx + ',' + sy + ' C' + mx + ',' + sy + ' ' + mx + ',' + ey + ' ' + ex + ',' + ey;
        lx = mx; ly = (sy + ey) / 2 - 6 + (back ? 40 : 0);
      }
      const g = sv('g', { cls: 'edge' + (e.errors ? ' err' : ''), 'data-caller': e.caller, 'data-callee': e.callee });
      g.append(sv('path', { d, 'marker-end': 'url(#arrow)' }),
        sv('text', { x: lx, y: ly, 'text-anchor': 'middle', text: e.calls + ' calls · ' + fmtPct(e.error_rate) + ' err' }));
      g.appendChild(sv('title', { text: e.caller + ' → ' + e.callee + ': ' + e.calls + ' calls, ' + e.errors + ' errors, avg ' + fmtDur(e.avg_ns) + ', p95 ' + fmtDur(e.p95_ns) }));
      s.appendChild(g);
    }
    for (const n of nodes) {
      const p = pos.get(n);
      const g = sv('g', { cls: 'node' + (known.has(n) ? '' : ' peer'), 'data-service': n, transform: 'translate(' + p.x + ',' + p.y + ')' });
      g.append(sv('rect', { width: NW, height: NH, rx: 6 }), sv('text', { x: NW / 2, y: NH / 2 + 4, 'text-anchor': 'middle', text: n.length > 24 ? n.slice(0, 23) + '…' : n }));
      g.appendChild(sv('title', { text: n + (known.has(n) ? '' : ' (uninstrumented peer)') }));
      if (known.has(n)) g.addEventListener('click', () => { location.hash = '#/service/' + encodeURIComponent(n); });
      s.appendChild(g);
    }
    app.appendChild(el('div', { style: 'overflow:auto' }, s));
    app.appendChild(el('table', { cls: 'results', id: 'deps-table' },
      el('thead', null, el('tr', null, ['Caller', 'Callee', 'Calls', 'Errors', 'Error rate', 'Avg', 'p95'].map((h) => el('th', { text: h })))),
      el('tbody', null, deps.edges.map((e) => el('tr', null, el('td', { text: e.caller }), el('td', { text: e.callee }), el('td', { text: e.calls }), el('td', { text: e.errors }), el('td', { text: fmtPct(e.error_rate) }), el('td', { text: fmtDur(e.avg_ns) }), el('td', { text: fmtDur(e.p95_ns) }))))));
  }

  // ---------- service page ----------
  async function servicePage(service, params) {
    const win = windowFrom(params);
    let svcs;
    try { svcs = await api('/api/native/services?' + new URLSearchParams({ start: win.start, end: win.end })); } catch (e) { app.appendChild(errorBox(e.message)); return; }
    const sel = el('select', { id: 'svc-select' }, el('option', { value: '', text: '(choose a service)' }), svcs.services.map((s) => el('option', { value: s, text: s, selected: s === service ? 'selected' : null })));
    const lbSel = lookbackSelect('lookback', params.get('lookback') || '1h');
    const cmp = el('input', { type: 'checkbox', id: 'svc-compare', checked: params.get('compare') === 'true' ? 'checked' : null });
    const go = () => {
      const q = new URLSearchParams({ lookback: lbSel.value });
      if (cmp.checked) q.set('compare', 'true');
      location.hash = '#/service/' + encodeURIComponent(sel.value) + '?' + q;
    };
    sel.addEventListener('change', go); lbSel.addEventListener('change', go); cmp.addEventListener('change', go);
    app.append(el('div', { cls: 'filters' }, el('label', null, 'Service ', sel), el('label', null, 'Window ', lbSel), el('label', { cls: 'check' }, cmp, 'compare with the previous period')));
    const rates = await api('/api/native/rates?' + new URLSearchParams({ start: win.start, end: win.end })).catch((e) => { app.appendChild(errorBox(e.message)); return null; });
    if (rates) {
      app.appendChild(el('table', { cls: 'results', id: 'rates' },
        el('thead', null, el('tr', null, ['Service', 'Requests', 'Rate', 'Errors', 'Error rate', 'Counted'].map((h) => el('th', { text: h })))),
        el('tbody', null, rates.services.map((r) => el('tr', { 'data-service': r.service }, el('td', null, el('a', { href: '#/service/' + encodeURIComponent(r.service), text: r.service })), el('td', { text: r.count }), el('td', { text: r.rate_per_s.toFixed(2) + '/s' }), el('td', { text: r.errors }), el('td', { text: fmtPct(r.error_rate) }),
          el('td', { cls: 'muted', text: r.basis === 'all_spans' ? 'all spans (no server/consumer spans)' : 'server/consumer spans' }))))));
    }
    if (!service) return;
    const q = new URLSearchParams({ service, start: win.start, end: win.end });
    const width = Date.parse(win.end) - Date.parse(win.start);
    if (params.get('compare') === 'true') q.set('compare_start', new Date(Date.parse(win.start) - width).toISOString());
    let series;
    try { series = await api('/api/native/latency/series?' + q); } catch (e) { app.appendChild(errorBox(e.message)); return; }
    const pts = series.points, cpts = series.compare ? series.compare.points : null;
    const charts = el('div', { cls: 'charts', id: 'svc-charts' });
    charts.append(
      lineChart('Latency (p50 / p95 / p99)' + (cpts ? ', dashed: previous period p95' : ''), series, [
        ['p50', '#59a14f', pts.map((p) => p.p50_ns)], ['p95', '#f28e2b', pts.map((p) => p.p95_ns)], ['p99', '#d32f2f', pts.map((p) => p.p99_ns)],
      ].concat(cpts ? [['prev p95', '#8a96a3', cpts.map((p) => p.p95_ns), true]] : []), fmtDur),
      lineChart('Request rate (/s)', series, [['rate', '#4e79a7', pts.map((p) => p.rate_per_s)]].concat(cpts ? [['prev', '#8a96a3', cpts.map((p) => p.rate_per_s), true]] : []), (v) => v.toFixed(2)),
      lineChart('Error rate', series, [['errors', '#d32f2f', pts.map((p) => p.error_rate)]].concat(cpts ? [['prev', '#8a96a3', cpts.map((p) => p.error_rate), true]] : []), fmtPct),
    );
    app.appendChild(el('h3', { text: service }));
    app.appendChild(el('p', { cls: 'muted', id: 'svc-basis', text: series.basis === 'all_spans'
      ? 'Requests: all spans of this service (it has no server/consumer spans in this window).'
      : 'Requests: server and consumer spans (where work enters the service); internal and client spans are not counted.' }));
    app.appendChild(charts);
    try {
      const ops = await api('/api/native/latency/operations?' + new URLSearchParams({ service, start: win.start, end: win.end }));
      app.appendChild(el('table', { cls: 'results', id: 'svc-operations' },
        el('thead', null, el('tr', null, ['Operation', 'Kind', 'Requests', 'Rate', 'Error rate', 'p50', 'p95', 'p99'].map((h) => el('th', { text: h })))),
        el('tbody', null, ops.operations.map((o) => el('tr', null, el('td', { text: o.operation }), el('td', { text: o.span_kind }), el('td', { text: o.count }),
          el('td', { text: o.rate_per_s.toFixed(3) + '/s' }), el('td', { text: fmtPct(o.error_rate) }), el('td', { text: fmtDur(o.p50_ns) }), el('td', { text: fmtDur(o.p95_ns) }), el('td', { text: fmtDur(o.p99_ns) }))))));
    } catch (e) { app.appendChild(errorBox(e.message)); }
  }

  function lineChart(title, series, lines, fmt) {
    const W = 420, H = 180, L = 56, B = 22, T = 8, R = 8;
    const n = Math.max(1, ...lines.map((l) => l[2].length));
    const maxV = Math.max(1e-9, ...lines.flatMap((l) => l[2]));
    const x = (i) => L + (W - L - R) * (n <= 1 ? 0.5 : i / (n - 1));
    const y = (v) => H - B - (H - B - T) * (v / maxV);
    const s = sv('svg', { width: W, height: H });
    const axis = sv('g', { cls: 'axis' });
    axis.append(sv('line', { x1: L, y1: H - B, x2: W - R, y2: H - B }), sv('line', { x1: L, y1: T, x2: L, y2: H - B }));
    for (let i = 0; i <= 3; i++) axis.append(sv('text', { x: L - 4, y: y(maxV * i / 3) + 3, 'text-anchor': 'end', text: fmt(maxV * i / 3) }));
    axis.append(sv('text', { x: L, y: H - 6, text: fmtTime(series.start_ns).slice(11, 16) }), sv('text', { x: W - R, y: H - 6, 'text-anchor': 'end', text: fmtTime(series.end_ns).slice(11, 16) + ' UTC' }));
    s.appendChild(axis);
    for (const [name, color, vals, dashed] of lines) {
      if (!vals.length) continue;
      const d = vals.map((v, i) => (i ? 'L' : 'M') + x(i).toFixed(1) + ',' + y(v).toFixed(1)).join(' ');
      s.appendChild(sv('path', { d, fill: 'none', stroke: color, 'stroke-width': 1.6, 'stroke-dasharray': dashed ? '4 3' : null }, sv('title', { text: name })));
    }
    return el('div', { cls: 'chart' }, el('h4', { text: title }), s,
      el('div', { cls: 'legend' }, lines.map(([name, color]) => el('span', { style: 'color:' + color, text: '■ ' + name }))));
  }

  route().catch(showFatal);
})();
