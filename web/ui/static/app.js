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
    let res;
    try {
      res = await fetch("/api/v1" + path, opts);
    } catch (err) {
      const e = new Error("ledge does not answer (" + err.message + ")"); e.offline = true;
      throw e;
    }
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
    // Counted in 1024s, so named so: what the CLI says too.
    const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
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

  // offline shows above the page that ledge stopped answering (what the
  // page shows is from before, and is greyed), and hides it again when an
  // update gets through.
  let offlineSince = null;
  function offline(down) {
    const note = document.getElementById("offline"), main = document.getElementById("main");
    if (!note || !main) return;
    if (down && !offlineSince) {
      offlineSince = new Date();
      note.textContent = `ledge does not answer since ${offlineSince.toLocaleTimeString()}: what this page shows is from then. It reconnects by itself.`;
    }
    if (!down) offlineSince = null;
    note.hidden = !down;
    main.classList.toggle("stale", down);
  }

  // every runs fn now and every ms while the page is visible; a failed
  // refresh says so in the footer (and the next one tries again), and when
  // ledge does not answer at all, above the page.
  function every(ms, fn) {
    const conn = document.getElementById("conn");
    const tick = async () => {
      if (document.hidden) return;
      try {
        await fn();
        offline(false);
        if (conn && conn.dataset.failed) { conn.textContent = ""; delete conn.dataset.failed; }
      } catch (err) {
        offline(!!err.offline); // any other failure: ledge answered
        if (conn) { conn.textContent = "update failed: " + err.message; conn.dataset.failed = "1"; }
      }
    };
    tick();
    return setInterval(tick, ms);
  }

  // rich turns a message into nodes, `quoted` parts as <code>.
  function rich(text) {
    const f = document.createDocumentFragment();
    for (const part of String(text ?? "").split(/(`[^`]+`)/)) {
      if (/^`[^`]+`$/.test(part)) f.append(el("code", { text: part.slice(1, -1) }));
      else if (part) f.append(part);
    }
    return f;
  }

  // fill puts rows into a table body; with no rows, one cell across the
  // table says it is empty.
  function fill(tbody, rows, empty) {
    if (!rows.length) {
      const td = el("td", { class: "muted empty" }, rich(empty || "None."));
      td.colSpan = Math.max(1, tbody.closest("table").querySelectorAll("thead th").length);
      tbody.replaceChildren(el("tr", {}, td));
      return;
    }
    tbody.replaceChildren(...rows);
  }

  // labelCells gives each cell of a folding table (table.stack) its
  // column's heading, which a phone shows beside it (rows become cards).
  function labelCells(tbody) {
    const heads = [...tbody.closest("table").querySelectorAll("thead th")].map((th) => th.textContent.trim());
    for (const r of tbody.rows) [...r.cells].forEach((td, i) => { if (heads[i] && !td.classList.contains("empty")) td.dataset.label = heads[i]; });
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
    // A chart of the last opts.window seconds spans them, whatever it has
    // of them so far.
    if (opts.window && isFinite(t0)) { t1 = Date.now() / 1000; t0 = t1 - opts.window; }
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
    for (const tb of document.querySelectorAll("table.stack tbody")) {
      labelCells(tb);
      new MutationObserver(() => labelCells(tb)).observe(tb, { childList: true });
    }
    const init = pages[document.body.dataset.page];
    if (init) init();
  });
  return { api, sse, $, el, bytes, pct, ago, every, chart, pages, rich, fill };
})();

// status renders a state as a coloured badge.
ledge.status = (s) => ledge.el("span", { class: "badge status-" + String(s || "unknown").toLowerCase().replace(/[^a-z]/g, ""), text: s || "unknown" });
// cell builds a table cell from text or a node.
ledge.td = (x) => { const c = document.createElement("td"); c.append(x == null ? "–" : x); return c; };
ledge.tr = (...cells) => { const r = document.createElement("tr"); r.append(...cells.map(ledge.td)); return r; };
ledge.show = (node, msg, ok) => { node.replaceChildren(ledge.rich(msg)); node.className = ok ? "result-ok" : "result-bad"; };
// debounce coalesces bursts of events into one refresh.
ledge.debounce = (fn, ms = 300) => { let t; return () => { clearTimeout(t); t = setTimeout(fn, ms); }; };
ledge.dur = (ns) => { const s = ns / 1e9; return s < 60 ? s.toFixed(1) + " s" : s < 3600 ? (s / 60).toFixed(1) + " min" : (s / 3600).toFixed(1) + " h"; };
ledge.ms = (ns) => (ns == null ? "–" : (ns / 1e6).toFixed(ns < 1e7 ? 1 : 0) + " ms");
ledge.time = (iso) => new Date(iso).toLocaleTimeString();

// health sums a pipeline up: its state (the API's when it gives one, else
// from running and the source's phase), whether it is failing, and why.
ledge.health = (p) => {
  const src = p.source || {};
  const state = p.state || (!p.running ? "stopped" : src.phase === "backoff" ? "backoff" : src.phase === "streaming" ? "running" : src.phase || "starting");
  const failing = state === "backoff" || state === "failed";
  const reason = p.reason || src.reason || "";
  const short = { failed: "pipeline failed", backoff: "camera offline", stopped: "stopped", ended: "video ended", starting: "connecting…", connecting: "connecting…" }[state] || "";
  let text = short;
  if (state === "failed") text += ": " + (reason || "unknown reason");
  else if (state === "backoff") text += ": " + (reason || "no frames") + (src.retry ? " · retry " + ledge.time(src.retry) : "");
  // Actions whose target is down: the pipeline runs, its events do not
  // get where they should.
  const actionsFailing = (p.actions || []).filter((a) => a.failing);
  return { state, failing, reason, text, short, actionsFailing };
};

// latency is the badge a live view shows: frame rate and the time from
// capture to boxes (frames the detector ran on; every frame without one).
ledge.latency = (p) => {
  const l = p.latency || {};
  const det = l.capture_to_detection || {};
  const x = p.model && det.count ? det : l.capture_to_result || {};
  return `${(p.fpsOut || 0).toFixed(1)} fps · ${ledge.ms(x.p50)} p50 · ${ledge.ms(x.p99)} p99`;
};

