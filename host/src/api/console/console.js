// The hookhost operator console: plain browser JavaScript, no build step, no dependencies.
//
// Everything shown comes from the admin API with the token the operator typed in; the token
// is kept in sessionStorage (this tab only) and sent as a bearer header. Event data (user
// names, errors, plugin log lines) is outside input, so it only ever reaches the page as
// text: `el()` below turns every string into a text node, and nothing assigns innerHTML.
// The page polls every POLL_MS, re-drawing what changed, so it stays live without reloads.
"use strict";

(function () {
  const POLL_MS = 2000;
  const TOKEN_KEY = "hookhost.admin-token";
  const PAGE = 50;
  const MAX_PAGE = 200;
  const SVG_NS = "http://www.w3.org/2000/svg";

  const state = {
    filters: { q: "", event_type: "", group: "", status: "", source: "" },
    limit: PAGE,
    openEvent: null, // uuid whose deliveries are shown
    openDelivery: null, // delivery id whose attempts are shown
    timer: null,
    busy: false,
    again: false, // a refresh was asked for while one was running
    drawn: {}, // what each part was last drawn from (JSON), to skip re-drawing the same
  };

  const $ = (id) => document.getElementById(id);

  // ---- DOM helpers: strings become text nodes, never markup. ----

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "onclick") node.addEventListener("click", value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    append(node, children);
    return node;
  }

  // Whether `part` was last drawn from exactly `data`; records it if not. Unchanged parts
  // are left alone, so a poll does not replace rows the operator is about to click.
  function unchanged(part, data) {
    const json = JSON.stringify(data);
    if (state.drawn[part] === json) return true;
    state.drawn[part] = json;
    return false;
  }

  function replace(node, ...children) {
    node.replaceChildren();
    append(node, children);
  }

  function time(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }

  // A time as two short lines (date, then time) for narrow table columns.
  function stamp(iso) {
    const t = time(iso);
    const [date, clock] = t.split(" ");
    return clock ? [el("div", { class: "sub" }, date), el("div", {}, clock)] : t;
  }

  function age(secs) {
    if (secs === null || secs === undefined) return "—";
    if (secs < 60) return secs + " s";
    if (secs < 3600) return Math.floor(secs / 60) + " min";
    if (secs < 86400) return (secs / 3600).toFixed(1) + " h";
    return (secs / 86400).toFixed(1) + " d";
  }

  function badge(status, text) {
    return el("span", { class: "badge " + status, "data-status": status }, text || status);
  }

  // ---- API ----

  class Unauthorized extends Error {}

  async function api(path, options) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const resp = await fetch(path, {
      ...(options || {}),
      headers: { Authorization: "Bearer " + token, Accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
    });
    if (resp.status === 401) throw new Unauthorized();
    let body = null;
    try {
      body = await resp.json();
    } catch (_) {
      body = null;
    }
    if (!resp.ok) {
      const message = body && typeof body.error === "string" ? body.error : "HTTP " + resp.status;
      throw new Error(path + ": " + message);
    }
    return body;
  }

  // ---- Sign in / out ----

  function showLogin(message) {
    stopPolling();
    state.drawn = {};
    sessionStorage.removeItem(TOKEN_KEY);
    $("console").hidden = true;
    $("live").hidden = true;
    $("sign-out").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("token").value = "";
    $("token").focus();
  }

  function showConsole() {
    $("login").hidden = true;
    $("console").hidden = false;
    $("live").hidden = false;
    $("sign-out").hidden = false;
    startPolling();
  }

  async function signIn(event) {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    try {
      await api("/api/plugins");
      $("token").value = "";
      showConsole();
    } catch (e) {
      showLogin(e instanceof Unauthorized ? "That token was refused." : "The service did not answer: " + e.message);
    }
  }

  // ---- Polling ----

  function startPolling() {
    stopPolling();
    refresh();
  }

  function stopPolling() {
    if (state.timer) clearTimeout(state.timer);
    state.timer = null;
  }

  async function refresh() {
    if (state.busy) {
      state.again = true;
      return;
    }
    state.busy = true;
    state.again = false;
    try {
      const [queue, plugins, events, drift] = await Promise.all([
        api("/api/queue"),
        api("/api/plugins"),
        api("/api/events?" + eventsQuery()),
        api("/api/reconcile"),
      ]);
      drawQueue(queue);
      drawPlugins(plugins.plugins || []);
      drawDrift(drift.reports || [], plugins.plugins || []);
      drawEvents(events);
      await drawDetail();
      $("problem").hidden = true;
      $("live").textContent = "Live · updated " + new Date().toLocaleTimeString();
      $("live").classList.remove("stale");
    } catch (e) {
      if (e instanceof Unauthorized) {
        state.busy = false;
        showLogin("The token was refused; sign in again.");
        return;
      }
      $("problem").textContent = "Could not refresh: " + e.message;
      $("problem").hidden = false;
      $("live").classList.add("stale");
    }
    state.busy = false;
    if (!$("console").hidden) {
      stopPolling();
      state.timer = setTimeout(refresh, state.again ? 0 : POLL_MS);
    }
  }

  function eventsQuery() {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(state.filters)) if (v) p.set(k, v);
    p.set("limit", String(state.limit));
    return p.toString();
  }

  // ---- Queue ----

  function drawQueue(queue) {
    if (unchanged("queue", queue)) return;
    const cards = (queue.plugins || []).map((p) =>
      el(
        "div",
        { class: "card", "data-plugin": p.plugin },
        el("div", { class: "card-title" }, p.plugin),
        el(
          "dl",
          {},
          el("dt", {}, "pending"), el("dd", { class: "n-pending" }, p.pending),
          el("dt", {}, "running"), el("dd", {}, p.running),
          el("dt", {}, "retrying"), el("dd", { class: p.retrying ? "warn" : "" }, p.retrying),
          el("dt", {}, "held"), el("dd", { class: p.held ? "warn n-held" : "n-held" }, p.held || 0),
          el("dt", {}, "dead"), el("dd", { class: p.dead ? "bad n-dead" : "n-dead" }, p.dead),
          el("dt", {}, "done"), el("dd", {}, p.done),
          el("dt", {}, "oldest waiting"), el("dd", {}, age(p.oldest_pending_age_secs))
        )
      )
    );
    if (!cards.length) cards.push(el("p", { class: "muted" }, "No deliveries yet."));
    replace($("queue-plugins"), cards);
    drawHeld(queue.plugins || []);
    drawChart(queue.attempts_per_minute || []);
  }

  // One banner per plugin whose guard holds deliveries: the operator decides here.
  function drawHeld(plugins) {
    const banners = plugins
      .filter((p) => p.held > 0)
      .map((p) =>
        el(
          "div",
          { class: "held-banner", role: "alert", "data-plugin": p.plugin },
          el("span", { class: "held-text" }, p.held + (p.held === 1 ? " delivery" : " deliveries") + " held for " + p.plugin + " by its guard"),
          el("button", { type: "button", class: "held-release", onclick: (ev) => decideHeld(p.plugin, "release", ev.currentTarget) }, "Release"),
          el("button", { type: "button", class: "held-discard quiet", onclick: (ev) => decideHeld(p.plugin, "discard", ev.currentTarget) }, "Discard")
        )
      );
    replace($("held-banners"), banners);
  }

  async function decideHeld(plugin, decision, button) {
    button.disabled = true;
    try {
      await api("/api/plugins/" + encodeURIComponent(plugin) + "/held/" + decision, { method: "POST" });
    } catch (e) {
      problem(e);
    }
    delete state.drawn.queue;
    refresh();
  }

  function drawChart(minutes) {
    const W = 360, H = 90, PAD = 18;
    const max = Math.max(1, ...minutes.map((m) => m.attempts));
    const bar = (W - 2) / Math.max(1, minutes.length);
    const scale = (n) => ((H - PAD) * n) / max;
    const bars = minutes.map((m, i) => {
      const ok = m.attempts - m.failed;
      const x = 1 + i * bar;
      const g = svg("g", {}, svg("title", {}, time(m.minute) + ": " + m.attempts + " attempts, " + m.failed + " failed"));
      if (ok > 0) g.appendChild(svg("rect", { x, y: H - PAD - scale(m.attempts), width: Math.max(1, bar - 1), height: scale(ok), class: "ok" }));
      if (m.failed > 0) g.appendChild(svg("rect", { x, y: H - PAD - scale(m.failed), width: Math.max(1, bar - 1), height: scale(m.failed), class: "failed" }));
      return g;
    });
    const total = minutes.reduce((s, m) => s + m.attempts, 0);
    const failed = minutes.reduce((s, m) => s + m.failed, 0);
    const chart = svg(
      "svg",
      { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "attempts per minute over the last hour" },
      svg("line", { x1: 0, y1: H - PAD, x2: W, y2: H - PAD, class: "axis" }),
      bars,
      svg("text", { x: 0, y: H - 4, class: "tick" }, "60 min ago"),
      svg("text", { x: W, y: H - 4, class: "tick end" }, "now"),
      svg("text", { x: 0, y: 10, class: "tick" }, "max " + max + "/min")
    );
    replace($("chart"), chart);
    $("chart-caption").textContent = `Attempts per minute, last hour: ${total} (${failed} failed)`;
  }

  // ---- Plugins ----

  function list(items, empty) {
    if (!items || !items.length) return el("span", { class: "muted" }, empty);
    return items.map((i) => el("span", { class: "chip" }, i));
  }

  function limits(l) {
    if (!l || typeof l !== "object") return "—";
    return Object.entries(l).map(([k, v]) => el("div", { class: "kv" }, k + ": " + (typeof v === "object" ? JSON.stringify(v) : v)));
  }

  function drawPlugins(plugins) {
    if (unchanged("plugins", plugins)) return;
    const rows = plugins.map((p) => {
      const reloadFailed = p.state === "active" && p.last_error;
      const state = el(
        "td",
        {},
        badge(p.state === "active" ? "done" : "dead", p.state),
        reloadFailed ? el("span", { class: "badge dead reload-failed", title: "the last reload was refused; the version shown keeps running" }, "reload failed") : null
      );
      return el(
        "tr",
        { "data-plugin": p.name, class: p.last_error ? "has-error" : "" },
        el("td", { class: "name" }, p.name),
        el("td", {}, p.version || "—"),
        state,
        el("td", { class: "nowrap" }, time(p.loaded_at)),
        el(
          "td",
          {},
          el("div", {}, list(p.event_types, "no event types")),
          el("div", { class: "sub" }, "groups: ", p.groups ? list(p.groups, "none") : el("span", { class: "muted" }, "any"))
        ),
        el(
          "td",
          {},
          el("div", {}, list(p.allowed_hosts, "no network")),
          p.secrets && p.secrets.length ? el("div", { class: "sub" }, "secrets: ", list(p.secrets, "")) : null
        ),
        el("td", { class: "limits" }, limits(p.limits)),
        el("td", { class: "error-text" }, p.last_error || "—")
      );
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No plugins loaded.")));
    replace($("plugin-rows"), rows);
  }

  // ---- Drift (reconcile) ----

  function changeList(title, changes, cls) {
    if (!changes.length) return null;
    return el(
      "div",
      { class: "drift-list " + cls },
      el("div", { class: "sub" }, title + " (" + changes.length + ")"),
      el(
        "ul",
        {},
        changes.map((c) =>
          el("li", { title: c.reason }, el("span", { class: "name" }, c.login || "(login unknown)"), " ", el("span", { class: "muted" }, c.okta_user_id + " — " + c.reason))
        )
      )
    );
  }

  function drawDrift(reports, plugins) {
    if (unchanged("drift", [reports, plugins.map((p) => p.name)])) return;
    const byName = new Map(reports.map((r) => [r.plugin, r]));
    const cards = plugins
      .filter((p) => p.state === "active")
      .map((p) => {
        const r = byName.get(p.name);
        const check = el("button", { type: "button", class: "quiet" }, "Check now");
        check.addEventListener("click", () => reconcile(p.name, false, false, check));
        if (!r) {
          return el("div", { class: "card drift", "data-plugin": p.name }, el("div", { class: "card-title" }, p.name), el("p", { class: "muted" }, "No report yet."), check);
        }
        const changes = r.add.length + r.remove.length;
        const apply = el("button", { type: "button", class: "apply" }, "Apply " + changes + " change" + (changes === 1 ? "" : "s"));
        apply.disabled = changes === 0 || r.applied;
        apply.addEventListener("click", () => reconcile(p.name, true, false, apply));
        return el(
          "div",
          { class: "card drift", "data-plugin": p.name },
          el("div", { class: "card-title" }, p.name, " ", changes ? badge("retrying", "drift") : badge("done", "in sync")),
          el(
            "dl",
            {},
            el("dt", {}, "Okta members"), el("dd", {}, r.okta_members),
            el("dt", {}, "managed"), el("dd", {}, r.managed_accounts),
            el("dt", {}, "to add"), el("dd", { class: "n-add" + (r.add.length ? " warn" : "") }, r.add.length),
            el("dt", {}, "to remove"), el("dd", { class: "n-remove" + (r.remove.length ? " warn" : "") }, r.remove.length),
            el("dt", {}, "checked"), el("dd", {}, time(r.at)),
            el("dt", {}, "schedule"), el("dd", {}, r.every_secs ? "every " + r.every_secs + " s, " + r.mode : "none")
          ),
          r.applied ? el("p", { class: "sub" }, "Applied: " + r.events.length + " events stored.") : null,
          r.held_back ? el("p", { class: "error-text" }, r.held_back) : null,
          changeList("Add", r.add, "add"),
          changeList("Remove", r.remove, "remove"),
          el("div", { class: "actions" }, check, " ", apply)
        );
      });
    if (!cards.length) cards.push(el("p", { class: "muted" }, "No active plugins."));
    replace($("drift-reports"), cards);
  }

  async function reconcile(name, apply, force, button) {
    button.disabled = true;
    const path = "/api/plugins/" + encodeURIComponent(name) + "/reconcile";
    try {
      await api(path, { method: "POST", body: JSON.stringify({ apply, force }) });
    } catch (e) {
      if (apply && !force && /max_changes/.test(e.message) && window.confirm(e.message + "\n\nApply anyway?")) {
        return reconcile(name, true, true, button);
      }
      problem(e);
    }
    refresh();
  }

  // ---- Events ----

  function statusBadges(statuses) {
    const entries = Object.entries(statuses || {});
    if (!entries.length) return el("span", { class: "muted" }, "no plugin");
    return entries.map(([s, n]) => badge(s, n > 1 ? s + " ×" + n : s));
  }

  function drawEvents(page) {
    if (unchanged("events", [page, state.openEvent])) return;
    const events = page.events || [];
    const rows = events.map((e) => {
      const user = e.user;
      return el(
        "tr",
        {
          class: "event" + (e.id === state.openEvent ? " open" : ""),
          "data-id": e.id,
          tabindex: 0,
          onclick: () => openEvent(e.id),
        },
        el("td", { class: "when" }, stamp(e.received_at)),
        el(
          "td",
          {},
          e.event_type,
          // Recovered from the System Log: Okta's hook delivery of it was lost.
          e.source === "system_log"
            ? el("span", { class: "badge recovered", title: "recovered from the Okta System Log" }, "recovered")
            : null
        ),
        el(
          "td",
          { class: "user" },
          user ? el("div", { class: "user-login" }, user.login || user.id) : el("span", { class: "muted" }, "—"),
          user && user.display_name ? el("div", { class: "sub display-name" }, user.display_name) : null
        ),
        el("td", {}, list(e.groups, "—")),
        el("td", {}, statusBadges(e.statuses))
      );
    });
    replace($("event-rows"), rows);
    $("events-empty").hidden = events.length > 0;
    $("more").hidden = !page.next || state.limit >= MAX_PAGE;
  }

  function openEvent(id) {
    state.openEvent = state.openEvent === id ? null : id;
    state.openDelivery = null;
    for (const row of document.querySelectorAll("tr.event")) row.classList.toggle("open", row.dataset.id === state.openEvent);
    drawDetail().catch(problem);
  }

  function openDelivery(id) {
    state.openDelivery = state.openDelivery === id ? null : id;
    drawDetail().catch(problem);
  }

  function problem(e) {
    if (e instanceof Unauthorized) return showLogin("The token was refused; sign in again.");
    $("problem").textContent = "Could not load: " + e.message;
    $("problem").hidden = false;
  }

  async function replay(id, button) {
    button.disabled = true;
    try {
      await api("/api/deliveries/" + encodeURIComponent(id) + "/replay", { method: "POST" });
    } catch (e) {
      problem(e);
    }
    refresh();
  }

  async function drawDetail() {
    const panel = $("detail");
    const id = state.openEvent;
    if (!id) {
      panel.hidden = true;
      panel.replaceChildren();
      delete state.drawn.detail;
      return;
    }
    const event = await api("/api/events/" + encodeURIComponent(id));
    if (state.openEvent !== id) return; // closed or switched while loading
    let attempts = null;
    const shown = state.openDelivery;
    if (shown && (event.deliveries || []).some((d) => d.id === shown)) {
      attempts = (await api("/api/deliveries/" + encodeURIComponent(shown) + "/attempts")).attempts || [];
    }
    if (state.openEvent !== id || state.openDelivery !== shown) return;
    if (unchanged("detail", [event, shown, attempts])) return;
    const deliveries = (event.deliveries || []).map((d) => {
      const open = () => openDelivery(d.id);
      const row = el(
        "tr",
        { class: "delivery" + (d.id === shown ? " open" : ""), "data-id": d.id, "data-status": d.status, tabindex: 0, onclick: open },
        el("td", { class: "name" }, d.plugin),
        el("td", {}, d.plugin_version || "—"),
        el("td", {}, badge(d.status)),
        el("td", {}, d.attempts),
        el("td", { class: "nowrap" }, d.status === "retrying" ? time(d.next_attempt_at) : "—"),
        el(
          "td",
          {},
          d.status === "dead" || d.status === "held" || d.status === "discarded"
            ? el("button", { type: "button", class: "replay", "data-id": d.id, onclick: (ev) => { ev.stopPropagation(); replay(d.id, ev.currentTarget); } }, "Replay")
            : null
        )
      );
      // The error gets the panel's full width on a row of its own: it is what gets read.
      const error = d.last_error
        ? el("tr", { class: "delivery-error" + (d.id === shown ? " open" : ""), onclick: open }, el("td", { colspan: 6, class: "error-text" }, d.last_error))
        : null;
      return [row, error];
    });
    const parts = [
      el("button", { type: "button", class: "quiet close", onclick: () => openEvent(id) }, "Close"),
      el("h3", {}, event.event_type),
      el(
        "dl",
        { class: "facts" },
        el("dt", {}, "Event"), el("dd", { class: "mono" }, event.id),
        el("dt", {}, "Published"), el("dd", {}, time(event.published)),
        el("dt", {}, "Received"), el("dd", {}, time(event.received_at)),
        el("dt", {}, "Okta delivery"), el("dd", { class: "mono" }, event.okta_delivery_id || "—")
      ),
      el("h4", {}, "Deliveries"),
      deliveries.length
        ? el(
            "table",
            { class: "grid" },
            el("thead", {}, el("tr", {}, el("th", {}, "Plugin"), el("th", {}, "Version"), el("th", {}, "Status"), el("th", {}, "Attempts"), el("th", {}, "Next try"), el("th", {}, ""))),
            el("tbody", {}, deliveries)
          )
        : el("p", { class: "muted" }, "No plugin subscribed to this event."),
    ];
    if (attempts) parts.push(drawAttempts(shown, attempts));
    replace(panel, parts);
    panel.hidden = false;
  }

  function logLine(line) {
    if (line && typeof line === "object") {
      const at = line.at_ms !== undefined ? "+" + line.at_ms + " ms " : "";
      return el("div", { class: "log-line " + (line.level || "") }, at + "[" + (line.level || "?") + "] " + (line.source ? line.source + ": " : "") + (line.message !== undefined ? line.message : JSON.stringify(line)));
    }
    return el("div", { class: "log-line" }, typeof line === "string" ? line : JSON.stringify(line));
  }

  function drawAttempts(deliveryId, attempts) {
    const items = attempts.map((a) =>
      el(
        "li",
        { class: "attempt", "data-result": a.result },
        el(
          "div",
          { class: "attempt-head" },
          el("strong", {}, "#" + a.number + " "),
          badge(a.result === "done" ? "done" : a.result === "superseded" ? "pending" : "dead", a.result),
          " started " + time(a.started_at) + " · " + a.duration_ms + " ms · " + "v" + a.plugin_version
        ),
        a.error ? el("div", { class: "error-text" }, a.error) : null,
        Array.isArray(a.log) && a.log.length ? el("div", { class: "log" }, a.log.map(logLine)) : el("div", { class: "muted" }, "no log lines")
      )
    );
    return el(
      "div",
      { class: "attempts", "data-delivery": deliveryId },
      el("h4", {}, "Attempts of ", el("span", { class: "mono" }, deliveryId)),
      items.length ? el("ol", {}, items) : el("p", { class: "muted" }, "No attempt yet.")
    );
  }

  // ---- Wiring ----

  function applySearch(event) {
    if (event) event.preventDefault();
    state.filters = {
      q: $("q").value.trim(),
      event_type: $("event-type").value.trim(),
      group: $("group").value.trim(),
      status: $("status").value,
      source: $("source").value,
    };
    state.limit = PAGE;
    startPolling();
  }

  let debounce = null;
  function searchSoon() {
    clearTimeout(debounce);
    debounce = setTimeout(applySearch, 300);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => showLogin(""));
    $("search").addEventListener("submit", applySearch);
    for (const id of ["q", "event-type", "group"]) $(id).addEventListener("input", searchSoon);
    $("status").addEventListener("change", () => applySearch());
    $("more").addEventListener("click", () => {
      state.limit = Math.min(MAX_PAGE, state.limit + PAGE);
      startPolling();
    });
    document.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && e.target instanceof HTMLTableRowElement) e.target.click();
    });
    if (sessionStorage.getItem(TOKEN_KEY)) showConsole();
    else showLogin("");
  });
})();
