// waguard operator console: sign-in, the hash routes (#overview, #pending, #failed,
// #held, #user/<id>, #audit) and the live poll.  No framework, no build step: ES modules
// served from /console/ under a strict Content-Security-Policy.

import { el, tickTimes } from "./dom.js";
import * as api from "./api.js";
import { dialogOpen } from "./dialog.js";
import { session, hideNotice, userHref } from "./shared.js";
import { overviewView } from "./overview.js";
import { listView } from "./lists.js";
import { userView } from "./user.js";
import { auditView } from "./audit.js";

const POLL_MS = 3000;

const NAV = [
  ["overview", "Overview", null],
  ["pending", "Pending", "pending"],
  ["failed", "Failed", "failed"],
  ["held", "Holds", "held"],
  ["audit", "Audit log", null],
];

const root = document.getElementById("root");
let shell = null;          // {main, nav: {id: {link, count}}, caller, role, find, findInput}
let current = null;        // {key, view}
let pollTimer = null, tickTimer = null, polling = false;

// ---------------------------------------------------------------------------- sign-in

function signInPage(message) {
  stopSession();
  const error = el("p", { class: "signin-error", id: "signin-error", hidden: !message, attrs: { role: "alert" },
                          text: message || "" });
  const input = el("input", { type: "password", name: "token", id: "token", autocomplete: "off", spellcheck: false,
                              required: true, attrs: { "aria-describedby": "token-hint signin-error" } });
  const submit = el("button", { type: "submit", class: "primary", name: "signin", text: "Sign in" });
  const form = el("form", { class: "signin", id: "signin-form", noValidate: true, attrs: { "aria-labelledby": "signin-title" } },
    el("h1", { id: "signin-title", text: "Sign in to waguard" }),
    el("div", { class: "field" },
      el("label", { htmlFor: "token", text: "Token" }),
      input,
      el("p", { class: "hint", id: "token-hint",
                text: "An admin token (operators: acknowledge, release, retry) or an api token (read-only). " +
                      "It is kept in this tab only and forgotten when you sign out or close the tab." })),
    error,
    el("div", { class: "buttons" }, submit));
  const showError = (m) => { error.textContent = m; error.hidden = false; input.setAttribute("aria-invalid", "true"); input.focus(); };
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const token = input.value.trim();
    if (!token) { showError("Enter a token."); return; }
    if (/[^\x21-\x7e]/.test(token)) { showError("Wrong token: a token has no spaces and no characters beyond ASCII."); return; }
    submit.disabled = true;
    error.hidden = true;
    const r = await api.call("GET", "/v1/overview", undefined, token);
    submit.disabled = false;
    if (r.status === 200 && r.data) {
      api.setToken(token);
      input.value = "";
      startSession(r.data);
    } else if (r.status === 401) {
      showError("Wrong token: waguard answered 401 Unauthorized (" + r.error + "). Check the token and try again.");
    } else if (r.status === 403) {
      showError("This token may not read the console: use an api or admin token (" + r.error + ").");
    } else {
      showError("Could not sign in: " + r.error);
    }
  });
  document.body.classList.remove("signed-in");
  root.replaceChildren(el("div", { class: "signin-page" },
    el("div", { class: "brand big" }, el("span", { class: "logo", attrs: { "aria-hidden": "true" } }), "waguard"),
    form));
  input.focus();
}

function signOut(message) {
  api.dropToken();
  for (const d of document.querySelectorAll("dialog")) { if (d.open) d.close(); d.remove(); }
  hideNotice();
  signInPage(message);
  if (location.hash) history.replaceState(null, "", location.pathname);
}

api.setUnauthorizedHandler((r) => {
  signOut("waguard refused the token (" + r.error + "): sign in again.");
});

// ---------------------------------------------------------------------------- the shell

function buildShell() {
  const nav = {};
  const links = NAV.map(([id, label, countKey]) => {
    const count = countKey ? el("span", { class: "count", data: { count: countKey }, hidden: true }) : null;
    const link = el("a", { href: "#" + id, class: "tab", data: { view: id } }, label, count ? " " : null, count);
    nav[id] = { link, count, countKey };
    return el("li", null, link);
  });
  const findInput = el("input", { type: "search", name: "user", id: "find-user", autocomplete: "off", spellcheck: false,
                                  placeholder: "wa_id, +number or user id" });
  const find = el("form", { class: "find", attrs: { role: "search" }, on: { submit: (e) => {
    e.preventDefault();
    const v = findInput.value.trim();
    if (!v) return;
    if (location.hash === userHref(v) && current && current.view.refresh) current.view.refresh();
    else location.hash = userHref(v);
  } } },
    el("label", { htmlFor: "find-user", text: "Find a user" }), findInput,
    el("button", { type: "submit", text: "Find" }));
  const caller = el("span", { class: "caller", id: "caller" });
  const role = el("span", { class: "role badge", id: "role" });
  const signout = el("button", { type: "button", name: "signout", id: "signout", class: "signout", text: "Sign out",
                                 on: { click: () => signOut("Signed out.") } });
  const banner = el("div", { class: "banner", id: "banner", hidden: true, attrs: { role: "alert" } });
  const main = el("main", { id: "main", tabIndex: -1 });
  const header = el("header", { class: "topbar" },
    el("a", { class: "brand", href: "#overview" }, el("span", { class: "logo", attrs: { "aria-hidden": "true" } }), "waguard"),
    el("nav", { class: "tabs", attrs: { "aria-label": "Views" } }, el("ul", null, links)),
    find,
    el("div", { class: "whoami" }, el("span", { class: "who-label", text: "Signed in as " }), caller, " ", role, signout));
  const toast = el("div", { id: "toast", class: "toast", hidden: true, attrs: { role: "status", "aria-live": "polite" } });
  root.replaceChildren(header, banner, toast, main);
  document.body.classList.add("signed-in");
  return { main, nav, caller, role, banner, findInput };
}