// feed is the page's one live connection: a WebSocket carrying the
// annotated frames of the pipelines it watches, each at its own rate.
// watch(name, fps, fn) calls fn(blob, header) for each frame (fps 0: the
// server's full rate) and returns a function that stops it.
ledge.feed = (() => {
  const subs = new Map(); // name -> Set of {fps, fn}
  let ws = null, wait = 500, queued = false;
  const rate = (set) => { let r = -1; for (const s of set) r = s.fps === 0 || r === 0 ? 0 : Math.max(r, s.fps); return r; };
  function send() {
    queued = false;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const watch = {};
    if (!document.hidden) for (const [name, set] of subs) if (set.size) watch[name] = rate(set);
    ws.send(JSON.stringify({ watch }));
  }
  const later = () => { if (!queued) { queued = true; queueMicrotask(send); } };
  function connect() {
    ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/v1/live");
    ws.binaryType = "arraybuffer";
    ws.onopen = () => { wait = 500; send(); };
    ws.onmessage = (m) => {
      if (typeof m.data === "string") {
        const n = JSON.parse(m.data);
        for (const s of subs.get(n.pipeline) || []) if (s.onError) s.onError(n.message);
        return;
      }
      const hl = new DataView(m.data).getUint16(0);
      const head = JSON.parse(new TextDecoder().decode(new Uint8Array(m.data, 2, hl)));
      const blob = new Blob([new Uint8Array(m.data, 2 + hl)], { type: "image/jpeg" });
      for (const s of subs.get(head.pipeline) || []) s.fn(blob, head);
    };
    ws.onclose = () => { ws = null; setTimeout(connect, wait); wait = Math.min(2 * wait, 10000); };
  }
  document.addEventListener("visibilitychange", later);
  return {
    watch(name, fps, fn, onError) {
      if (!ws) connect();
      const s = { fps, fn, onError };
      if (!subs.has(name)) subs.set(name, new Set());
      subs.get(name).add(s);
      later();
      return () => { subs.get(name).delete(s); later(); };
    },
  };
})();

// showFrame puts a frame of the feed into an img, releasing the last one.
ledge.showFrame = (img, blob, head) => {
  const url = URL.createObjectURL(blob), old = img.dataset.url;
  img.addEventListener("load", () => { if (old) URL.revokeObjectURL(old); }, { once: true });
  img.src = url;
  img.dataset.url = url;
  img.dataset.seq = String(head.seq);
  img.hidden = false;
};

// snapshot is an event's snapshot thumbnail (a link to the full image), or
// a placeholder saying there is none.
ledge.snapshot = (e) => {
  const { el } = ledge;
  if (!e.snapshot) return el("span", { class: "thumb none", text: "no snapshot" });
  const src = "/api/v1/snapshots/" + e.snapshot + "?v=" + encodeURIComponent(String(e.score || ""));
  return el("a", { href: src, target: "_blank", class: "thumb", title: "open the snapshot" },
    el("img", { src, alt: `snapshot of ${e.class || "event"} in ${e.pipeline}`, loading: "lazy" }));
};

// objectItem renders one tracked object's event: snapshot, class and best
// score, zones, when it was in view.
ledge.objectItem = (e) => {
  const { el, status, dur, time } = ledge;
  const end = e.end || null;
  const dwell = e.dwell || (end ? Date.parse(end) - Date.parse(e.start) : Date.parse(e.time) - Date.parse(e.start)) * 1e6;
  const head = el("div", { class: "event-head" }, el("strong", { text: `${e.class || "object"} #${e.trackId}` }), " ",
    el("span", { class: "score", text: (100 * (e.score || 0)).toFixed(0) + " %" }), " ", end ? el("span", { class: "muted small", text: dur(dwell) }) : status("in view"));
  const zones = el("div", { class: "zones" }, ...(e.zones || []).map((z) => el("span", { class: "chip", text: z })));
  const when = el("div", { class: "muted small", text: `${e.pipeline} · ${time(e.start)}${end ? " – " + time(end) : ""}${e.model ? " · model " + e.model : ""}` });
  return el("li", { class: "card event", "data-key": ledge.objectKey(e), "data-captured": String(Date.parse(e.captured || e.time)) }, ledge.snapshot(e), el("div", { class: "event-body" }, head, zones, when));
};
ledge.objectKey = (e) => e.id ? "id-" + e.id : `${e.pipeline}-${e.trackId}-${e.start}`;

// rawItem renders one raw event (object.enter, zone.enter, ...).
ledge.rawItem = (e) => {
  const { el } = ledge;
  const what = [e.type, e.class, e.zone ? "in " + e.zone : "", e.trackId ? "#" + e.trackId : "", e.score ? (e.score * 100).toFixed(0) + " %" : "", e.type === "count.changed" ? `${e.previous ?? 0} → ${e.count ?? 0}` : ""].filter(Boolean).join(" ");
  return el("li", { class: "card event", "data-id": String(e.id || ""), "data-captured": String(Date.parse(e.captured || e.time)) }, ledge.snapshot(e),
    el("div", { class: "event-body" }, el("strong", { text: what }), el("div", { class: "muted small", text: `${e.pipeline} · ${new Date(e.time).toLocaleString()}${e.model ? " · model " + e.model : ""}` })));
};

// camTile is one camera of a grid: its frames (or why there are none), its
// name, state and badge. onOpen is called when it is clicked.
ledge.camTile = (name, onOpen, small) => {
  const { el } = ledge;
  const img = el("img", { alt: "live view of " + name, "data-pipeline": name });
  img.hidden = true;
  const offline = el("span", { class: "cam-offline" });
  offline.hidden = true;
  const frame = el(onOpen ? "button" : "div", { class: "cam-frame", "aria-label": (onOpen ? "enlarge " : "") + name }, img, offline);
  if (onOpen) { frame.type = "button"; frame.addEventListener("click", () => onOpen(name)); }
  const title = el("span", { class: "cam-title" });
  const stats = el("span", { class: "cam-stats muted small" });
  const fig = el("figure", { class: "card cam" + (small ? " small" : ""), "data-pipeline": name }, frame, el("figcaption", {}, title, stats));
  const t = { fig, img, offline, title, stats, name };
  t.update = (p) => {
    const h = ledge.health(p);
    t.title.replaceChildren(el("strong", { text: name }), " ", ledge.status(h.state === "backoff" ? "offline" : h.state === "running" ? "live" : h.state));
    // An action whose target is down: the frames flow, the events do not
    // get where they should (the Pipelines page has why).
    const af = h.actionsFailing.map((a) => a.name);
    t.stats.textContent = (af.length ? `action ${af.join(", ")} failing` + (small || h.failing ? "" : " · ") : "") + (small || h.failing ? "" : ledge.latency(p) + (p.model ? " · " + p.model.split("/").pop() : ""));
    t.stats.classList.toggle("bad", af.length > 0);
    t.stats.classList.toggle("muted", !af.length);
    // A frame keeps showing when the camera drops (dimmed), with the reason.
    t.offline.textContent = small ? h.short : h.text;
    t.offline.title = h.text;
    t.offline.hidden = !h.text;
    t.fig.classList.toggle("failing", h.failing);
  };
  return t;
};

