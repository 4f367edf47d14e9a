// stayhook console: a small client of the admin API (docs/admin-api.md). No framework, no build
// step. Every datum comes from the JSON routes; every change goes through them with the session's
// CSRF token (X-Stayhook-Csrf). Text is set with textContent, never parsed as HTML.
"use strict";

const EVENT_TYPES = ["reservation.created", "reservation.updated", "reservation.deleted", "conversation.updated", "calendar.updated"];
let csrf = null;
let notice = null;
let refreshTimer = null;

// ---- DOM helpers -----------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const svgNS = "http://www.w3.org/2000/svg";
function s(tag, attrs) {
  const el = document.createElementNS(svgNS, tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, value);
  return el;
}

function main() { return document.getElementById("main"); }
function present(nodes) { return nodes.flat().filter((node) => node !== null && node !== undefined && node !== false); }
function render(...nodes) {
  main().replaceChildren(...present(nodes));
}
function toast(text) {
  const box = document.getElementById("toast");
  const item = h("div", { text });
  box.append(item);
  setTimeout(() => item.remove(), 5000);
}
function when(ts) { return ts ? new Date(ts).toLocaleString() : "—"; }
function age(secs) {
  if (secs === null || secs === undefined) return "—";
  if (secs < 90) return secs + " s";
  if (secs < 5400) return Math.round(secs / 60) + " min";
  return Math.round(secs / 3600) + " h";
}
function pretty(value) { return h("pre", { text: JSON.stringify(value, null, 2) }); }
function empty(text, ...more) { return h("div", { class: "empty" }, text, ...more); }
function copyButton(text, label) {
  return h("button", { type: "button", class: "secondary", onclick: async () => {
    try { await navigator.clipboard.writeText(text); toast("Copied"); } catch (_) { toast("Copy failed: select the text and copy it"); }
  } }, label || "Copy");
}

// ---- API -------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (csrf && method !== "GET") headers["X-Stayhook-Csrf"] = csrf;
  const response = await fetch(path, { method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 204) return null;
  let data = null;
  const text = await response.text();
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { error: { code: "not_json", message: text.slice(0, 300) } }; }
  if (!response.ok) {
    const error = (data && data.error) || { code: "http_" + response.status, message: response.statusText };
    if (response.status === 401 && path !== "/v1/session") { csrf = null; showSignIn("Your session ended: sign in again."); }
    throw new ApiError(response.status, error.code, error.message);
  }
  return data;
}

// Show an API error next to the field it concerns (by the field named in the message), or at the form's end.
function showError(form, error) {
  form.querySelectorAll(".field-error").forEach((el) => el.remove());
  const message = error instanceof ApiError ? `${error.message} (${error.code})` : String(error);
  let target = null;
  for (const input of form.querySelectorAll("[name]")) {
    const name = input.getAttribute("name");
    if (message.includes(name)) { target = input; break; }
  }
  const note = h("p", { class: "field-error", role: "alert", text: message });
  if (target) target.after(note); else form.append(note);
}

function formValues(form) {
  const values = {};
  for (const el of form.querySelectorAll("[name]")) {
    if (el.type === "checkbox" && el.dataset.group) {
      (values[el.dataset.group] = values[el.dataset.group] || []);
      if (el.checked) values[el.dataset.group].push(el.value);
    } else if (el.type === "checkbox") values[el.name] = el.checked;
    else values[el.name] = el.value;
  }
  return values;
}

// ---- sign-in ---------------------------------------------------------------------------------

function setNav(signedIn) {
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("menu-toggle").hidden = !signedIn;
}

function showSignIn(message) {
  message = message || notice;
  setNav(false);
  clearInterval(refreshTimer);
  const form = h("form", { class: "panel signin", id: "signin-form" },
    h("h1", { text: "Sign in" }),
    h("p", { class: "help", text: "Paste the admin token (stayhook printed it once at first start; it is in the data dir's admin-token file, or STAYHOOK_ADMIN_TOKEN)." }),
    h("label", { for: "token", text: "Admin token" }),
    h("input", { id: "token", name: "token", type: "password", autocomplete: "current-password", required: true, size: 40 }),
    h("p", {}, h("button", { id: "signin-button", type: "submit", text: "Sign in" })),
    message ? h("p", { class: "error", id: "signin-error", role: "alert", text: message }) : null);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const answer = await api("POST", "/v1/session", { token: form.querySelector("#token").value });
      csrf = answer.csrfToken;
      notice = null;
      setNav(true);
      if (!location.hash || location.hash === "#/signin") location.hash = "#/overview"; else route();
    } catch (error) {
      form.querySelectorAll(".error,.field-error").forEach((el) => el.remove());
      const text = error.code === "wrong_token" ? "Wrong token: that is not this daemon's admin token." : error.message;
      form.append(h("p", { class: "error", id: "signin-error", role: "alert", text }));
    }
  });
  render(form);
  form.querySelector("#token").focus();
}

async function signOut() {
  try { await api("DELETE", "/v1/session"); } catch (_) { /* signed out either way */ }
  csrf = null;
  notice = "Signed out.";
  location.hash = "#/signin";
  showSignIn();
}

// ---- router ----------------------------------------------------------------------------------

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/overview";
  const [path, query] = raw.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(query || "") };
}