function showOverviewInShell(o) {
  shell.caller.textContent = String(o.caller ?? "");
  const admin = o.role === "admin";
  shell.role.textContent = admin ? "admin" : "api · read-only";
  shell.role.className = "role badge " + (admin ? "badge-ok" : "badge-muted");
  document.body.classList.toggle("read-only", !admin);
  for (const { count, countKey } of Object.values(shell.nav)) {
    if (!count) continue;
    const v = o[countKey];
    count.hidden = typeof v !== "number";
    const t = typeof v === "number" ? String(v) : "";
    if (count.textContent !== t) count.textContent = t;
    count.classList.toggle("nonzero", v > 0 && countKey !== "held");
  }
  if (o.redis && o.redis.up === false) {
    shell.banner.textContent = "Redis does not answer (" + o.redis.status + "): the gate " +
                               "fails as configured, and the lists cannot be read.";
    shell.banner.hidden = false;
  } else if (!shell.banner.dataset.network) shell.banner.hidden = true;
}

function startSession(overview) {
  session.overview = overview;
  session.caller = overview.caller;
  session.role = overview.role;
  session.canAct = overview.role === "admin";
  shell = buildShell();
  showOverviewInShell(overview);
  current = null;
  route();
  clearInterval(pollTimer);
  clearInterval(tickTimer);
  pollTimer = setInterval(poll, POLL_MS);
  tickTimer = setInterval(() => tickTimes(), 1000);
}

function stopSession() {
  clearInterval(pollTimer);
  clearInterval(tickTimer);
  pollTimer = tickTimer = null;
  if (current && current.view.unmount) current.view.unmount();
  current = null;
  shell = null;
  session.overview = session.caller = session.role = null;
  session.canAct = false;
  document.body.classList.remove("read-only");
}

// ---------------------------------------------------------------------------- routes

function parseHash() {
  const h = location.hash.replace(/^#/, "");
  if (h.startsWith("user/") && h.length > 5) {
    let id;
    try { id = decodeURIComponent(h.slice(5)); } catch { id = h.slice(5); }
    return { key: "user:" + id, name: "user", arg: id };
  }
  const [name, qs] = h.split("?");
  const known = ["overview", "pending", "failed", "held", "audit"];
  const n = known.includes(name) ? name : "overview";
  return { key: n + "?" + (qs || ""), name: n, arg: qs };
}

function makeView(name) {
  switch (name) {
    case "pending": case "failed": case "held": return listView(name);
    case "user": return userView();
    case "audit": return auditView();
    default: return overviewView();
  }
}

function route() {
  if (!shell) return;
  const r = parseHash();
  if (current && current.key === r.key) return;
  for (const d of document.querySelectorAll("dialog")) { if (d.open) d.close(); d.remove(); }
  if (current && current.view.unmount) current.view.unmount();
  const view = makeView(r.name);
  current = { key: r.key, view };
  shell.main.replaceChildren();
  for (const [id, { link }] of Object.entries(shell.nav)) {
    if (id === r.name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (r.name === "user") shell.findInput.value = r.arg;
  document.title = (r.name === "user" ? "User " + r.arg : view.title) + " · waguard console";
  view.mount(shell.main, r.arg);
}

window.addEventListener("hashchange", route);

// ---------------------------------------------------------------------------- the poll

async function poll() {
  if (polling || !shell || !api.getToken()) return;
  if (dialogOpen()) return;            // never change what is behind an open dialog
  polling = true;
  try {
    const r = await api.get("/v1/overview");
    if (!shell) return;
    if (r.ok && r.data) {
      delete shell.banner.dataset.network;
      session.overview = r.data;
      showOverviewInShell(r.data);
      if (current && current.view.show) current.view.show(r.data);
    } else if (r.status !== 401) {
      shell.banner.dataset.network = "1";
      shell.banner.textContent = "waguard does not answer the console: " + r.error + " (trying again)";
      shell.banner.hidden = false;
      if (current && current.view.show) current.view.show(null, r.error);
    }
    if (shell && current && current.view.refresh && !dialogOpen()) await current.view.refresh();
  } finally {
    polling = false;
  }
}

// ---------------------------------------------------------------------------- start

async function start() {
  const token = api.getToken();
  if (!token) { signInPage(); return; }
  root.replaceChildren(el("p", { class: "loading", text: "Signing in…" }));
  const r = await api.call("GET", "/v1/overview", undefined, token);
  if (r.status === 200 && r.data) startSession(r.data);
  else if (r.status === 401) return;   // the handler signed out
  else signInPage(r.status === 0 ? r.error : "Could not sign in: " + r.error);
}

start();