ledge.pages.overview = () => {
  const { api, $, el, bytes, pct, ago, every, health } = ledge;
  const thumbs = new Map();
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
    $("#disk-low").hidden = !s.diskLow;
    $("#disk-low").textContent = s.diskLow || "";
    $("#temp").textContent = s.temperatureC == null ? "no sensor" : s.temperatureC.toFixed(1) + " °C";
    $("#uptime").textContent = s.uptime;
    $("#versions").textContent = "ledge " + s.version + " · " + s.goVersion;
    const u = s.uncleanStop;
    $("#unclean").hidden = !u;
    if (u) $("#unclean").textContent = `The previous run (pid ${u.pid}) did not stop cleanly (killed or crashed) at about ${new Date(u.lastSeen).toLocaleString()}; its state was restored from the database.`;
    // /api/v1/health, not /healthz: the same report, answered 200 when a
    // component fails (a 503 would be an error in the console).
    const h = await api("GET", "/health");
    const hb = $("#health"); hb.textContent = h.status; hb.className = "big " + (h.status === "ok" ? "ok" : "bad");
    $("#health-list").replaceChildren(...(h.components || []).map((c) => el("li", { class: c.status === "ok" ? "" : "bad", text: c.name + ": " + c.status + (c.error ? " (" + c.error + ")" : "") })));
    const quiet = (p) => p.catch(() => null);
    // Only what is there: a 503 would be an error in the console.
    const { hub: hubOn, upstream: upOn } = document.body.dataset;
    const [pl, dep, hub, evs] = await Promise.all([quiet(api("GET", "/pipelines")), quiet(api("GET", "/deployments/current")), hubOn === "on" ? quiet(api("GET", "/hub")) : null, quiet(api("GET", "/events?limit=6"))]);
    if (pl) {
      const ps = pl.pipelines, failing = ps.filter((p) => health(p).failing);
      const run = ps.filter((p) => p.running && !health(p).failing).length;
      $("#sum-pipelines").textContent = `${run} / ${ps.length} running`;
      $("#sum-pipelines-detail").textContent = ps.length ? `${ps.reduce((a, p) => a + (p.fpsOut || 0), 0).toFixed(1)} frames/s processed` : "none yet";
      const f = $("#sum-failing");
      const acting = ps.filter((p) => !health(p).failing && health(p).actionsFailing.length);
      const parts = [];
      if (failing.length) parts.push(el("strong", { text: `${failing.length} failing` }), ": " + failing.map((p) => `${p.name} (${health(p).short})`).join(", "));
      if (acting.length) parts.push(...(parts.length ? ["; "] : []), el("strong", { text: `${acting.length} with a failing action` }), ": " + acting.map((p) => `${p.name} (${health(p).actionsFailing.map((a) => a.name).join(", ")})`).join(", "));
      f.replaceChildren(...parts);
      f.hidden = !parts.length;
      $("#sum-pipelines").closest(".card").classList.toggle("failing", parts.length > 0);
      cameras(ps);
    }
    if (dep) {
      const ms = Object.values(dep.modules || {});
      $("#sum-modules").textContent = `${ms.filter((m) => m.runtimeStatus === "running").length} / ${ms.length} running`;
      // A deployment that failed, was rolled back or was refused says why
      // (the Deployments page has the rest).
      const dd = dep.deployment || {};
      const why = dd.state === "failed" && dd.reason ? `: ${dd.reason}` : dd.rolledBackFrom ? `, rolled back from ${dd.rolledBackFrom.version}: ${dd.rolledBackFrom.reason}` : "";
      const refused = dep.rejected ? ` · last manifest refused: ${dep.rejected.reason}` : "";
      $("#sum-deployment").textContent = (dep.lastDesiredVersion ? `deployment ${dep.lastDesiredVersion} (${dd.state || ""}${why})` : "no deployment yet") + refused;
      // Which fail and how, as for pipelines (the Modules page has why):
      // crashed or refused, or waiting on an image that does not pull.
      const bad = Object.entries(dep.modules || {}).filter(([, m]) => ["failed", "backoff", "unhealthy"].includes(m.runtimeStatus) || /^pull of .* failed/.test(m.statusDescription || ""))
        .map(([n, m]) => `${n} (${m.runtimeStatus === "unknown" ? "image pull failing" : m.runtimeStatus})`).sort();
      const mf = $("#sum-modules-failing");
      mf.replaceChildren(...(bad.length ? [el("strong", { text: `${bad.length} failing` }), ": " + bad.join(", ")] : []));
      mf.hidden = !bad.length;
      $("#sum-modules").closest(".card").classList.toggle("failing", bad.length > 0);
    }
    // The hub off (a fleet device), the link to the broker is still there.
    const up = hub ? hub.upstream || {} : upOn === "on" && await quiet(api("GET", "/upstream")) || {};
    $("#sum-devices").textContent = hub ? hub.clientsConnected : hubOn === "on" ? "–" : "hub off";
    $("#sum-upstream").textContent = up.mode ? up.state : "none";
    // Not connected: since when and why (the Hub page has the whole reason).
    const down = up.mode && up.state !== "connected" ? `since ${ago(up.since)}${up.lastError ? ": " + up.lastError : ""}` : "";
    $("#sum-queue").textContent = hub ? `${bytes(hub.queueBytes)} queued${down && " · " + down}` : down || "hub off";
    if (evs) {
      const list = $("#recent");
      list.replaceChildren(...evs.events.map(ledge.objectItem));
      if (!evs.events.length) list.replaceChildren(el("li", { class: "muted", text: "No events yet." }));
    }
  });
  // Camera thumbnails, one frame a second each, over the page's one feed.
  function cameras(ps) {
    const grid = $("#thumbs");
    if (!ps.length) { grid.replaceChildren(el("p", { class: "muted", text: "No cameras yet: add a pipeline on the Pipelines page or in ledge.yaml." })); return; }
    if (grid.querySelector("p")) grid.replaceChildren();
    for (const p of ps) {
      let t = thumbs.get(p.name);
      if (!t) {
        t = ledge.camTile(p.name, (name) => { location.href = "/live#" + encodeURIComponent(name); }, true);
        t.stop = ledge.feed.watch(p.name, 1, (blob, head) => ledge.showFrame(t.img, blob, head));
        thumbs.set(p.name, t);
        grid.append(t.fig);
      }
      t.update(p);
    }
    for (const [name, t] of thumbs) if (!ps.some((p) => p.name === name)) { t.stop(); t.fig.remove(); thumbs.delete(name); }
  }
};