async function route() {
  clearInterval(refreshTimer);
  if (!csrf) return showSignIn();
  const { parts, query } = parseHash();
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.getAttribute("href") === "#/" + (parts[0] || "overview")));
  document.getElementById("nav").classList.remove("open");
  const pages = { overview, accounts, events, inbox, "dead-letters": deadLetters, plugins, playground, reservations };
  const page = pages[parts[0]] || overview;
  try {
    await page(parts.slice(1), query);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return;
    render(h("h1", { text: "Something went wrong" }), h("p", { class: "error", role: "alert", text: error.message }));
  }
  main().focus({ preventScroll: true });
}

// ---- overview --------------------------------------------------------------------------------

function chart(rows) {
  const width = 600, height = 150, pad = 4;
  const max = Math.max(1, ...rows.flatMap((row) => [row[1], row[2], row[3]]));
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img", "aria-label": "received, delivered and failed per minute" });
  const colors = ["#1f5fbf", "#1a7f37", "#c62828"];
  [1, 2, 3].forEach((column, i) => {
    const points = rows.map((row, x) => `${(x / Math.max(1, rows.length - 1)) * width},${height - pad - (row[column] / max) * (height - 2 * pad)}`).join(" ");
    svg.append(s("polyline", { points, fill: "none", stroke: colors[i], "stroke-width": 2, "vector-effect": "non-scaling-stroke" }));
  });
  const legend = h("p", { class: "legend" }, ["received", "delivered", "failed"].map((name, i) => h("span", {}, h("i", { class: "c" + i }), name)), h("span", { class: "muted", text: `max ${max}/min` }));
  return h("div", {}, svg, legend);
}

async function overview(_parts, query) {
  const window = query.get("window") || "1h";
  const stats = await api("GET", "/v1/stats?window=" + encodeURIComponent(window));
  const problems = stats.problems.length
    ? h("ul", { class: "problems", id: "problems" }, stats.problems.map((p) => h("li", { class: "bad" }, p.message, " ", h("a", { href: p.link, text: "fix" }))))
    : h("p", { class: "ok", id: "problems", text: "No problems." });
  const t = stats.totals;
  const cards = h("div", { class: "cards" },
    [["Received", t.received], ["Delivered", t.delivered], ["Failed attempts", t.failed], ["Normalize failures", t.normalizeFailed],
     ["Backlog", stats.backlog.deliveries], ["Oldest undelivered", age(stats.backlog.oldestAgeSecs)],
     ["Latency p50", stats.latencyMs.p50 === null ? "—" : stats.latencyMs.p50 + " ms"], ["Latency p99", stats.latencyMs.p99 === null ? "—" : stats.latencyMs.p99 + " ms"]]
      .map(([label, n]) => h("div", { class: "card" }, h("div", { class: "muted", text: label }), h("div", { class: "n", text: String(n) }))));
  const counted = ["received", "normalized", "normalizeFailed", "delivered", "failed"];
  const accountRows = stats.accounts.map((a) => h("tr", { "data-account-id": a.id },
    h("td", {}, h("a", { href: "#/accounts/" + encodeURIComponent(a.id), text: a.name || a.id })), h("td", { text: a.pms }),
    counted.map((key) => h("td", { class: "num " + key + (key.endsWith("ailed") && a[key] > 0 ? " bad" : ""), text: String(a[key]) })),
    h("td", {}, h("a", { href: "#/events?accountId=" + encodeURIComponent(a.id), text: "events" }))));
  render(
    h("h1", { text: "Overview" }),
    h("h2", { text: "Problems" }), problems,
    h("p", {}, "Window: ", h("a", { href: "#/overview?window=1h", text: "last hour" }), " · ", h("a", { href: "#/overview?window=24h", text: "last day" }), h("span", { class: "muted", text: " (counts since the daemon started; refreshes every 5 s)" })),
    cards,
    h("h2", { text: "Per minute" }), chart(stats.minutes),
    h("h2", { text: "Accounts" }),
    accountRows.length ? h("div", {}, h("p", { class: "help", text: "Webhooks received, normalized and failed to normalize; delivery attempts delivered and failed; since the daemon started." }),
      h("div", { class: "table-wrap" }, h("table", { id: "account-counts" },
        h("tr", {}, ["Account", "PMS", "Received", "Normalized", "Normalize failed", "Delivered", "Failed attempts", ""].map((t) => h("th", { text: t }))), accountRows)))
      : empty("No accounts yet: ", h("a", { href: "#/accounts", text: "create one" })));
  // The refresh calls this again: one timer at a time, or each refresh would add another.
  clearInterval(refreshTimer);
  refreshTimer = setInterval(() => { if (parseHash().parts[0] === "overview" || !parseHash().parts[0]) overview([], query).catch(() => {}); }, 5000);
}

// ---- accounts --------------------------------------------------------------------------------

let pluginCache = null;
async function loadPlugins() {
  if (!pluginCache) pluginCache = (await api("GET", "/v1/plugins?limit=1000")).plugins;
  return pluginCache;
}

async function accounts(parts, query) {
  if (parts[0]) return accountPage(parts[0], parts[1] || "webhooks");
  const path = "/v1/accounts?limit=25" + (query.get("after") ? "&after=" + encodeURIComponent(query.get("after")) : "");
  const [page, plugins] = await Promise.all([api("GET", path), loadPlugins()]);
  const rows = page.accounts.map((a) => h("tr", {},
    h("td", {}, h("a", { href: "#/accounts/" + encodeURIComponent(a.id), text: a.id })), h("td", { text: a.name || "" }), h("td", { text: a.pms }),
    h("td", { class: a.verification.configured ? "ok" : "muted", text: a.verification.scheme + (a.verification.configured ? " ✓" : "") })));
  render(
    h("h1", { text: "Accounts" }),
    rows.length ? h("div", { class: "table-wrap" }, h("table", { id: "accounts-table" }, h("tr", {}, ["Id", "Name", "PMS", "Verification"].map((t) => h("th", { text: t }))), rows))
      : empty("No accounts yet: create one below."),
    pager(page, "#/accounts"),
    accountForm(plugins, null));
}

