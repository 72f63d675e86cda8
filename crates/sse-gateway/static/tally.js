// Tally tracker (docs/tracker.md): no cookies, no storage, no build step.
(() => {
  'use strict';
  const w = window, d = document, l = location, n = navigator;
  const s = d.currentScript || d.querySelector('script[data-site]');
  const q = (w.tally && w.tally.q) || [];
  if (w.tally && w.tally.v) return; // loaded twice
  (w.tally = () => {}).v = 1; // no-op unless we track, so calls never throw
  const attr = (k) => s && s.getAttribute('data-' + k);
  const site = attr('site');
  if (!site || (attr('allow-localhost') == null &&
      (/^(localhost|127\.0\.0\.1|\[?::1\]?)$/.test(l.hostname) || l.protocol == 'file:'))) return;
  const api = attr('api') || new URL(s.src, l.href).origin + '/v1/events';
  // "/a/*/b, /c/**": * within a path segment, ** across segments
  const exclude = (attr('exclude') || '').split(',').map((p) => p.trim()).filter(Boolean)
    .map((p) => new RegExp('^' + p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')
      .replace(/\*\*?/g, (m) => (m[1] ? '.*' : '[^/]*')) + '/?$'));

  const uuid = () => {
    const c = crypto;
    if (c.randomUUID) return c.randomUUID(); // secure contexts only
    const b = c.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 15) | 64; // version 4
    b[8] = (b[8] & 63) | 128; // variant 1
    return [...b].map((x, i) => (x + 256).toString(16).slice(1) + (i % 2 && i > 2 && i < 10 ? '-' : '')).join('');
  };

  const track = (name, props) => {
    if (exclude.some((r) => r.test(l.pathname))) return;
    const e = {
      site_id: site, event_type: name, timestamp: new Date().toISOString(), event_id: uuid(),
      url: l.href, referrer: d.referrer || null, screen_width: w.innerWidth,
    };
    if (props) e.props = props;
    if (n.webdriver) e.automated = true;
    const body = JSON.stringify(e);
    // text/plain: no CORS preflight. Beacon only if fetch failed (same event_id anyway).
    const beacon = () => { try { n.sendBeacon(api, body); } catch (_) {} };
    try {
      fetch(api, { method: 'POST', body, keepalive: true, credentials: 'omit',
        headers: { 'Content-Type': 'text/plain' } }).catch(beacon);
    } catch (_) { beacon(); }
  };

  // One page view per pathname: on load, pushState, popstate, back/forward cache.
  let last;
  const page = (force) => {
    if (!force && last == l.pathname) return;
    last = l.pathname;
    track('page_view');
  };
  const push = history.pushState;
  if (push) history.pushState = function () { const r = push.apply(this, arguments); page(); return r; };
  w.addEventListener('popstate', () => page());
  w.addEventListener('pageshow', (e) => e.persisted && page(1));

  const files = /\.(pdf|xlsx|docx|txt|rtf|csv|exe|key|pps|ppt|pptx|7z|pkg|rar|gz|zip|avi|mov|mp4|mpeg|wmv|midi|mp3|wav|wma|dmg)$/i;
  const click = (e) => {
    if (e.type == 'auxclick' && e.button != 1) return; // middle button only
    const a = e.target.closest && e.target.closest('a[href]');
    let u;
    try { u = new URL(a.href); } catch (_) { return; } // none, or an SVG link
    if (files.test(u.pathname)) track('file_download', { url: a.href });
    else if (u.host != l.host && /^https?:$/.test(u.protocol)) track('outbound_link', { url: a.href });
  }; // no preventDefault: keepalive outlives the navigation
  d.addEventListener('click', click, true);
  d.addEventListener('auxclick', click, true);

  // tally("signup", {props: {plan: "pro"}})
  (w.tally = (name, o) => {
    if (typeof name != 'string' || !name) return;
    const p = o && o.props, props = {};
    let any;
    if (p && typeof p == 'object') for (const [k, v] of Object.entries(p)) {
      if (typeof v == 'number' ? isFinite(v) : /^(string|boolean)$/.test(typeof v)) props[k] = v, any = 1;
    }
    track(name, any && props);
  }).v = 1;

  if (d.prerendering) d.addEventListener('prerenderingchange', () => page(), { once: true });
  else page(); // a prerendered page counts once shown
  q.forEach((a) => w.tally(...a)); // calls queued by the stub
})();