// Live: a grid of every camera over one connection. The visible tiles share
// about 20 frames a second (at most the server's rate each); a tile clicked
// opens large, at the full rate, and the grid pauses behind it.
ledge.pages.live = () => {
  const { api, $, el, every } = ledge;
  const grid = $("#cams"), dialog = $("#cam-dialog");
  const tiles = new Map(), visible = new Set(), stats = new Map();
  let big = null; // {name, stop}
  const io = new IntersectionObserver((entries) => {
    for (const e of entries) (e.isIntersecting ? visible.add : visible.delete).call(visible, e.target.dataset.pipeline);
    rewatch();
  });
  function rewatch() {
    const fps = Math.max(1, Math.min(10, Math.floor(20 / Math.max(1, visible.size))));
    for (const [name, t] of tiles) {
      const on = !big && visible.has(name);
      if (on && t.fps !== fps) {
        if (t.stop) t.stop();
        t.fps = fps;
        t.stop = ledge.feed.watch(name, fps, (blob, head) => ledge.showFrame(t.img, blob, head));
      } else if (!on && t.stop) {
        t.stop(); t.stop = null; t.fps = null;
      }
    }
  }
  function open(name) {
    if (big) big.stop();
    const img = $("#cam-big");
    img.hidden = true;
    big = { name, stop: ledge.feed.watch(name, 0, (blob, head) => ledge.showFrame(img, blob, head)) };
    img.alt = "live view of " + name;
    img.dataset.pipeline = name;
    showBig();
    if (!dialog.open) dialog.showModal();
    rewatch();
  }
  function showBig() {
    const p = big && stats.get(big.name);
    $("#cam-big-title").textContent = big ? big.name : "";
    if (!p) return;
    const h = ledge.health(p);
    // A failing camera has no rate or latency to show (the tiles' rule).
    $("#cam-big-stats").textContent = h.failing ? "" : ledge.latency(p) + (p.model ? ` · ${p.model.split("/").pop()} ${p.modelVersion || ""}` : " · no detector");
    $("#cam-big-offline").textContent = h.text;
    $("#cam-big-offline").hidden = !h.text;
  }
  dialog.addEventListener("close", () => {
    if (big) big.stop();
    big = null;
    if (location.hash) history.replaceState(null, "", location.pathname);
    rewatch();
  });
  $("#cam-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (e) => { if (e.target === dialog) dialog.close(); });
  let first = true;
  every(2000, async () => {
    const { pipelines } = await api("GET", "/pipelines");
    if (!pipelines.length) { grid.replaceChildren(el("p", { class: "muted", text: "No pipelines yet: add one on the Pipelines page or in ledge.yaml." })); return; }
    if (grid.querySelector("p")) grid.replaceChildren();
    for (const p of pipelines) {
      stats.set(p.name, p);
      let t = tiles.get(p.name);
      if (!t) {
        t = ledge.camTile(p.name, open);
        tiles.set(p.name, t);
        grid.append(t.fig);
        io.observe(t.fig);
      }
      t.update(p);
    }
    for (const [name, t] of tiles) if (!pipelines.some((p) => p.name === name)) { if (t.stop) t.stop(); io.unobserve(t.fig); t.fig.remove(); tiles.delete(name); stats.delete(name); }
    showBig();
    if (first && location.hash && tiles.has(decodeURIComponent(location.hash.slice(1)))) open(decodeURIComponent(location.hash.slice(1)));
    first = false;
  });
};

// Events: one per tracked object, updated live while it is in view; or the
// raw stream (object.enter, zone.enter, ...) for those who want every one.
ledge.pages.events = () => {
  const { api, $, el, sse } = ledge;
  const rawTypes = ["object.enter", "object.leave", "zone.enter", "zone.leave", "zone.loiter", "count.changed"];
  let next = 0, filter = {}, raw = false;
  const list = $("#events");
  function query(extra) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries({ ...filter, ...extra })) if (v) q.set(k, v);
    return q.toString();
  }
  async function load(append) {
    const res = await api("GET", (raw ? "/events/raw?" : "/events?") + query(append && next ? { before: next } : {}));
    const items = res.events.map(raw ? ledge.rawItem : ledge.objectItem);
    if (append) list.append(...items); else list.replaceChildren(...items);
    if (!append && !items.length) list.replaceChildren(el("li", { class: "muted", text: "No events match." }));
    next = res.next; $("#more").hidden = !next;
  }
  function matches(e) {
    return (!filter.pipeline || e.pipeline === filter.pipeline) && (!filter.type || e.type === filter.type) &&
      (!filter.class || e.class === filter.class) && !filter.to &&
      (!filter.zone || e.zone === filter.zone || (e.zones || []).includes(filter.zone));
  }
  // add puts an arrival at the top; "No events match." goes only then.
  function add(li) {
    const empty = list.querySelector("li.muted"); if (empty) empty.remove();
    list.prepend(li);
  }
  function arrive(e) {
    if (raw) {
      if (rawTypes.includes(e.type) && matches(e)) add(ledge.rawItem(e));
    } else if (e.type.startsWith("track.") && matches(e)) {
      const key = ledge.objectKey(e);
      const old = [...list.children].find((li) => li.dataset.key === key);
      if (old && e.type === "track.end" && filter.active) {
        old.remove();
        if (!list.children.length) list.replaceChildren(el("li", { class: "muted", text: "No events match." }));
      }
      else if (old) old.replaceWith(ledge.objectItem(e));
      else if (e.type !== "track.end") add(ledge.objectItem(e));
    }
    while (list.children.length > 500) list.lastChild.remove();
    $("#live-note").textContent = raw ? "Live: new raw events appear at the top." : "Live: objects appear when they are confirmed and update while in view.";
  }
  $("#filters").onsubmit = (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    raw = f.get("show") === "raw";
    filter = { pipeline: f.get("pipeline"), class: f.get("class").trim(), zone: f.get("zone").trim(),
      from: f.get("from") ? new Date(f.get("from")).toISOString() : "", to: f.get("to") ? new Date(f.get("to")).toISOString() : "" };
    if (raw) filter.type = f.get("type"); else if (f.get("active")) filter.active = "true";
    load(false);
  };
  if (matchMedia("(max-width: 720px)").matches) $("#filters-box").open = false; // a phone shows the events first
  const mode = () => { const r = $("select[name=show]").value === "raw"; $("#type-filter").hidden = !r; $("#active-filter").hidden = r; };
  $("select[name=show]").addEventListener("change", mode);
  mode();
  $("#more").onclick = () => load(true);
  api("GET", "/pipelines").then(({ pipelines }) => $("select[name=pipeline]").append(...pipelines.map((p) => el("option", { text: p.name }))));
  load(false);
  const handlers = {};
  for (const t of ["track.start", "track.update", "track.end", ...rawTypes]) handlers[t] = arrive;
  sse("/events/stream?types=" + Object.keys(handlers).join(","), handlers);
};