function pager(page, base) {
  if (!page.next) return null;
  const sep = base.includes("?") ? "&" : "?";
  return h("div", { class: "pager" }, h("a", { class: "button", href: base + sep + "after=" + encodeURIComponent(page.next), text: "Next page →" }));
}

function accountForm(plugins, account) {
  const editing = !!account;
  const pms = h("select", { id: "acct-pms", name: "pms", required: true }, plugins.map((p) => h("option", { value: p.name, selected: account && account.pms === p.name }, `${p.pms} (${p.name} ${p.version})`)));
  const fields = h("div", { id: "acct-fields" });
  const fillFields = () => {
    const plugin = plugins.find((p) => p.name === pms.value);
    fields.replaceChildren();
    if (!plugin) return;
    if (plugin.verificationFields.length) {
      fields.append(h("p", { class: "help", text: `${plugin.pms} signs its webhooks with ${plugin.verification}.` + (editing ? " Leave empty to keep what is stored." : "") }));
    }
    for (const name of plugin.verificationFields) {
      fields.append(h("label", { for: "acct-verification-" + name, text: "Verification " + name }),
        h("input", { id: "acct-verification-" + name, name: "verification." + name, type: name === "username" ? "text" : "password", autocomplete: "off", size: 40 }));
    }
    for (const name of plugin.credentialFields) {
      fields.append(h("label", { for: "acct-credentials-" + name, text: "API credential " + name }),
        h("input", { id: "acct-credentials-" + name, name: "credentials." + name, type: name === "username" || name === "clientId" ? "text" : "password", autocomplete: "off", size: 40 }));
    }
    if (plugin.credentialFields.length) fields.append(h("p", { class: "help", text: "The plugin calls the PMS API with these to complete webhooks that carry only ids." }));
  };
  pms.addEventListener("change", fillFields);
  const form = h("form", { class: "panel", id: editing ? "account-edit-form" : "account-form" },
    h("h2", { text: editing ? "Edit account" : "Create an account" }),
    editing ? null : [h("label", { for: "acct-id", text: "Id (optional)" }), h("input", { id: "acct-id", name: "id", placeholder: "generated when empty" })],
    h("label", { for: "acct-workspace", text: "Workspace id" }), h("input", { id: "acct-workspace", name: "workspaceId", required: true, value: account ? account.workspaceId : "" }),
    h("label", { for: "acct-name", text: "Name" }), h("input", { id: "acct-name", name: "name", value: account ? account.name || "" : "" }),
    h("label", { for: "acct-pms", text: "PMS (plugin)" }), pms, fields,
    h("p", {}, h("button", { id: editing ? "account-save" : "account-create", type: "submit", text: editing ? "Save" : "Create account" })));
  fillFields();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = formValues(form);
    const body = { workspaceId: values.workspaceId, pms: values.pms, name: values.name || null };
    if (!editing && values.id) body.id = values.id;
    for (const group of ["verification", "credentials"]) {
      const map = {};
      for (const [key, value] of Object.entries(values)) if (key.startsWith(group + ".") && value) map[key.slice(group.length + 1)] = value;
      if (Object.keys(map).length || !editing) body[group] = map;
    }
    try {
      const saved = editing ? await api("PATCH", "/v1/accounts/" + encodeURIComponent(account.id), body) : await api("POST", "/v1/accounts", body);
      toast(editing ? "Saved" : "Account created");
      location.hash = "#/accounts/" + encodeURIComponent(saved.id);
      if (editing) route();
    } catch (error) { showError(form, error); }
  });
  return form;
}

async function accountPage(id, tab) {
  const account = await api("GET", "/v1/accounts/" + encodeURIComponent(id));
  const base = "#/accounts/" + encodeURIComponent(id);
  const tabs = h("div", { class: "tabs", role: "tablist" },
    [["webhooks", "Webhook"], ["setup", "Listener & set-up"], ["settings", "Settings"]].map(([key, label]) => h("a", { href: base + "/" + key, class: tab === key ? "active" : null, role: "tab", text: label })));
  const head = [h("h1", { text: `${account.name || account.id} · ${account.pms}` }), await syncLine(account), tabs];
  if (tab === "setup") return render(...head, await setupTab(account));
  if (tab === "settings") return render(...head, accountForm(await loadPlugins(), account), deleteAccount(account));
  return render(...head, await webhooksTab(account));
}

async function setupTab(account) {
  const result = h("div", { id: "registration-result" });
  const plugins = await loadPlugins();
  const plugin = plugins.find((p) => p.name === account.pms);
  const register = h("button", { type: "button", id: "register", onclick: async () => {
    result.replaceChildren(h("p", { class: "muted", text: "Registering…" }));
    try { const answer = await api("POST", `/v1/accounts/${encodeURIComponent(account.id)}/pms-webhooks`); result.replaceChildren(h("p", { class: "ok", text: "Registered." }), pretty(answer)); }
    catch (error) { result.replaceChildren(h("p", { class: "error", role: "alert", text: `${error.message} (${error.code})` })); }
  } }, "Register automatically");
  return h("div", {},
    h("h2", { text: "Listener URL" }),
    h("p", {}, h("code", { id: "listener-url", text: account.listenerUrl }), " ", copyButton(account.listenerUrl)),
    h("h2", { text: "Set-up" }),
    plugin && plugin.enrichment
      ? h("div", {}, h("p", { text: "This PMS has an API: stayhook can register the listener URL with it using the account's credentials." }), register, result)
      : h("ol", {}, h("li", { text: `Open ${plugin ? plugin.pms : account.pms}'s webhook settings.` }), h("li", { text: "Paste the listener URL above as the webhook URL, method POST." }),
          h("li", { text: `Verification: ${account.verification.scheme}${account.verification.configured ? " (configured)" : " — set the secret in Settings if the PMS signs its webhooks"}.` })),
    h("p", {}, h("a", { href: "#/reservations?accountId=" + encodeURIComponent(account.id), text: "Look up a reservation of this account" })));
}

