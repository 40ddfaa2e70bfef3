// memwarden dashboard: memory over time, the pressure level and what the Warden governs.
//
// Every URL is relative, so the page works wherever the app is mounted. The event
// stream is read with fetch (EventSource cannot send a bearer token); a token is
// asked for once, kept in sessionStorage for this tab and sent only in the
// Authorization header, never in a URL.
"use strict";

(() => {
  const LEVELS = ["low", "medium", "high", "critical"];
  const TOKEN_KEY = "memwarden.token:" + location.pathname;
  const POLL_MS = 2000;
  const PANEL_EVERY = 2; // panels refresh every second poll
  const MAX_POINTS = 3600;
  const MAX_EVENTS = 50;
  const BACKFILL = 600;

  const state = {
    points: [],
    thresholds: { medium: 0.7, high: 0.85, critical: 0.95, hysteresis: 0.02 },
    level: null,
    ready: null,
    shedLevel: null,
    token: readToken(),
    events: [],
    hover: null,
    polls: 0,
  };

  const $ = (id) => document.getElementById(id);
  const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function readToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch (_) {
      return null;
    }
  }

  function storeToken(token) {
    state.token = token;
    try {
      if (token === null) sessionStorage.removeItem(TOKEN_KEY);
      else sessionStorage.setItem(TOKEN_KEY, token);
    } catch (_) {
      // Storage may be disabled; the token then lives as long as the page.
    }
  }

  // -- formatting ----------------------------------------------------------------------

  const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

  function fmtBytes(n) {
    if (n === null || n === undefined || !isFinite(n)) return "–";
    let value = Math.abs(n);
    let unit = 0;
    while (value >= 1024 && unit < UNITS.length - 1) {
      value /= 1024;
      unit += 1;
    }
    const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2;
    return (n < 0 ? "-" : "") + value.toFixed(digits) + " " + UNITS[unit];
  }

  function fmtCount(n) {
    if (n === null || n === undefined || !isFinite(n)) return "–";
    return Math.round(n).toLocaleString("en-US");
  }

  function fmtPercent(f) {
    if (f === null || f === undefined || !isFinite(f)) return "–";
    return (f * 100).toFixed(f < 0.1 ? 1 : 0) + "%";
  }

  function fmtTime(t, seconds = true) {
    const d = new Date(t * 1000);
    const pad = (v) => String(v).padStart(2, "0");
    const hm = pad(d.getHours()) + ":" + pad(d.getMinutes());
    return seconds ? hm + ":" + pad(d.getSeconds()) : hm;
  }

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  // -- the API -------------------------------------------------------------------------

  class Unauthorized extends Error {}

  function headers(extra) {
    const h = Object.assign({ Accept: "application/json" }, extra || {});
    if (state.token) h.Authorization = "Bearer " + state.token;
    return h;
  }

  async function api(path) {
    const response = await fetch(path, { headers: headers(), cache: "no-store" });
    if (response.status === 401) throw new Unauthorized("token required");
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      throw new Error(path + ": HTTP " + response.status);
    }
    if (!response.ok || !body || body.status !== "success") {
      const message = body && body.error ? body.error.message : "HTTP " + response.status;
      throw new Error(path + ": " + message);
    }
    return body.data;
  }

  async function metricsText() {
    const response = await fetch("metrics", { headers: headers({ Accept: "text/plain" }), cache: "no-store" });
    if (!response.ok) return null;
    return response.text();
  }

  // -- the token -----------------------------------------------------------------------

  let tokenPrompt = null;

  function askToken(refused) {
    if (tokenPrompt) return tokenPrompt;
    if (refused) storeToken(null);
    const dialog = $("token-dialog");
    const form = $("token-form");
    const input = $("token-input");
    $("token-error").hidden = !refused;
    tokenPrompt = new Promise((resolve) => {
      const submit = (event) => {
        event.preventDefault();
        const value = input.value.trim();
        if (!value) return;
        form.removeEventListener("submit", submit);
        storeToken(value);
        input.value = "";
        dialog.close();
        tokenPrompt = null;
        resolve();
      };
      form.addEventListener("submit", submit);
      setConnection("token", "token required");
      if (!dialog.open) dialog.showModal();
      input.focus();
    });
    return tokenPrompt;
  }

  // Retries ``action`` until it succeeds, asking for a token when the API wants one.
  async function withToken(action) {
    for (;;) {
      try {
        return await action();
      } catch (error) {
        if (!(error instanceof Unauthorized)) throw error;
        await askToken(Boolean(state.token));
      }
    }
  }

  // -- status --------------------------------------------------------------------------

  function setConnection(stateName, text) {
    const el = $("connection");
    el.dataset.state = stateName;
    el.textContent = text || stateName;
  }

  function showError(message) {
    const bar = $("error");
    if (message) {
      bar.textContent = message;
      bar.hidden = false;
    } else {
      bar.hidden = true;
    }
  }

  function setLevel(level) {
    if (!LEVELS.includes(level)) return;
    state.level = level;
    const el = $("level");
    el.dataset.level = level;
    el.textContent = level;
  }

  function setReady(ready) {
    state.ready = ready;
    const el = $("ready");
    el.dataset.ready = String(ready);
    el.textContent = ready ? "ready" : "not ready";
  }

  function setUsage(sample) {
    if (!sample || !sample.limit) return;
    $("usage").textContent =
      fmtBytes(sample.used) + " of " + fmtBytes(sample.limit) + " (" + fmtPercent(sample.used / sample.limit) + ")";
  }

  function setThresholds(t) {
    for (const name of ["medium", "high", "critical", "hysteresis"]) {
      if (t && typeof t[name] === "number") state.thresholds[name] = t[name];
    }
    if (t && LEVELS.includes(t.shedLevel || t.shed_level)) state.shedLevel = t.shedLevel || t.shed_level;
    for (const name of ["medium", "high", "critical"]) {
      const sheds = name === state.shedLevel ? ", sheds" : "";
      $("th-" + name).textContent = name + " ≥ " + fmtPercent(state.thresholds[name]) + sheds;
    }
  }

  // -- points --------------------------------------------------------------------------

  // The level a sample's fraction means, entering at a threshold and leaving below it
  // minus the hysteresis (the monitor's rule, without its minimum dwell time).
  function classify(fraction, previous) {
    const t = state.thresholds;
    const lines = [0, t.medium, t.high, t.critical];
    let raw = 0;
    for (let i = 3; i > 0; i -= 1) {
      if (fraction >= lines[i]) {
        raw = i;
        break;
      }
    }
    let prev = LEVELS.indexOf(previous);
    if (prev < 0 || raw >= prev) return LEVELS[raw];
    while (prev > raw && fraction < lines[prev] - t.hysteresis) prev -= 1;
    return LEVELS[prev];
  }

  // The stack's top is the measured use (or the reservations, when granted bytes are
  // not touched yet): managed (reserved) bytes, the cache's part of them, and the use
  // beyond the reservations. The budget's own unmanaged figure is a recent peak, so
  // it is shown in the budget panel rather than stacked.
  function toPoint(sample, level) {
    const used = Number(sample.used) || 0;
    const limit = Number(sample.limit) || 0;
    const managed = Number(sample.managed) || 0;
    const cache = Math.min(managed, Number(sample.cache) || 0);
    return {
      t: Number(sample.timestamp),
      used,
      limit,
      managed,
      cache,
      unmanaged: Math.max(0, used - managed),
      level,
    };
  }

  function addSamples(samples, liveLevel) {
    const points = state.points;
    let last = points.length ? points[points.length - 1] : null;
    let added = 0;
    for (const sample of samples) {
      if (!sample || typeof sample.timestamp !== "number") continue;
      if (last && sample.timestamp <= last.t) continue;
      const fraction = sample.limit ? sample.used / sample.limit : 0;
      const level = liveLevel || classify(fraction, last ? last.level : null);
      last = toPoint(sample, level);
      points.push(last);
      added += 1;
    }
    if (points.length > MAX_POINTS) points.splice(0, points.length - MAX_POINTS);
    if (added) draw();
    return added;
  }

  // -- panels --------------------------------------------------------------------------

  function figures(id, rows) {
    const dl = $(id);
    dl.replaceChildren();
    for (const [name, value] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = value;
      dl.append(dt, dd);
    }
  }

  function table(id, rows, emptyText, columns) {
    const body = $(id).tBodies[0];
    body.replaceChildren();
    if (!rows.length) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = document.createElement("td");
      td.colSpan = columns;
      td.textContent = emptyText;
      tr.append(td);
      body.append(tr);
      return;
    }
    for (const cells of rows) {
      const tr = document.createElement("tr");
      for (const cell of cells) {
        const td = document.createElement("td");
        td.textContent = cell;
        tr.append(td);
      }
      body.append(tr);
    }
  }

  function showBudget(b) {
    if (!b) return;
    const capacity = b.capacity !== undefined ? b.capacity : b.total_allocated;
    figures("budget", [
      ["capacity", fmtBytes(capacity)],
      ["reserved", fmtBytes(b.current_usage)],
      ["managed", fmtBytes(b.managed)],
      ["cache (evictable)", fmtBytes(b.evictable)],
      ["unmanaged peak", fmtBytes(b.unmanaged)],
      ["available", fmtBytes(b.available)],
      ["waiters", fmtCount(b.waiters) + " (peak " + fmtCount(b.waiters_peak) + ")"],
      ["timeouts", fmtCount(b.timeouts)],
      ["evictions", fmtCount(b.evictions)],
      ["peak reserved", fmtBytes(b.peak_usage)],
    ]);
  }

  function showShed(counts) {
    const rows = Object.entries(counts || {}).sort((a, b) => b[1] - a[1]);
    const total = rows.reduce((sum, [, n]) => sum + n, 0);
    figures("shed", [["total", fmtCount(total)], ...rows.map(([reason, n]) => [reason, fmtCount(n)])]);
  }

  function shedFromMetrics(text) {
    const counts = {};
    const pattern = /^memwarden_requests_shed_total\{([^}]*)\}\s+([0-9.eE+-]+)/gm;
    let match;
    while ((match = pattern.exec(text)) !== null) {
      const reason = /reason="([^"]*)"/.exec(match[1]);
      counts[reason ? reason[1] : "unknown"] = (counts[reason ? reason[1] : "unknown"] || 0) + Number(match[2]);
    }
    return counts;
  }

  function showSessions(s) {
    if (!s) return;
    figures("sessions", [
      ["live", fmtCount(s.sessions) + " (peak " + fmtCount(s.peak_sessions) + ")"],
      ["bytes", fmtBytes(s.total_bytes)],
      ["peak bytes", fmtBytes(s.peak_bytes)],
      ["charged to the budget", fmtBytes(s.budget_bytes)],
      ["created", fmtCount(s.created)],
      ["expired", fmtCount(s.expired)],
      ["ended", fmtCount(s.ended)],
    ]);
  }

  function showCaches(report) {
    const caches = (report && report.caches) || {};
    const rows = Object.keys(caches)
      .sort()
      .map((name) => {
        const c = caches[name];
        return [name, fmtCount(c.size), fmtBytes(c.nbytes), fmtPercent(c.hit_rate), fmtCount(c.evictions)];
      });
    table("caches", rows, "no caches", 5);
  }

  function showPools(data) {
    const pools = (data && (data.pools || data)) || {};
    const rows = Object.keys(pools)
      .sort()
      .map((name) => {
        const p = pools[name];
        const max = p.max_size ? " / " + fmtCount(p.max_size) : "";
        return [name, fmtCount(p.in_use), fmtCount(p.idle), fmtCount(p.size) + max, fmtCount(p.waiters)];
      });
    table("pools", rows, "no pools", 5);
  }

  function showEvents() {
    const list = $("events");
    list.replaceChildren();
    if (!state.events.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = "no level changes since this page opened";
      list.append(li);
      return;
    }
    for (const ev of state.events) {
      const li = document.createElement("li");
      const time = document.createElement("time");
      time.textContent = fmtTime(ev.timestamp);
      const from = document.createElement("span");
      from.className = "level";
      from.dataset.level = ev.previous;
      from.textContent = ev.previous;
      const arrow = document.createElement("span");
      arrow.textContent = "→";
      const to = document.createElement("span");
      to.className = "level";
      to.dataset.level = ev.level;
      to.textContent = ev.level;
      const detail = document.createElement("span");
      const s = ev.sample || {};
      detail.textContent = s.limit ? fmtBytes(s.used) + " of " + fmtBytes(s.limit) + " (" + fmtPercent(s.used / s.limit) + ")" : "";
      li.append(time, from, arrow, to, detail);
      list.append(li);
    }
  }

  // -- drawing -------------------------------------------------------------------------

  function niceStep(span, target) {
    const raw = span / target;
    for (const base of [1, 1024, 1024 ** 2, 1024 ** 3, 1024 ** 4]) {
      for (const m of [1, 2, 5, 10, 20, 50, 100, 200, 500]) {
        if (m * base >= raw) return m * base;
      }
    }
    return raw;
  }

  function niceTimeStep(span, target) {
    const raw = span / target;
    for (const s of [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200]) {
      if (s >= raw) return s;
    }
    return Math.ceil(raw / 3600) * 3600;
  }

  function sizeCanvas(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    return { ctx, w: canvas.clientWidth, h: canvas.clientHeight };
  }

  const PAD = { left: 64, right: 12, top: 10, bottom: 22 };

  function geometry(w, h) {
    const pts = state.points;
    const first = pts[0];
    const last = pts[pts.length - 1];
    const t0 = first.t;
    const t1 = Math.max(last.t, t0 + 1);
    let ymax = 0;
    for (const p of pts) ymax = Math.max(ymax, p.limit, p.managed + p.unmanaged);
    ymax = ymax * 1.05 || 1;
    const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * (w - PAD.left - PAD.right);
    const y = (v) => h - PAD.bottom - (v / ymax) * (h - PAD.top - PAD.bottom);
    return { t0, t1, ymax, x, y };
  }

  function drawChart() {
    const canvas = $("chart");
    const { ctx, w, h } = sizeCanvas(canvas);
    ctx.clearRect(0, 0, w, h);
    const pts = state.points;
    canvas.dataset.points = String(pts.length);
    const ink = cssVar("--ink");
    const muted = cssVar("--muted");
    const line = cssVar("--line");
    ctx.font = "11px system-ui, sans-serif";
    if (!pts.length) {
      ctx.fillStyle = muted;
      ctx.fillText("waiting for samples…", PAD.left, h / 2);
      return;
    }
    const g = geometry(w, h);
    const last = pts[pts.length - 1];
    const limit = last.limit;
    const right = w - PAD.right;

    // The zones where memwarden acts: the level each height of the chart means.
    const t = state.thresholds;
    const zones = [
      [0, t.medium, "--low"],
      [t.medium, t.high, "--medium"],
      [t.high, t.critical, "--high"],
      [t.critical, 1, "--critical"],
    ];
    ctx.save();
    ctx.globalAlpha = 0.12;
    for (const [from, to, color] of zones) {
      ctx.fillStyle = cssVar(color);
      const top = g.y(Math.min(to * limit, g.ymax));
      ctx.fillRect(PAD.left, top, right - PAD.left, g.y(from * limit) - top);
    }
    ctx.restore();

    // Axes and grid.
    ctx.strokeStyle = line;
    ctx.fillStyle = muted;
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    const step = niceStep(g.ymax, 5);
    for (let v = 0; v <= g.ymax; v += step) {
      const yy = Math.round(g.y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(PAD.left, yy);
      ctx.lineTo(right, yy);
      ctx.stroke();
      ctx.fillText(fmtBytes(v), PAD.left - 6, yy);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const span = g.t1 - g.t0;
    const tstep = niceTimeStep(span, Math.max(2, Math.floor((w - PAD.left) / 90)));
    for (let tt = Math.ceil(g.t0 / tstep) * tstep; tt <= g.t1; tt += tstep) {
      const xx = g.x(tt);
      if (xx < PAD.left + 24 || xx > right - 24) continue; // a label cut by an edge
      ctx.fillText(fmtTime(tt, tstep < 60), xx, h - PAD.bottom + 5);
    }

    // Stacked areas: managed (without cache), cache, unmanaged.
    const layers = [
      [(p) => p.managed - p.cache, cssVar("--managed")],
      [(p) => p.cache, cssVar("--cache")],
      [(p) => p.unmanaged, cssVar("--unmanaged")],
    ];
    const base = pts.map(() => 0);
    const xs = pts.map((p) => g.x(p.t));
    if (pts.length === 1) xs[0] = right;
    for (const [value, color] of layers) {
      const tops = pts.map((p, i) => base[i] + Math.max(0, value(p)));
      ctx.beginPath();
      pts.forEach((p, i) => (i ? ctx.lineTo(xs[i], g.y(tops[i])) : ctx.moveTo(xs[i], g.y(tops[i]))));
      if (pts.length === 1) ctx.lineTo(xs[0] - 3, g.y(tops[0]));
      for (let i = pts.length - 1; i >= 0; i -= 1) ctx.lineTo(xs[i], g.y(base[i]));
      if (pts.length === 1) ctx.lineTo(xs[0] - 3, g.y(base[0]));
      ctx.closePath();
      ctx.fillStyle = color;
      ctx.globalAlpha = 0.85;
      ctx.fill();
      ctx.globalAlpha = 1;
      tops.forEach((v, i) => (base[i] = v));
    }

    // The limit, as a step line (a resized container moves it).
    ctx.strokeStyle = ink;
    ctx.setLineDash([6, 4]);
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    pts.forEach((p, i) => {
      const yy = g.y(p.limit);
      if (i === 0) ctx.moveTo(pts.length === 1 ? PAD.left : xs[0], yy);
      else {
        ctx.lineTo(xs[i], g.y(pts[i - 1].limit));
        ctx.lineTo(xs[i], yy);
      }
    });
    ctx.lineTo(right, g.y(last.limit));
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = ink;
    ctx.textAlign = "right";
    ctx.textBaseline = "bottom";
    ctx.fillText("limit " + fmtBytes(last.limit), right - 4, g.y(last.limit) - 2);

    // Hover: a vertical line at the nearest point.
    const shown = state.hover === null ? last : pts[state.hover] || last;
    if (state.hover !== null && pts[state.hover]) {
      const xx = Math.round(xs[state.hover]) + 0.5;
      ctx.strokeStyle = ink;
      ctx.globalAlpha = 0.5;
      ctx.beginPath();
      ctx.moveTo(xx, PAD.top);
      ctx.lineTo(xx, h - PAD.bottom);
      ctx.stroke();
      ctx.globalAlpha = 1;
    }
    $("readout").textContent =
      fmtTime(shown.t) +
      "  used " + fmtBytes(shown.used) + " of " + fmtBytes(shown.limit) +
      "  ·  managed " + fmtBytes(shown.managed - shown.cache) +
      "  cache " + fmtBytes(shown.cache) +
      "  unmanaged " + fmtBytes(shown.unmanaged) +
      "  ·  " + shown.level;
  }

  function drawBand() {
    const canvas = $("band");
    const { ctx, w, h } = sizeCanvas(canvas);
    ctx.clearRect(0, 0, w, h);
    const pts = state.points;
    if (!pts.length) return;
    const g = geometry(w, h);
    const right = w - PAD.right;
    for (let i = 0; i < pts.length; i += 1) {
      const from = pts.length === 1 ? PAD.left : g.x(pts[i].t);
      const to = i + 1 < pts.length ? g.x(pts[i + 1].t) : right;
      ctx.fillStyle = cssVar("--" + pts[i].level);
      ctx.fillRect(from, 0, Math.max(1, to - from + 0.5), h);
    }
  }

  let drawPending = false;
  function draw() {
    if (drawPending) return;
    drawPending = true;
    requestAnimationFrame(() => {
      drawPending = false;
      drawChart();
      drawBand();
    });
  }

  function onHover(event) {
    const pts = state.points;
    if (!pts.length) return;
    const canvas = $("chart");
    const rect = canvas.getBoundingClientRect();
    const g = geometry(rect.width, rect.height);
    const px = event.clientX - rect.left;
    let best = 0;
    let bestDistance = Infinity;
    for (let i = 0; i < pts.length; i += 1) {
      const d = Math.abs(g.x(pts[i].t) - px);
      if (d < bestDistance) {
        best = i;
        bestDistance = d;
      }
    }
    state.hover = best;
    draw();
  }

  // -- loading and polling -------------------------------------------------------------

  function applyMemory(data) {
    if (!data) return;
    if (data.thresholds) setThresholds(data.thresholds);
    else if (data.shed_level && data.shed_level !== state.shedLevel) setThresholds({ shedLevel: data.shed_level });
    if (data.level) setLevel(data.level);
    if (typeof data.ready === "boolean") setReady(data.ready);
    setUsage(data);
    return data;
  }

  async function refreshPanels(memory) {
    const [budget, sessions, caches, pools] = await Promise.all([
      api("api/budget"),
      api("api/sessions"),
      api("api/caches"),
      api("api/pools"),
    ]);
    showBudget(budget);
    showSessions(sessions);
    showCaches(caches);
    showPools(pools);
    let shed = (memory && memory.shed) || (budget && budget.shed);
    if (!shed) {
      const text = await metricsText().catch(() => null);
      shed = text ? shedFromMetrics(text) : {};
    }
    showShed(shed);
  }

  async function backfill() {
    const memory = applyMemory(await api("api/memory"));
    const history = await api("api/memory/history?limit=" + BACKFILL);
    addSamples(history.samples || []);
    await refreshPanels(memory);
    draw();
  }

  async function poll() {
    const memory = applyMemory(await api("api/memory"));
    const history = await api("api/memory/history?limit=50");
    addSamples(history.samples || [], state.level);
    state.polls += 1;
    if (state.polls % PANEL_EVERY === 0) await refreshPanels(memory);
  }

  let wake = null;
  function pollSoon() {
    if (wake) wake();
  }

  async function pollLoop() {
    for (;;) {
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, POLL_MS);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      wake = null;
      try {
        await withToken(poll);
        showError(null);
      } catch (error) {
        showError("cannot reach the memwarden API: " + error.message);
      }
    }
  }

  // -- the event stream ----------------------------------------------------------------

  function onPressure(event) {
    if (!event || !LEVELS.includes(event.level)) return;
    setLevel(event.level);
    if (event.sample) setUsage(event.sample);
    if (event.previous && event.previous !== event.level) {
      state.events.unshift(event);
      if (state.events.length > MAX_EVENTS) state.events.length = MAX_EVENTS;
      showEvents();
    }
    pollSoon();
  }

  function dispatch(block, stream) {
    let name = "message";
    const data = [];
    for (const raw of block.split("\n")) {
      if (!raw || raw.startsWith(":")) continue;
      const colon = raw.indexOf(":");
      const field = colon < 0 ? raw : raw.slice(0, colon);
      let value = colon < 0 ? "" : raw.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
      else if (field === "id") stream.lastId = value;
      else if (field === "retry" && /^\d+$/.test(value)) stream.retry = Number(value);
    }
    if (!data.length) return;
    let payload;
    try {
      payload = JSON.parse(data.join("\n"));
    } catch (_) {
      return;
    }
    if (name === "pressure") onPressure(payload);
  }

  async function readStream(stream) {
    const h = headers({ Accept: "text/event-stream" });
    if (stream.lastId) h["Last-Event-ID"] = stream.lastId;
    const response = await fetch("api/memory/events", { headers: h, cache: "no-store" });
    if (response.status === 401) throw new Unauthorized("token required");
    if (!response.ok || !response.body) throw new Error("event stream: HTTP " + response.status);
    setConnection("live");
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      buffer = buffer.replace(/\r\n|\r(?!$)/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        dispatch(buffer.slice(0, end), stream);
        buffer = buffer.slice(end + 2);
      }
    }
  }

  async function streamLoop() {
    const stream = { lastId: null, retry: 2000 };
    for (;;) {
      try {
        await withToken(() => readStream(stream));
      } catch (error) {
        // A dropped connection: poll meanwhile and reconnect after the server's retry.
      }
      setConnection("reconnecting");
      await delay(stream.retry);
    }
  }

  // -- start ---------------------------------------------------------------------------

  // The server writes the Warden's thresholds and shedding level into the page.
  function pageSettings() {
    const meta = document.querySelector('meta[name="memwarden-settings"]');
    const parts = meta ? meta.content.trim().split(/\s+/) : [];
    if (parts.length < 4) return null;
    const [medium, high, critical, hysteresis] = parts.slice(0, 4).map(Number);
    if (![medium, high, critical, hysteresis].every(isFinite)) return null;
    return { medium, high, critical, hysteresis, shedLevel: parts[4] || null };
  }

  async function start() {
    setThresholds(pageSettings());
    showEvents();
    const chart = $("chart");
    chart.addEventListener("mousemove", onHover);
    chart.addEventListener("mouseleave", () => {
      state.hover = null;
      draw();
    });
    window.addEventListener("resize", draw);
    for (;;) {
      try {
        await withToken(backfill);
        showError(null);
        break;
      } catch (error) {
        setConnection("error", "unreachable");
        showError("cannot reach the memwarden API: " + error.message);
        await delay(POLL_MS);
      }
    }
    streamLoop();
    pollLoop();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