ledge.pages.pipelines = () => {
  const { api, $, el, every, ms, status, chart, show, health } = ledge;
  const cards = new Map();
  async function act(name, what) {
    try { await api("POST", `/pipelines/${encodeURIComponent(name)}/${what}`); load(); } catch (e) { alert(e.message); }
  }
  async function load() {
    const { pipelines } = await api("GET", "/pipelines");
    const grid = $("#pipelines");
    if (!pipelines.length) { grid.replaceChildren(el("p", { class: "muted", text: "No pipelines yet." })); cards.clear(); return; }
    if (grid.querySelector("p.muted")) grid.replaceChildren();
    for (const p of pipelines) {
      let c = cards.get(p.name);
      if (!c) {
        c = { head: el("div"), body: el("dl", { class: "kv small" }), spec: el("pre", { class: "spec", tabindex: "0" }), fps: el("canvas", { class: "chart", "aria-label": "frames per second of " + p.name }), lat: el("canvas", { class: "chart", "aria-label": "latency of " + p.name }), buttons: el("div", { class: "toolbar" }) };
        c.card = el("section", { class: "card", "aria-label": "pipeline " + p.name }, c.head, c.body,
          el("details", { class: "spec-box" }, el("summary", { text: "Spec" }), c.spec),
          el("h3", { text: "Frames per second" }), c.fps, el("h3", { text: "Latency, capture to result (ms)" }), c.lat, c.buttons);
        cards.set(p.name, c); grid.append(c.card);
        for (const a of ["start", "stop", "reload"]) { const b = el("button", { type: "button", text: a[0].toUpperCase() + a.slice(1) }); b.onclick = () => act(p.name, a); c.buttons.append(b); }
        if (p.owner === "api") { const d = el("button", { type: "button", class: "danger", text: "Delete" }); d.onclick = async () => { if (confirm(`Delete pipeline ${p.name}?`)) { try { await api("DELETE", "/pipelines/" + encodeURIComponent(p.name)); load(); } catch (e) { alert(e.message); } } }; c.buttons.append(d); }
      }
      const src = p.source || {}, h = health(p), spec = p.spec || {};
      c.card.classList.toggle("failing", h.failing || h.actionsFailing.length > 0);
      c.head.replaceChildren(el("h2", {}, el("strong", { text: p.name }), " ", status(h.state), " ", el("span", { class: "muted small", text: "from " + p.owner })));
      const state = [h.reason ? `${src.phase || h.state}: ${h.reason}` : src.phase || h.state];
      if (src.retry) state.push(`retry ${new Date(src.retry).toLocaleTimeString()}`);
      if (src.reconnects) state.push(`${src.reconnects} reconnects`);
      if (h.failing && p.failingSince) state.push(`failing since ${new Date(p.failingSince).toLocaleString()}`);
      const rows = [
        ["Source", (spec.source || {}).url || "–"],
        ["State", state.join(", ")],
        ["Model", p.model ? `${p.model} ${p.modelVersion || ""}` : "none"],
        ["fps in / out", `${(p.fpsIn || 0).toFixed(1)} / ${(p.fpsOut || 0).toFixed(1)}`],
        ["Frames", `${p.framesIn} in, ${p.framesOut} out, ${p.dropped} dropped, ${p.skippedMotion} skipped (no motion)`],
        ["Detections / events", `${p.detections} / ${p.events}`],
      ];
      for (const [stage, l] of Object.entries(p.latency || {}).sort()) if (l.count) rows.push([`${stage.replaceAll("_", " ")} p50 / p99`, `${ms(l.p50)} / ${ms(l.p99)}`]);
      for (const a of p.actions || []) rows.push([`action ${a.name}`, `${a.failing ? `FAILING since ${new Date(a.failingSince).toLocaleString()}: ${a.lastError} · ` : ""}${a.delivered} delivered, ${a.failed} failed, ${a.dropped} dropped${a.limited ? `, ${a.limited} limited` : ""}${!a.failing && a.lastError ? " · last error: " + a.lastError : ""}`]);
      c.body.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
      const text = JSON.stringify(spec, null, 2);
      if (c.spec.textContent !== text) c.spec.textContent = text;
      api("GET", `/pipelines/${encodeURIComponent(p.name)}/history`).then(({ samples }) => {
        const t = (s) => new Date(s.t).getTime() / 1000;
        chart(c.fps, [{ name: "in", points: samples.map((s) => [t(s), s.fpsIn]) }, { name: "out", points: samples.map((s) => [t(s), s.fpsOut]) }]);
        chart(c.lat, [{ name: "p50", points: samples.map((s) => [t(s), s.p50]) }, { name: "p99", points: samples.map((s) => [t(s), s.p99]) }]);
      }).catch(() => {});
    }
    for (const [name, c] of cards) if (!pipelines.some((p) => p.name === name)) { c.card.remove(); cards.delete(name); }
  }
  $("#save").onclick = async () => {
    const body = $("#spec").value;
    const m = /^name:\s*["']?([\w-]+)/m.exec(body) || /"name"\s*:\s*"([\w-]+)"/.exec(body);
    try {
      if (m) await api("PUT", "/pipelines/" + encodeURIComponent(m[1]), body, true); else await api("POST", "/pipelines", body, true);
      show($("#save-result"), "Saved; the pipeline runs.", true); load();
    } catch (e) { show($("#save-result"), e.message, false); }
  };
  every(3000, load);
};

ledge.pages.modules = () => {
  const { api, $, el, status, tr, sse, debounce, every } = ledge;
  let logsFor = "";
  // hubLink is a module's connection to the hub: running is not connected
  // (a module may be reconnecting, or not use the hub at all).
  const hubLink = (h) => {
    if (!h) return el("span", { class: "muted", text: "–" });
    const at = new Date(h.since).toLocaleTimeString();
    const title = `hub client ${h.identity}`;
    if (h.connected) return el("span", { class: "ok", title, text: `connected since ${at}` });
    const why = h.unreachable ? `: ${h.unreachable}` : "";
    return el("span", { class: "warn", title, text: (h.seen ? `not connected since ${at}` : `never connected since ledge started (${at})`) + why });
  };
  async function load() {
    const rep = await api("GET", "/deployments/current");
    const eng = rep.engine || {};
    const pf = (rep.runtime || {}).platform || {};
    $("#engine").textContent = eng.connected ? `Docker engine ${pf.version || ""} (${pf.os || ""}/${pf.architecture || ""})` : "Docker engine not reachable" + (eng.error ? ": " + eng.error : "");
    $("#engine").classList.toggle("bad", !eng.connected);
    const names = Object.keys(rep.modules || {}).sort();
    const body = $("#modules tbody");
    if (!names.length) { ledge.fill(body, [], "No modules: apply a deployment on the Deployments page."); return; }
    body.replaceChildren(...names.map((n) => {
      const m = rep.modules[n];
      const st = el("span", {}, status(m.runtimeStatus));
      if (m.statusDescription && m.statusDescription !== m.runtimeStatus) st.append(" ", el("span", { class: "muted small", text: m.statusDescription }));
      if (m.pull && m.pull.percent < 100) { const b = el("div", { class: "bar progress" }, el("span")); b.firstChild.style.width = m.pull.percent + "%"; st.append(b); }
      const restart = el("button", { type: "button", text: "Restart" });
      restart.onclick = async () => { restart.disabled = true; try { await api("POST", `/modules/${encodeURIComponent(n)}/restart`); } catch (e) { alert(e.message); } restart.disabled = false; };
      const logs = el("button", { type: "button", text: "Logs" });
      logs.onclick = () => { logsFor = n; showLogs(); };
      const actions = el("span", {}, restart, " ", logs);
      const name = el("span", {}, el("strong", { text: n }));
      if (m.elevated && m.elevated.length) name.append(" ", el("span", { class: "badge warn", title: "Elevated container settings: " + m.elevated.join(", "), text: "elevated" }));
      return tr(name, st, hubLink(m.hub), el("code", { text: (m.settings || {}).image || "" }), String(m.restartCount ?? 0), String(m.exitCode ?? ""), m.lastStartTimeUtc ? ledge.ago(m.lastStartTimeUtc + "Z") : "–", actions);
    }));
  }
  async function showLogs() {
    $("#logs-panel").hidden = false;
    $("#logs-name").textContent = logsFor;
    const res = await fetch(`/api/v1/modules/${encodeURIComponent(logsFor)}/logs?tail=300`, { credentials: "same-origin" });
    $("#logs").textContent = (await res.text()) || "(no output)";
    $("#logs").focus();
  }
  $("#logs-refresh").onclick = showLogs;
  $("#logs-close").onclick = () => { $("#logs-panel").hidden = true; };
  const refresh = debounce(load);
  sse("/events/stream?types=module,pull,deployment", { module: refresh, pull: refresh, deployment: refresh });
  every(5000, load);
};

ledge.pages.deployments = () => {
  const { api, $, el, status, tr, show, sse, debounce, every } = ledge;
  let currentText = "";
  async function load() {
    const rep = await api("GET", "/deployments/current");
    const d = rep.deployment || {};
    $("#cur-version").textContent = rep.lastDesiredVersion || "none";
    $("#cur-state").replaceChildren(status(d.state || "none"));
    $("#cur-meta").textContent = d.source ? `from ${d.source}${d.signer ? ", signed by " + d.signer : ""}` : "";
    const trust = [(rep.signing || {}).warning, d.unsigned && "This deployment is unsigned: " + d.unsigned].filter(Boolean);
    $("#trust-warning").textContent = trust.join(" "); $("#trust-warning").hidden = !trust.length;
    const s = rep.lastDesiredStatus || {};
    // edgeAgent's status codes, in words.
    // The code stays in brackets for whoever knows Azure's (417: no
    // deployment configuration set).
    const word = { 200: "OK", 400: "Invalid deployment", 406: "Not responding", 412: "Unsupported schema version", 417: "No deployment set yet", 500: "Failed" }[s.code];
    $("#cur-code").textContent = s.code ? `${word || "Status"} (${s.code})` : "–";
    const desc = s.description && s.description.toLowerCase() !== (word || "").toLowerCase() ? s.description : "";
    $("#cur-desc").textContent = desc;
    const mods = Object.entries(rep.modules || {});
    $("#cur-modules").textContent = `${mods.filter(([, m]) => m.runtimeStatus === "running").length} / ${mods.length} running`;
    $("#pulls").replaceChildren(...mods.filter(([, m]) => m.pull).map(([n, m]) => {
      const b = el("div", { class: "bar progress", role: "progressbar", "aria-valuenow": String(Math.round(m.pull.percent)), "aria-valuemin": "0", "aria-valuemax": "100", "aria-label": "pull of " + n }, el("span"));
      b.firstChild.style.width = m.pull.percent + "%";
      return el("div", { class: "small" }, `${n}: ${m.pull.image} ${m.pull.percent.toFixed(0)} % (${ledge.bytes(m.pull.current)})`, b);
    }));
    // Asked only when there is one: a 404 would be an error in the console.
    const none = () => { currentText = ""; $("#current-manifest").textContent = "No deployment yet."; };
    if (!rep.deployment) none();
    else try {
      const cur = await api("GET", "/deployments/current/manifest");
      currentText = cur.manifest; $("#current-manifest").textContent = currentText;
    } catch (e) { if (e.status === 404) none(); }
    const h = await api("GET", "/deployments?limit=30");
    $("#history tbody").replaceChildren(...(h.deployments || []).map((x) =>
      tr(String(x.id), x.version, status(x.state), x.source, new Date(x.receivedAt).toLocaleString(), x.reason || "")));
    if (!(h.deployments || []).length) ledge.fill($("#history tbody"), [], "No deployments yet.");
  }
  const body = () => ({ manifest: $("#manifest").value, signature: $("#signature").value.trim() || undefined });
  function planTable(plan) {
    const p = (plan && plan.plan) || plan || {};
    const changes = p.changes || [], elevated = p.elevated || [], warnings = p.warnings || [], notes = p.notes || [];
    const parts = [];
    // How ledge reads the standard parts of an Azure manifest (system modules, mqttBroker): not warnings.
    if (notes.length) parts.push(el("div", { class: "muted", id: "plan-notes" }, el("p", { text: "Notes:" }),
      el("ul", {}, ...notes.map((n) => el("li", { text: n })))));
    // Accepted but worth telling: ignored keys (with their path and a "did you mean"), $upstream...
    if (warnings.length) parts.push(el("div", { class: "warn", id: "plan-warnings" }, el("p", { text: "Warnings:" }),
      el("ul", {}, ...warnings.map((w) => el("li", { text: w })))));
    if (elevated.length) parts.push(el("div", { class: "warn", id: "plan-elevated" }, el("p", { text: "Elevated container settings (allowed by agent.allowElevatedPermissions):" }),
      el("ul", {}, ...elevated.map((e) => el("li", { text: `module ${e.module}: ${e.setting} ${e.value} ${e.why}` })))));
    if (!changes.length) parts.push(el("p", { class: "muted", text: "No changes." }));
    else {
      const t = el("table", {}, el("thead", {}, tr("Kind", "Name", "Action", "Detail")));
      const tb = el("tbody"); t.append(tb);
      for (const c of changes) tb.append(tr(c.kind, c.name, status(c.action), c.detail || ""));
      parts.push(el("div", { class: "table-wrap" }, t));
    }
    return parts.length === 1 ? parts[0] : el("div", {}, ...parts);
  }
  function diff(a, b) {
    // Line diff by longest common subsequence; fine for manifests.
    const x = a.split("\n"), y = b.split("\n"), n = x.length, m = y.length;
    const L = Array.from({ length: n + 1 }, () => new Int32Array(m + 1));
    for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
    const out = []; let i = 0, j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && x[i] === y[j]) { out.push(el("span", { text: "  " + x[i] + "\n" })); i++; j++; }
      else if (j < m && (i >= n || L[i][j + 1] >= L[i + 1][j])) { out.push(el("span", { class: "diff-add", text: "+ " + y[j] + "\n" })); j++; }
      else { out.push(el("span", { class: "diff-del", text: "- " + x[i] + "\n" })); i++; }
    }
    return out;
  }
  $("#manifest-file").onchange = async (e) => { const f = e.target.files[0]; if (f) $("#manifest").value = await f.text(); };
  $("#check").onclick = async () => {
    try {
      const plan = await api("POST", "/deployments/check", body());
      show($("#apply-result"), "Valid. Plan:", true);
      $("#plan").replaceChildren(planTable(plan));
      $("#diff").replaceChildren(...diff(currentText, $("#manifest").value)); $("#diff-box").hidden = false;
    } catch (e) { show($("#apply-result"), e.message, false); $("#plan").replaceChildren(); }
  };
  $("#apply").onclick = async () => {
    $("#apply").disabled = true;
    try {
      const res = await api("POST", "/deployments", body());
      show($("#apply-result"), `Applied: deployment ${res.deployment ? res.deployment.id : ""} is being reconciled.`, true);
      $("#plan").replaceChildren(planTable(res));
      load();
    } catch (e) { show($("#apply-result"), e.message, false); }
    $("#apply").disabled = false;
  };
  $("#rollback").onclick = async () => {
    if (!confirm("Roll back to the last deployment that converged?")) return;
    try { await api("POST", "/deployments/rollback"); load(); } catch (e) { alert(e.message); }
  };
  const refresh = debounce(load);
  sse("/events/stream?types=module,pull,deployment,rejected", { module: refresh, pull: refresh, deployment: refresh, rejected: refresh });
  every(5000, load);
};