// One line: where the account's initial sync and reconciliation stand (GET /v1/accounts/{id}/sync).
async function syncLine(account) {
  let sync;
  try { sync = await api("GET", `/v1/accounts/${encodeURIComponent(account.id)}/sync`); } catch (error) { return h("p", { class: "help", id: "sync-status", text: "Sync status unavailable: " + error.message }); }
  const last = sync.lastPass;
  const parts = [`Sync: ${sync.status}`];
  if (sync.status === "unavailable") parts.push(sync.reason || "");
  if (sync.current) parts.push(`${sync.current.kind} page ${sync.current.pagesDone + 1}, ${sync.current.recordsSeen} records so far`);
  if (last) parts.push(`last ${last.kind} finished ${last.finishedAt} (${last.recordsSeen} records, ${last.recoveredChanges} recovered)`);
  if (sync.lastError) parts.push(`error: ${sync.lastError.reason}`);
  if (sync.status !== "unavailable") parts.push(sync.reconcileIntervalSecs ? `every ${sync.reconcileIntervalSecs} s` : "reconciliation off");
  if (sync.nextRunAt) parts.push(`next ${sync.nextRunAt}`);
  return h("p", { class: sync.status === "error" ? "help error" : "help", id: "sync-status", text: parts.join(" · ") });
}

function deleteAccount(account) {
  return h("div", { class: "panel" }, h("h2", { text: "Delete" }), h("p", { class: "help", text: "Deletes the account and stops its listener. Stored events stay in the log." }),
    h("button", { type: "button", class: "danger", id: "account-delete", onclick: async () => {
      if (!confirm(`Delete account ${account.id}? This cannot be undone.`)) return;
      try { await api("DELETE", "/v1/accounts/" + encodeURIComponent(account.id)); toast("Account deleted"); location.hash = "#/accounts"; }
      catch (error) { toast(error.message); }
    } }, "Delete account"));
}

// ---- webhooks tab (the seed's screen) --------------------------------------------------------

function sparkline(attempts) {
  const width = 100, height = 20;
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", class: "sparkline",
    "aria-label": `${attempts.filter((a) => a.success).length} of ${attempts.length} recent attempts succeeded` });
  const step = width / 50;
  attempts.forEach((a, i) => svg.append(s("rect", { x: i * step, y: a.success ? 4 : 0, width: Math.max(1, step - 0.5), height: a.success ? 16 : 20, fill: a.success ? "#1a7f37" : "#c62828" })));
  if (!attempts.length) svg.append(s("line", { x1: 0, y1: 10, x2: width, y2: 10, stroke: "#d9dee4" }));
  return svg;
}

function webhookForm(account, webhook, onSaved) {
  const prefix = webhook ? "wh-" + webhook.id.slice(0, 8) + "-" : "wh-";
  const form = h("form", { class: "panel webhook-form", id: webhook ? "webhook-form-" + webhook.id : "webhook-form" },
    h("h2", { text: webhook ? "Edit webhook" : "Create a webhook" }),
    h("div", { class: "row" },
      h("div", {}, h("label", { for: prefix + "name", text: "Name" }), h("input", { id: prefix + "name", name: "name", required: true, value: webhook ? webhook.name : "" })),
      h("div", { class: "grow" }, h("label", { for: prefix + "url", text: "URL" }), h("input", { id: prefix + "url", name: "url", type: "url", required: true, size: 50, value: webhook ? webhook.url : "", placeholder: "https://example.com/hooks" })),
      h("div", {}, h("label", { for: prefix + "enabled" }, h("input", { id: prefix + "enabled", name: "enabled", type: "checkbox", checked: webhook ? webhook.enabled : true }), " Enabled"))),
    h("fieldset", {}, h("legend", { text: "Event types" }),
      EVENT_TYPES.map((t) => h("label", { class: "check" },
        h("input", { type: "checkbox", name: "eventTypes:" + t, "data-group": "eventTypes", value: t, checked: webhook ? webhook.eventTypes.includes(t) : true }), " " + t))),
    h("p", {}, h("button", { type: "submit", id: webhook ? null : "webhook-create", text: webhook ? "Update" : "Create" })));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = formValues(form);
    const body = { name: values.name, url: values.url, enabled: values.enabled, eventTypes: values.eventTypes || [] };
    const base = `/v1/accounts/${encodeURIComponent(account.id)}/webhooks`;
    try {
      const saved = webhook ? await api("PATCH", `${base}/${encodeURIComponent(webhook.id)}`, body) : await api("POST", base, body);
      onSaved(saved);
    } catch (error) { showError(form, error); }
  });
  return form;
}

function secretBox(secret, note) {
  return h("div", { class: "panel", id: "secret-box", role: "alert" },
    h("p", { text: note }), h("p", {}, h("span", { class: "secret", id: "webhook-secret", text: secret }), " ", copyButton(secret, "Copy secret")),
    h("p", { class: "help", text: "Receivers verify the webhook-signature header (Standard Webhooks) with it. It is not shown again." }));
}

