// ledge dashboard: small helpers shared by every page, and one init
// function per page (by <body data-page>). No framework, no build step.
"use strict";

const ledge = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

  // api calls /api/v1 with the session's CSRF token; it throws an Error
  // carrying the API's message on a non-2xx answer.
  async function api(method, path, body, raw) {
    const opts = { method, headers: { "X-CSRF-Token": csrf() }, credentials: "same-origin" };
    if (body !== undefined) {
      opts.body = raw ? body : JSON.stringify(body);
      opts.headers["Content-Type"] = raw ? "application/octet-stream" : "application/json";
    }
    const res = await fetch("/api/v1" + path, opts);
    if (res.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); throw new Error("logged out"); }
    const text = await res.text();
    const data = text ? JSON.parse(text) : null;
    if (!res.ok) {
      const e = new Error((data && data.error && data.error.message) || res.statusText);
      e.status = res.status; e.code = data && data.error && data.error.code;
      throw e;
    }
    return data;
  }

  // sse subscribes to server-sent events; handlers maps event names to
  // functions of the parsed JSON data. It reconnects by itself.
  function sse(path, handlers) {
    const es = new EventSource("/api/v1" + path);
    const conn = document.getElementById("conn");
    es.onopen = () => { if (conn) conn.textContent = "live"; };
    es.onerror = () => { if (conn) conn.textContent = "reconnecting…"; };
    for (const [name, fn] of Object.entries(handlers)) {
      es.addEventListener(name, (ev) => { try { fn(JSON.parse(ev.data)); } catch (err) { console.error(err); } });
    }
    return es;
  }

  const $ = (sel, root = document) => root.querySelector(sel);
  const el = (tag, attrs = {}, ...kids) => {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") n.className = v; else if (k === "text") n.textContent = v; else n.setAttribute(k, v);
    }
    for (const k of kids) n.append(k);
    return n;
  };
  const bytes = (n) => {
    if (n == null) return "–";
    const u = ["B", "KB", "MB", "GB", "TB"]; let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return n.toFixed(n < 10 && i ? 1 : 0) + " " + u[i];
  };
  const pct = (x) => (x == null ? "–" : x.toFixed(0) + " %");
  const ago = (iso) => {
    const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
    if (s < 60) return Math.round(s) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return Math.round(s / 3600) + " h ago";
    return new Date(iso).toLocaleString();
  };

  // every runs fn now and every ms while the page is visible.
  function every(ms, fn) {
    const tick = () => { if (!document.hidden) fn(); };
    tick();
    return setInterval(tick, ms);
  }

  // chart draws series (arrays of [t, v]) as lines on a canvas, scaled to
  // fit; colours come from the CSS variables.
  function chart(canvas, series, opts = {}) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    canvas.width = w * dpr; canvas.height = h * dpr;
    const g = canvas.getContext("2d"); g.scale(dpr, dpr); g.clearRect(0, 0, w, h);
    const css = getComputedStyle(document.documentElement);
    const colors = opts.colors || [css.getPropertyValue("--accent"), css.getPropertyValue("--warn"), css.getPropertyValue("--bad"), css.getPropertyValue("--ok")];
    let t0 = Infinity, t1 = -Infinity, vmax = opts.min || 0;
    for (const s of series) for (const [t, v] of s.points) { t0 = Math.min(t0, t); t1 = Math.max(t1, t); vmax = Math.max(vmax, v); }
    if (!isFinite(t0)) { g.fillStyle = css.getPropertyValue("--muted"); g.fillText("no data yet", 8, 16); return; }
    vmax = vmax * 1.1 || 1; const pad = 28;
    g.strokeStyle = css.getPropertyValue("--line"); g.fillStyle = css.getPropertyValue("--muted"); g.font = "11px system-ui";
    for (let i = 0; i <= 2; i++) { const y = pad / 2 + (h - pad) * i / 2; g.beginPath(); g.moveTo(pad, y); g.lineTo(w, y); g.stroke(); g.fillText((vmax * (1 - i / 2)).toFixed(vmax < 10 ? 1 : 0), 2, y + 4); }
    series.forEach((s, i) => {
      g.strokeStyle = colors[i % colors.length].trim(); g.lineWidth = 1.5; g.beginPath();
      s.points.forEach(([t, v], j) => {
        const x = pad + (w - pad) * (t1 > t0 ? (t - t0) / (t1 - t0) : 1);
        const y = pad / 2 + (h - pad) * (1 - v / vmax);
        j ? g.lineTo(x, y) : g.moveTo(x, y);
      });
      g.stroke();
      g.fillStyle = colors[i % colors.length].trim(); g.fillText(s.name, pad + 4 + i * 90, h - 2);
    });
  }

  const pages = {};
  document.addEventListener("DOMContentLoaded", () => {
    const toggle = $(".menu-toggle"), nav = $("#nav");
    if (toggle && nav) toggle.addEventListener("click", () => {
      const open = nav.classList.toggle("open"); toggle.setAttribute("aria-expanded", open);
    });
    const init = pages[document.body.dataset.page];
    if (init) init();
  });
  return { api, sse, $, el, bytes, pct, ago, every, chart, pages };
})();

ledge.pages.overview = () => {
  const { api, $, bytes, pct, every } = ledge;
  every(5000, async () => {
    const s = await api("GET", "/system");
    $("#cpu").textContent = pct(s.cpuPercent);
    $("#cores").textContent = s.numCPU + " cores";
    $("#load").textContent = (s.loadAvg || []).map((x) => x.toFixed(2)).join(" ");
    $("#mem").textContent = bytes(s.memTotal - s.memAvailable) + " / " + bytes(s.memTotal);
    $("#mem-bar").style.width = (100 * (s.memTotal - s.memAvailable) / s.memTotal) + "%";
    $("#rss").textContent = bytes(s.processRSS);
    $("#disk").textContent = bytes(s.diskFree);
    $("#disk-bar").style.width = (100 * (s.diskTotal - s.diskFree) / s.diskTotal) + "%";
    $("#temp").textContent = s.temperatureC == null ? "no sensor" : s.temperatureC.toFixed(1) + " °C";
    $("#uptime").textContent = s.uptime;
    $("#versions").textContent = "ledge " + s.version + " · " + s.goVersion;
    const h = await fetch("/healthz").then((r) => r.json());
    const el = $("#health"); el.textContent = h.status; el.className = "big " + (h.status === "ok" ? "ok" : "bad");
    $("#health-list").replaceChildren(...h.components.map((c) => ledge.el("li", { class: c.status === "ok" ? "" : "bad", text: c.name + ": " + c.status + (c.error ? " (" + c.error + ")" : "") })));
  });
};