ledge.pages.devices = () => {
  if (document.body.dataset.hub === "off") return; // the page says so
  const { api, $, el, tr, show, every } = ledge;
  async function load() {
    const [ids, st] = await Promise.all([api("GET", "/hub/identities"), api("GET", "/hub")]);
    const online = new Map((st.clients || []).map((c) => [c.identity || c.id, c]));
    const list = ids.identities || ids || [];
    const body = $("#identities tbody");
    if (!list.length) { ledge.fill(body, [], "No identities yet: add one below, or `ledge identity add NAME`."); return; }
    body.replaceChildren(...list.map((i) => {
      const c = online.get(i.name);
      const rm = el("button", { type: "button", class: "danger", text: "Remove" });
      rm.onclick = async () => {
        if (!confirm(`Remove ${i.name}? Its keys stop working.`)) return;
        try { await api("DELETE", "/hub/identities/" + i.name); load(); } catch (e) { alert(e.message); }
      };
      // How it connects (while connected), else how it may.
      const auth = c ? c.auth : i.kind === "user" ? "password" : i.x509Thumbprint ? "x509 thumbprint" : i.x509CA ? "x509 CA" : "SAS key";
      return tr(el("strong", { text: i.name }), i.kind, c ? ledge.status("connected") : el("span", { class: "muted", text: "no" }), auth, i.managedBy || "", new Date(i.created).toLocaleString(), i.managedBy ? "" : rm);
    }));
  }
  $("#add-form").onsubmit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const spec = { name: f.get("name"), kind: f.get("kind") };
    if (f.get("password")) spec.password = f.get("password");
    try {
      const r = await api("POST", "/hub/identities", spec);
      const dl = el("dl", { class: "kv" });
      for (const [k, v] of Object.entries({ "Connection string": r.connectionString, "Primary key": r.primaryKey, "Secondary key": r.secondaryKey, Password: r.password })) if (v) dl.append(el("dt", { text: k }), el("dd", {}, el("code", { text: v })));
      // A user's password is kept hashed; a device's keys can be shown again.
      const again = r.password ? "Copy the password now: it is shown only this once." : `Copy what the device needs; \`ledge identity show ${r.name}\` on the appliance shows it again.`;
      $("#add-result").replaceChildren(el("p", { class: "result-ok" }, ledge.rich(`Added ${r.name}. ${again}`)), dl);
      e.target.reset(); load();
    } catch (err) { $("#add-result").replaceChildren(el("p", { class: "result-bad", text: err.message })); }
  };
  const twinName = () => new FormData($("#twin-form")).get("name");
  $("#twin-form").onsubmit = async (e) => {
    e.preventDefault();
    try { $("#twin").textContent = JSON.stringify(await api("GET", "/hub/twins/" + twinName()), null, 2); } catch (err) { $("#twin").textContent = err.message; }
  };
  $("#patch").onclick = async () => {
    let patch; try { patch = JSON.parse($("#desired").value); } catch (err) { show($("#twin-result"), "Not JSON: " + err.message, false); return; }
    try { const t = await api("PATCH", "/hub/twins/" + twinName(), patch); $("#twin").textContent = JSON.stringify(t, null, 2); show($("#twin-result"), "Desired properties patched.", true); }
    catch (err) { show($("#twin-result"), err.message, false); }
  };
  $("#method-form").onsubmit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    let payload; try { payload = JSON.parse(f.get("payload") || "null"); } catch (err) { $("#method-result").textContent = "Payload is not JSON: " + err.message; return; }
    try { const r = await api("POST", "/hub/methods", { target: f.get("target"), method: f.get("method"), payload, timeoutSeconds: Number(f.get("timeout")) }); $("#method-result").textContent = JSON.stringify(r, null, 2); }
    catch (err) { $("#method-result").textContent = `${err.status}: ${err.message}`; }
  };
  $("#c2d-form").onsubmit = async (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    try { await api("POST", "/hub/c2d", { device: f.get("device"), body: f.get("body") }); show($("#c2d-result"), "Sent.", true); }
    catch (err) { show($("#c2d-result"), err.message, false); }
  };
  every(5000, load);
};