async function webhooksTab(account) {
  const base = `/v1/accounts/${encodeURIComponent(account.id)}/webhooks`;
  const page = await api("GET", base + "?limit=100");
  const box = h("div", {});
  const refresh = async (secretNode) => {
    const node = await webhooksTab(account);
    if (secretNode) node.prepend(secretNode);
    main().replaceChildren(...Array.from(main().children).slice(0, 2), node);
  };
  box.append(h("h2", { text: "Webhooks" }));
  if (!page.webhooks.length) box.append(empty("No webhooks yet: create one below."));
  for (const webhook of page.webhooks) {
    const wbase = `${base}/${encodeURIComponent(webhook.id)}`;
    const health = await api("GET", wbase + "/health");
    const testType = h("select", { "aria-label": "event type of the test event", class: "test-type" }, webhook.eventTypes.map((t) => h("option", { value: t, text: t })));
    const testResult = h("div", { class: "test-result" });
    const item = h("section", { class: "panel webhook", "data-webhook-id": webhook.id },
      h("h2", {}, webhook.name, " ", h("span", { class: webhook.enabled ? "ok" : "bad", text: webhook.enabled ? "enabled" : "disabled" })),
      h("p", {}, h("code", { text: webhook.url }), " ", sparkline(health.recentAttempts), " ",
        h("span", { class: "muted", text: `${health.recentAttempts.filter((a) => a.success).length}/${health.recentAttempts.length} recent attempts ok` })),
      webhook.failingSince ? h("p", { class: "warn", text: "Failing since " + when(webhook.failingSince) }) : null,
      webhook.disabledReason ? h("p", { class: "bad" }, "Disabled: " + webhook.disabledReason + " ",
        h("button", { type: "button", class: "reenable", onclick: async () => { await api("PATCH", wbase, { enabled: true }); toast("Enabled again"); refresh(); } }, "Enable again")) : null,
      h("div", { class: "row" },
        testType,
        h("button", { type: "button", class: "secondary send-test", onclick: async () => {
          testResult.replaceChildren(h("p", { class: "muted", text: "Sending…" }));
          try {
            const r = await api("POST", wbase + "/test", { eventType: testType.value });
            testResult.replaceChildren(...present([h("p", { class: r.success ? "ok test-outcome" : "bad test-outcome", text: r.success ? `Delivered: ${r.statusCode} in ${r.latencyMs} ms` : `Failed: ${r.statusCode || ""} ${r.error || ""}` }),
              r.response ? h("pre", { text: r.response }) : null]));
          } catch (error) { testResult.replaceChildren(h("p", { class: "error", text: error.message })); }
        } }, "Send test event"),
        h("button", { type: "button", class: "secondary rotate", onclick: async () => {
          if (!confirm("Rotate the signing secret? Receivers must switch to the new one.")) return;
          const r = await api("POST", wbase + "/rotate-secret");
          refresh(secretBox(r.secret, "New signing secret of " + webhook.name + ":"));
        } }, "Rotate secret"),
        h("a", { href: "#/events?accountId=" + encodeURIComponent(account.id), text: "Events" }),
        h("a", { href: "#/dead-letters?webhookId=" + encodeURIComponent(webhook.id), class: "dead-letters-link", text: "Dead letters" }),
        h("button", { type: "button", class: "danger delete-webhook", onclick: async () => {
          if (!confirm(`Delete webhook ${webhook.name}?`)) return;
          await api("DELETE", wbase); toast("Webhook deleted"); refresh();
        } }, "Delete")),
      testResult,
      h("details", {}, h("summary", { text: "Edit" }), webhookForm(account, webhook, () => { toast("Webhook updated"); refresh(); })));
    box.append(item);
  }
  box.append(webhookForm(account, null, (created) => refresh(secretBox(created.secret, `Webhook ${created.name} created. Its signing secret:`))));
  return box;
}

// ---- events ----------------------------------------------------------------------------------

async function events(parts, query) {
  if (parts[0]) return eventPage(parts[0]);
  const params = new URLSearchParams();
  for (const key of ["accountId", "eventType", "recordId", "result", "after"]) if (query.get(key)) params.set(key, query.get(key));
  // The form's times are local (datetime-local); the API takes RFC 3339.
  for (const key of ["from", "to"]) if (query.get(key)) params.set(key, new Date(query.get(key)).toISOString());
  params.set("limit", "50");
  const page = await api("GET", "/v1/events?" + params);
  const shown = page.events;
  const field = (name, label, attrs) => h("div", {}, h("label", { for: "f-" + name, text: label }), h("input", Object.assign({ id: "f-" + name, name, value: query.get(name) || "" }, attrs || {})));
  const form = h("form", { class: "panel", id: "event-search" }, h("div", { class: "row" },
    field("accountId", "Account"),
    h("div", {}, h("label", { for: "f-eventType", text: "Event type" }), h("select", { id: "f-eventType", name: "eventType" }, h("option", { value: "", text: "any" }), EVENT_TYPES.map((t) => h("option", { value: t, selected: query.get("eventType") === t, text: t })))),
    field("recordId", "Record id"),
    h("div", {}, h("label", { for: "f-result", text: "Result" }), h("select", { id: "f-result", name: "result" }, ["", "SUCCESS", "FAILURE"].map((r) => h("option", { value: r, selected: query.get("result") === r, text: r || "any" })))),
    field("from", "From", { type: "datetime-local" }), field("to", "To", { type: "datetime-local" }),
    h("div", {}, h("button", { type: "submit", text: "Search" }))));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const values = new URLSearchParams();
    for (const [key, value] of Object.entries(formValues(form))) if (value) values.set(key, value);
    location.hash = "#/events?" + values;
  });
  const rows = shown.map((e) => h("tr", {},
    h("td", {}, h("a", { href: "#/events/" + encodeURIComponent(e.id), text: when(e.timestamp) })), h("td", { text: e.eventType }),
    h("td", { text: e.integrationAccountId }), h("td", { text: e.recordId }), h("td", { class: e.result === "SUCCESS" ? "ok" : "bad", text: e.result })));
  const nextQuery = new URLSearchParams(query); nextQuery.delete("after");
  render(h("h1", { text: "Events" }), form,
    rows.length ? h("div", { class: "table-wrap" }, h("table", { id: "events-table" }, h("tr", {}, ["Time", "Type", "Account", "Record", "Result"].map((t) => h("th", { text: t }))), rows))
      : empty("No events match. Events appear once a PMS posts a webhook to an account's listener URL."),
    pager(page, "#/events?" + nextQuery));
}