// upstreamCard fills the Hub page's Upstream card.
ledge.upstreamCard = (up) => {
  const { $, status } = ledge;
  $("#upstream").replaceChildren(up.mode ? status(up.state) : "none");
  $("#upstream-detail").textContent = up.mode ? `${up.mode} ${up.broker || ""}${up.state !== "connected" && up.since ? " · since " + ledge.ago(up.since) : ""}${up.lastError ? " · " + up.lastError : ""}` : "no upstream configured";
};

ledge.pages.hub = () => {
  const { api, $, tr, bytes, every, chart, dur, fill } = ledge;
  const { hub: hubOn, upstream: upOn } = document.body.dataset;
  if (hubOn === "off") { // the link to the broker alone (a fleet device)
    if (upOn === "on") every(2000, async () => ledge.upstreamCard(await api("GET", "/upstream")));
    return;
  }
  const hist = { in: [], out: [], routed: [] };
  every(2000, async () => {
    const s = await api("GET", "/hub");
    $("#clients").textContent = s.clientsConnected;
    $("#ports").textContent = `MQTT ${s.ports.mqttAddr || "off"} · TLS ${s.ports.mqttsAddr || "off"} · ${s.hostname}`;
    $("#rates").textContent = `${s.rates.mqttIn.toFixed(0)} / ${s.rates.mqttOut.toFixed(0)}`;
    $("#routed").textContent = `${s.rates.routedIn.toFixed(0)} / ${s.rates.delivered.toFixed(0)}`;
    ledge.upstreamCard(s.upstream || {});
    $("#queue-bytes").textContent = bytes(s.queueBytes);
    $("#queue-bar").style.width = s.queueQuotaBytes ? (100 * s.queueBytes / s.queueQuotaBytes) + "%" : "0";
    $("#queue-quota").textContent = s.queueQuotaBytes ? "of " + bytes(s.queueQuotaBytes) + " quota" : "no quota";
    $("#authfail").textContent = s.authFailures;
    fill($("#queues tbody"), (s.queues || []).map((q) => tr(q.endpoint, String(q.depth), bytes(q.bytes), q.depth ? dur(q.oldestAge) : "–", String(q.delivered), String(q.failures), q.backoff ? dur(q.backoff) : "–", q.lastError || "")), "No queues: routes to modules and upstream get one each.");
    fill($("#drops tbody"), Object.entries(s.drops || {}).map(([k, v]) => tr(k, String(v))), "No messages dropped.");
    fill($("#clients-table tbody"), (s.clients || []).map((c) => tr(c.id, c.identity || "", c.kind || "", c.auth || "", c.listener, c.remote)), "No clients connected.");
    const t = Date.now() / 1000;
    for (const [k, v] of [["in", s.rates.mqttIn], ["out", s.rates.mqttOut], ["routed", s.rates.routedIn]]) { hist[k].push([t, v]); while (hist[k].length && hist[k][0][0] < t - 600) hist[k].shift(); }
    chart($("#rate-chart"), [{ name: "MQTT in", points: hist.in }, { name: "MQTT out", points: hist.out }, { name: "routed", points: hist.routed }], { window: 600 });
  });
};