async function eventPage(id) {
  const enc = encodeURIComponent(id);
  const [event, attempts] = await Promise.all([api("GET", "/v1/events/" + enc), api("GET", `/v1/events/${enc}/attempts?limit=200`)]);
  const status = h("div", { id: "redeliver-result" });
  const redeliver = h("button", { type: "button", id: "redeliver", onclick: async () => {
    try { await api("POST", `/v1/events/${enc}/redeliver`); status.replaceChildren(h("p", { class: "ok", text: "Queued for delivery again." })); setTimeout(() => eventPage(id), 1500); }
    catch (error) { status.replaceChildren(h("p", { class: "error", text: error.message })); }
  } }, "Redeliver");
  const deliveries = event.deliveries.map((d) => h("tr", { class: "delivery" }, h("td", { text: d.deliveryId }), h("td", { text: d.webhookId }), h("td", { class: "delivery-status " + (d.status === "delivered" ? "ok" : d.status === "dead" ? "bad" : ""), text: d.status }),
    h("td", { text: String(d.attempts) }), h("td", { text: d.lastError || "" })));
  const attemptRows = attempts.attempts.map((a) => h("tr", { class: "attempt " + (a.success ? "ok" : "bad") }, h("td", { text: `${a.deliveryId}.${a.attempt}` }), h("td", { text: when(a.at) }),
    h("td", { class: "attempt-status", text: a.statusCode === null ? "—" : String(a.statusCode) }), h("td", { text: a.latencyMs + " ms" }), h("td", { text: (a.response || "").slice(0, 200) }), h("td", { text: a.error || "" })));
  const envelope = { hook: { id: "(the webhook's id)", eventType: event.eventType, timestamp: event.timestamp, source: "PMS_WEBHOOK" },
    data: { integrationAccountId: event.integrationAccountId, workspaceId: event.workspaceId, record: event.record, result: event.result } };
  render(h("h1", { text: `${event.eventType} · ${event.recordId}` }),
    h("p", {}, "Event ", h("code", { text: event.id }), " · ", when(event.timestamp), " · ", h("span", { class: event.result === "SUCCESS" ? "ok" : "bad", text: event.result }),
      event.inboxId ? [" · ", h("a", { href: "#/inbox/" + encodeURIComponent(event.inboxId), id: "raw-inbound", text: "raw inbound webhook" })] : null),
    h("div", { class: "row" }, redeliver, h("button", { type: "button", class: "secondary", onclick: () => eventPage(id), text: "Refresh" })), status,
    h("h2", { text: "Deliveries" }), deliveries.length ? h("div", { class: "table-wrap" }, h("table", { id: "deliveries" }, h("tr", {}, ["Delivery", "Webhook", "Status", "Attempts", "Last error"].map((t) => h("th", { text: t }))), deliveries)) : empty("No webhook selected this event."),
    h("h2", { text: "Attempts" }), attemptRows.length ? h("div", { class: "table-wrap" }, h("table", { id: "attempts" }, h("tr", {}, ["#", "Time", "Status", "Latency", "Response", "Error"].map((t) => h("th", { text: t }))), attemptRows)) : empty("No attempts yet."),
    h("h2", { text: "Envelope" }), pretty(envelope));
}

// ---- inbox, dead letters ---------------------------------------------------------------------

async function inbox(parts, query) {
  if (parts[0]) {
    const entry = await api("GET", "/v1/inbox/" + encodeURIComponent(parts[0]));
    let body = entry.body;
    try { body = JSON.stringify(JSON.parse(entry.body), null, 2); } catch (_) { /* not JSON: as received */ }
    const result = h("div", {});
    return render(h("h1", { text: "Inbound webhook " + entry.inboxId }),
      h("p", {}, "Account ", h("a", { href: "#/accounts/" + encodeURIComponent(entry.accountId), text: entry.accountId }), ` · ${when(entry.receivedAt)} · `, h("strong", { id: "inbox-status", text: entry.status })),
      entry.outcome && entry.outcome.error ? h("p", { class: "bad", text: `${entry.outcome.errorKind || "error"}: ${entry.outcome.error}` }) : null,
      h("button", { type: "button", id: "renormalize", onclick: async () => {
        try { const r = await api("POST", `/v1/inbox/${encodeURIComponent(entry.inboxId)}/renormalize`); result.replaceChildren(pretty(r)); }
        catch (error) { result.replaceChildren(h("p", { class: "error", text: error.message })); }
      } }, "Re-normalize"), result,
      h("h2", { text: "Headers" }), pretty(entry.headers), h("h2", { text: "Body" }), h("pre", { id: "inbox-body", text: body }),
      entry.outcome ? [h("h2", { text: "Outcome" }), pretty(entry.outcome)] : null);
  }
  const status = query.get("status") || "failed";
  const page = await api("GET", `/v1/inbox?limit=50&status=${status}` + (query.get("after") ? "&after=" + encodeURIComponent(query.get("after")) : ""));
  const rows = page.inbox.map((item) => h("tr", {}, h("td", {}, h("a", { href: "#/inbox/" + item.inboxId, text: item.inboxId })), h("td", { text: item.outcome.plugin || "" }),
    h("td", { text: item.outcome.errorKind || "" }), h("td", { text: item.outcome.error || (item.outcome.eventIds || []).length + " events" })));
  const windowForm = h("form", { class: "panel", id: "renormalize-window" }, h("h2", { text: "Re-normalize a time window" }), h("div", { class: "row" },
    h("div", {}, h("label", { for: "rn-account", text: "Account" }), h("input", { id: "rn-account", name: "account", required: true })),
    h("div", {}, h("label", { for: "rn-from", text: "From" }), h("input", { id: "rn-from", name: "from", type: "datetime-local" })),
    h("div", {}, h("label", { for: "rn-to", text: "To" }), h("input", { id: "rn-to", name: "to", type: "datetime-local" })),
    h("div", {}, h("button", { type: "submit", text: "Re-normalize" }))));
  windowForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const v = formValues(windowForm);
    const body = {};
    if (v.from) body.from = new Date(v.from).toISOString();
    if (v.to) body.to = new Date(v.to).toISOString();
    try { const r = await api("POST", `/v1/accounts/${encodeURIComponent(v.account)}/renormalize`, body); windowForm.append(pretty(r)); } catch (error) { showError(windowForm, error); }
  });
  render(h("h1", { text: "Inbox" }),
    h("p", {}, ["failed", "skipped", "done"].map((st) => [h("a", { href: "#/inbox?status=" + st, class: st === status ? "active" : null, text: st }), " "])),
    rows.length ? h("div", { class: "table-wrap" }, h("table", {}, h("tr", {}, ["Inbox id", "Plugin", "Kind", "Message"].map((t) => h("th", { text: t }))), rows)) : empty(`No ${status} webhooks.`),
    pager(page, "#/inbox?status=" + status), windowForm);
}

async function deadLetters(_parts, query) {
  const webhookId = query.get("webhookId");
  const filter = webhookId ? "webhookId=" + encodeURIComponent(webhookId) : "";
  const page = await api("GET", "/v1/dead-letters?limit=50" + (filter ? "&" + filter : "") + (query.get("after") ? "&after=" + encodeURIComponent(query.get("after")) : ""));
  const redeliver = async (d) => api("POST", `/v1/events/${encodeURIComponent(d.eventId)}/redeliver`, { webhookId: d.webhookId });
  const rows = page.deadLetters.map((d) => h("tr", { class: "dead-letter" }, h("td", {}, h("a", { href: "#/events/" + encodeURIComponent(d.eventId), text: d.eventId })), h("td", { text: d.webhookId }),
    h("td", { text: String(d.attempts) }), h("td", { text: d.lastError || "" }),
    h("td", {}, h("button", { type: "button", class: "secondary redeliver-one", onclick: async () => { try { await redeliver(d); toast("Queued again"); route(); } catch (error) { toast(error.message); } } }, "Redeliver"))));
  render(h("h1", { text: "Dead letters" }),
    webhookId ? h("p", { id: "dead-letters-filter" }, "Of webhook ", h("code", { text: webhookId }), " · ", h("a", { href: "#/dead-letters", text: "all webhooks" })) : null,
    rows.length ? h("div", {},
      h("p", {}, h("button", { type: "button", id: "redeliver-all", onclick: async () => {
        if (!confirm(`Redeliver all ${page.deadLetters.length} dead letters on this page?`)) return;
        for (const d of page.deadLetters) { try { await redeliver(d); } catch (error) { toast(error.message); } }
        toast("Queued again"); route();
      } }, "Redeliver all on this page")),
      h("div", { class: "table-wrap" }, h("table", { id: "dead-letters" }, h("tr", {}, ["Event", "Webhook", "Attempts", "Last error", ""].map((t) => h("th", { text: t }))), rows)))
      : empty(webhookId ? "No dead letters of this webhook." : "No dead letters: every delivery got through or is still being retried."),
    pager(page, "#/dead-letters" + (filter ? "?" + filter : "")));
}

// ---- plugins, playground, reservations -------------------------------------------------------