ledge.pages.models = () => {
  const { api, $, el, every, status, tr, show, bytes, sse, debounce } = ledge;
  async function load() {
    const { models } = await api("GET", "/models");
    const grid = $("#models");
    if (!models || !models.length) { grid.replaceChildren(el("p", { class: "muted" }, ledge.rich("No models yet: a deployment's `models:` section, `ledge models pull`, or the form below."))); return; }
    grid.replaceChildren(...models.map((m) => {
      const t = el("table", {}, el("thead", {}, tr("Version", "State", "Kind", "Size", "Activated", "")));
      const tb = el("tbody"); t.append(tb);
      for (const v of m.versions || []) {
        const st = el("span", {}, status(v.version === m.active ? "active" : v.state));
        if (v.error) st.append(" ", el("span", { class: "small bad", text: v.error }));
        if (v.progress) {
          const b = el("div", { class: "bar progress", role: "progressbar", "aria-label": `download of ${m.name}@${v.version}`, "aria-valuenow": String(Math.max(0, Math.round(v.progress.percent))) }, el("span"));
          b.firstChild.style.width = Math.max(0, v.progress.percent) + "%";
          st.append(b, el("span", { class: "small muted", text: `${bytes(v.progress.bytes)}${v.progress.total ? " of " + bytes(v.progress.total) : ""} · ${bytes(v.progress.rate)}/s` }));
        }
        let act = "";
        if (v.version !== m.active && v.state === "ready") {
          act = el("button", { type: "button", text: "Activate" });
          act.onclick = async () => { act.disabled = true; try { await api("POST", `/models/${encodeURIComponent(m.name)}/activate`, { version: v.version }); load(); } catch (e) { alert(e.message); act.disabled = false; } };
        }
        tb.append(tr(v.version, st, v.kind || "auto", bytes(v.size), v.activatedAt ? new Date(v.activatedAt).toLocaleString() : "–", act));
      }
      // Roll back where there is a version to go back to: one that was
      // active before and is still ready (the store's rule).
      let rb = [];
      if (m.active && (m.versions || []).some((v) => v.version !== m.active && v.state === "ready" && v.activatedAt)) {
        const b = el("button", { type: "button", text: "Roll back" });
        b.onclick = async () => { try { await api("POST", `/models/${encodeURIComponent(m.name)}/rollback`); load(); } catch (e) { alert(e.message); } };
        rb = [el("div", { class: "toolbar spaced" }, b)];
      }
      return el("section", { class: "card", "aria-label": "model " + m.name },
        el("h2", {}, el("strong", { text: m.name }), " ", el("span", { class: "muted small", text: `active ${m.active || "none"}${m.pinned ? ", pinned by hand" : m.desired && m.desired === m.active ? ", asked for by the deployment" : ""}${m.desired && m.desired !== m.active ? ", deployment wants " + m.desired : ""}${!m.desired && !m.pinned ? ", not in the deployment" : ""}` })),
        el("div", { class: "table-wrap" }, t), ...rb);
    }));
  }
  $("#pull").onclick = async () => {
    let spec; try { spec = JSON.parse($("#pull-spec").value); } catch (e) { show($("#pull-result"), "Not JSON: " + e.message, false); return; }
    try { await api("POST", "/models" + ($("#pull-activate").checked ? "?activate=true" : ""), spec); show($("#pull-result"), "Pulling.", true); load(); }
    catch (e) { show($("#pull-result"), e.message, false); }
  };
  const refresh = debounce(load, 500);
  sse("/events/stream?types=model.progress,model.state", { "model.progress": refresh, "model.state": refresh });
  every(5000, load);
};