async function plugins() {
  pluginCache = null;
  const page = await api("GET", "/v1/plugins?limit=1000");
  pluginCache = page.plugins;
  const rows = page.plugins.map((p) => h("tr", {}, h("td", { text: p.name }), h("td", { text: p.version }), h("td", { text: p.pms }), h("td", { text: p.source }),
    h("td", { text: p.verification }), h("td", { text: p.enrichment ? "yes" : "no" })));
  const upload = h("form", { class: "panel", id: "plugin-upload" }, h("h2", { text: "Upload a plugin" }),
    h("div", { class: "row" }, h("div", {}, h("label", { for: "up-name", text: "Name" }), h("input", { id: "up-name", name: "name", required: true })),
      h("div", {}, h("label", { for: "up-file", text: ".wasm component" }), h("input", { id: "up-file", type: "file", accept: ".wasm", required: true })),
      h("div", {}, h("button", { type: "submit", text: "Upload" }))));
  upload.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = upload.querySelector("#up-file").files[0];
    const name = upload.querySelector("#up-name").value;
    const response = await fetch("/v1/plugins/" + encodeURIComponent(name), { method: "PUT", credentials: "same-origin", headers: { "X-Stayhook-Csrf": csrf, "Content-Type": "application/wasm" }, body: file });
    if (response.ok) { toast("Plugin loaded"); route(); } else { const data = await response.json(); showError(upload, new ApiError(response.status, data.error.code, data.error.message)); }
  });
  render(h("h1", { text: "Plugins" }),
    h("div", { class: "table-wrap" }, h("table", {}, h("tr", {}, ["Name", "Version", "PMS", "Source", "Verification", "API"].map((t) => h("th", { text: t }))), rows)),
    h("h2", { text: "Load errors" }),
    page.loadErrors.length ? h("ul", {}, page.loadErrors.map((e) => h("li", { class: "bad", text: `${e.path}: ${e.error}` }))) : h("p", { class: "ok", text: "None." }),
    upload, h("p", {}, h("a", { href: "#/playground", text: "Try a plugin in the playground →" })));
}

async function playground() {
  const list = await loadPlugins();
  const output = h("div", { id: "playground-output" });
  const form = h("form", { class: "panel", id: "playground-form" },
    h("p", { class: "help", text: "Runs a plugin on a pasted payload as the daemon would, without any account, state or delivery." }),
    h("label", { for: "pg-plugin", text: "Plugin" }), h("select", { id: "pg-plugin", name: "plugin" }, list.map((p) => h("option", { value: p.name, text: `${p.pms} (${p.name})` }))),
    h("label", { for: "pg-body", text: "Webhook body" }), h("textarea", { id: "pg-body", name: "body", required: true, placeholder: "{ … }" }),
    h("label", { for: "pg-responses", text: "Recorded API answers (optional JSON: {\"<request id>\": {\"status\": 200, \"body\": {…}}})" }), h("textarea", { id: "pg-responses", name: "responses", class: "short" }),
    h("p", {}, h("button", { type: "submit", id: "pg-run", text: "Run" })));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const v = formValues(form);
    const body = { body: v.body };
    if (v.responses.trim()) { try { body.responses = JSON.parse(v.responses); } catch (error) { return showError(form, new Error("responses: " + error.message)); } }
    output.replaceChildren(h("p", { class: "muted", text: "Running…" }));
    try {
      const r = await api("POST", `/v1/plugins/${encodeURIComponent(v.plugin)}/playground`, body);
      output.replaceChildren(h("p", { class: "ok", id: "playground-count", text: `${r.events.length} event(s)` }), ...r.events.map((e) => h("div", {}, h("h2", { class: "pg-event-type", text: e.eventType + " · " + e.result }), pretty(e.record))));
    } catch (error) {
      output.replaceChildren(h("p", { class: "error", id: "playground-error", role: "alert", text: `${error.code}: ${error.message}` }));
    }
  });
  render(h("h1", { text: "Playground" }), form, output);
}

async function reservations(_parts, query) {
  const out = h("div", { id: "reservation-output" });
  const form = h("form", { class: "panel", id: "reservation-form" }, h("div", { class: "row" },
    h("div", {}, h("label", { for: "rs-account", text: "Account" }), h("input", { id: "rs-account", name: "accountId", required: true, value: query.get("accountId") || "" })),
    h("div", {}, h("label", { for: "rs-id", text: "Reservation id" }), h("input", { id: "rs-id", name: "recordId", required: true, value: query.get("recordId") || "" })),
    h("div", {}, h("button", { type: "submit", text: "Look up" }))));
  const lookup = async (accountId, recordId) => {
    try {
      const [state, log] = await Promise.all([api("GET", `/v1/accounts/${encodeURIComponent(accountId)}/reservations/${encodeURIComponent(recordId)}`),
        api("GET", `/v1/events?accountId=${encodeURIComponent(accountId)}&recordId=${encodeURIComponent(recordId)}&limit=1000`)]);
      const mine = log.events;
      out.replaceChildren(h("h2", { text: "Current state" }), pretty(state), h("h2", { text: "Events" }),
        mine.length ? h("ul", {}, mine.map((e) => h("li", {}, h("a", { href: "#/events/" + encodeURIComponent(e.id), text: `${when(e.timestamp)} ${e.eventType}` })))) : empty("No events of it yet."));
    } catch (error) { out.replaceChildren(h("p", { class: "error", role: "alert", text: error.message })); }
  };
  form.addEventListener("submit", (event) => { event.preventDefault(); const v = formValues(form); location.hash = `#/reservations?accountId=${encodeURIComponent(v.accountId)}&recordId=${encodeURIComponent(v.recordId)}`; });
  render(h("h1", { text: "Reservations" }), form, out);
  if (query.get("accountId") && query.get("recordId")) await lookup(query.get("accountId"), query.get("recordId"));
}

// ---- start -----------------------------------------------------------------------------------

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("signout").addEventListener("click", signOut);
  const toggle = document.getElementById("menu-toggle");
  toggle.addEventListener("click", () => { const nav = document.getElementById("nav"); nav.classList.toggle("open"); toggle.setAttribute("aria-expanded", nav.classList.contains("open")); });
  try {
    const session = await api("GET", "/v1/session");
    csrf = session.csrfToken;
    setNav(true);
    route();
  } catch (_) { showSignIn(); }
});
