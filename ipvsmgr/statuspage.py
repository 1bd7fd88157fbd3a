"""The live status page served at / on the metrics listener, and who may read it.

One static HTML document with its own CSS and a little plain JavaScript: it
fetches /status.json (what `ipvsmgr status --json` prints) once a second and
redraws. No framework, nothing fetched from elsewhere, no new dependency;
text goes in through textContent only, so a name in the file cannot inject
markup. Every row carries data-* attributes (data-real, data-health) for
scripts and tests to read.

Access: the page is read-only but shows the whole topology, so bound to
anything but a loopback address it needs a token (--status-auth FILE),
given as `Authorization: Bearer TOKEN` or as the password of HTTP basic auth
(any user name: a browser asks for it). The same token then guards /metrics.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import os
import stat

REALM = "ipvsmgr"


class AuthFileError(Exception):
    pass


def read_token(path: str) -> str:
    """The token: the file's first line. Refused: a missing, empty or oversized file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise AuthFileError(f"{path}: {e.strerror}") from e
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AuthFileError(f"{path}: not a regular file")
        data = os.read(fd, 4097)
    finally:
        os.close(fd)
    if len(data) > 4096:
        raise AuthFileError(f"{path}: larger than 4096 bytes: a token is one line")
    try:
        lines = data.decode().splitlines()
    except UnicodeDecodeError as e:
        raise AuthFileError(f"{path}: not UTF-8 text") from e
    token = lines[0].strip() if lines else ""
    if len(token) < 8:
        raise AuthFileError(f"{path}: the token (its first line) must be at least 8 characters")
    return token


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def authorized(header: str | None, token: str) -> bool:
    """Bearer TOKEN, or basic auth whose password is TOKEN (the user name is not checked)."""
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return hmac.compare_digest(value.encode(), token.encode())
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        _, sep, password = decoded.partition(":")
        return bool(sep) and hmac.compare_digest(password.encode(), token.encode())
    return False


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ipvsmgr</title>
<style>
:root { --bg:#f6f7f9; --card:#fff; --ink:#1d2430; --mute:#6b7585; --line:#e3e6eb;
  --up:#1f8a4c; --down:#c62f2f; --wait:#b7791f; --info:#2b63c6; }
* { box-sizing:border-box; }
body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; background:var(--bg); color:var(--ink); }
header { display:flex; gap:1.5em; align-items:baseline; padding:.8em 1.2em; background:#1d2430; color:#fff; }
header h1 { font-size:1.15em; margin:0; }
header span { color:#c5ccd8; font-size:.9em; }
#stale { margin-left:auto; }
main { padding:1em 1.2em; display:grid; gap:1em; }
section { background:var(--card); border:1px solid var(--line); border-radius:6px; padding:.6em .9em; }
h2 { font-size:1em; margin:.2em 0 .5em; }
h3 { font-size:.95em; margin:.8em 0 .3em; }
h3 small { color:var(--mute); font-weight:normal; margin-left:.6em; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:.25em .6em; border-bottom:1px solid var(--line); white-space:nowrap; }
th { color:var(--mute); font-weight:600; font-size:.85em; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
td.why { white-space:normal; color:var(--mute); max-width:32em; }
.badge { display:inline-block; min-width:4.5em; text-align:center; padding:0 .5em; border-radius:3px; color:#fff; font-size:.85em; }
.up, .master, .established, .announced, .active { background:var(--up); }
.down, .fault, .refused, .attack, .stale, .withdrawn { background:var(--down); }
.pending, .backup, .init, .connected, .idle, .draining, .degraded { background:var(--wait); }
.unchecked, .sorry, .off { background:var(--mute); }
.empty { color:var(--mute); }
</style></head>
<body>
<header><h1>ipvsmgr</h1><span id="node"></span><span id="stale"></span></header>
<main>
<section id="services"><h2>Virtual servers</h2><div id="vs"></div></section>
<section><h2>VRRP</h2><div id="vrrp"></div></section>
<section><h2>BGP</h2><div id="bgp"></div></section>
<section><h2>XDP guard</h2><div id="xdp"></div></section>
<section><h2>Discovery</h2><div id="discovery"></div></section>
</main>
<script>
"use strict";
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k == null ? "" : String(k)));
  return e;
}
function badge(text) { return el("span", {class: "badge " + String(text).toLowerCase()}, text); }
function rate(b) {
  const u = ["B/s", "kB/s", "MB/s", "GB/s"]; let i = 0;
  while (b >= 1000 && i < u.length - 1) { b /= 1000; i++; }
  return (i ? b.toFixed(1) : b) + " " + u[i];
}
function table(head, rows, empty) {
  if (!rows.length) return el("p", {class: "empty"}, empty);
  // a heading starting with # names a numeric column: right-aligned like its numbers
  const th = h => h.startsWith("#") ? el("th", {style: "text-align:right"}, h.slice(1)) : el("th", {}, h);
  return el("table", {}, el("thead", {}, el("tr", {}, ...head.map(th))), el("tbody", {}, ...rows));
}
function td(v, cls) { return el("td", cls ? {class: cls} : {}, v); }
function realRow(vs, r) {
  const health = r.drained ? "draining" : r.health;
  return el("tr", {"data-real": vs.name + "|" + r.address, "data-health": r.health, "data-weight": String(r.weight)},
    td(r.address), td(badge(r.sorry_server ? "sorry" : health)),
    td(r.weight == null ? "-" : r.weight, "num"), td(r.configured_weight, "num"),
    td(r.active_connections, "num"), td(r.inactive_connections, "num"), td(r.cps, "num"),
    td(rate(r.in_bytes_per_s), "num"), td(rate(r.out_bytes_per_s), "num"),
    td(r.origin), td(r.reason, "why"));
}
function drawServices(s) {
  const out = [];
  for (const vs of s.virtual_servers) {
    const q = vs.quorum === false ? badge("down") : vs.quorum ? badge("up") : badge("unchecked");
    q.textContent = "quorum " + q.textContent;
    out.push(el("h3", {"data-vs": vs.name}, vs.name + " ", el("small", {}, vs.service + " · " + vs.scheduler + " · " +
      vs.cps + " conn/s · " + vs.connections_total + " total"), " ", q));
    out.push(table(["Real", "Health", "#Weight", "#Configured", "#Active", "#Inactive", "#Conn/s", "#In", "#Out", "Origin", "Last reason"],
      vs.reals.map(r => realRow(vs, r)), "no reals"));
  }
  document.getElementById("vs").replaceChildren(...(out.length ? out : [el("p", {class: "empty"}, "no virtual servers")]));
}
function drawVrrp(s) {
  const rows = (s.vrrp || []).map(i => el("tr", {"data-instance": i.name, "data-state": i.state},
    td(i.name), td(badge(i.state)), td(i.interface), td(i.vrid, "num"), td(i.priority, "num"),
    td(i.master ? i.master + " (" + i.master_priority + ")" : "-"), td(i.adverts_sent, "num"), td(i.adverts_received, "num"),
    td(Object.values(i.faults || {}).join("; "), "why")));
  document.getElementById("vrrp").replaceChildren(table(["Instance", "State", "Interface", "#VRID", "#Priority", "Master heard",
    "#Sent", "#Received", "Faults"], rows, "no VRRP instances"));
}
function drawBgp(s) {
  const b = s.bgp, box = document.getElementById("bgp");
  if (!b) { box.replaceChildren(el("p", {class: "empty"}, "BGP not configured")); return; }
  const peers = Object.entries(b.neighbors || {}).map(([a, n]) => el("tr", {"data-peer": a}, td(a), td(badge(n.state)), td(n.ups, "num")));
  const prefixes = Object.entries(b.prefixes || {}).map(([p, d]) => el("tr", {"data-prefix": p},
    td(p), td(badge(d.announce ? "announced" : "withdrawn")), td(d.reason, "why")));
  box.replaceChildren(table(["Peer", "State", "#Times up"], peers, "no peers"),
    table(["Prefix", "Route", "Why"], prefixes, "no prefixes"));
}
function drawXdp(s) {
  const x = s.xdp, box = document.getElementById("xdp");
  if (!x) { box.replaceChildren(el("p", {class: "empty"}, "XDP guard not configured")); return; }
  const vips = (x.vips || []).map(v => el("tr", {"data-vip": v.address}, td(v.address),
    td(badge(v.under_attack ? "attack" : "idle")), td(v.syn_rate, "num"), td(v.attacks, "num")));
  const counters = Object.entries(x.counters || {}).map(([r, c]) => el("tr", {}, td(r), td(c.verdict), td(c.packets, "num")));
  box.replaceChildren(el("p", {}, "guard: ", badge(x.state)), table(["VIP", "Mode", "#SYN/s", "#Attacks"], vips, "no VIPs"),
    table(["Reason", "Verdict", "#Packets"], counters, "no packets yet"));
}
function drawDiscovery(s) {
  const rows = (s.discovery || []).map(d => el("tr", {"data-source": d.source}, td(d.virtual_server), td(d.source),
    td(badge(d.stale ? "stale" : "up")), td(d.reals, "num"), td(d.removals_held, "num"), td(d.error || "", "why")));
  document.getElementById("discovery").replaceChildren(table(["Virtual server", "Source", "State", "#Reals", "#Held", "Error"],
    rows, "no discovery sources"));
}
async function tick() {
  try {
    const resp = await fetch("status.json", {cache: "no-store", credentials: "same-origin"});
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const s = await resp.json();
    const d = s.daemon;
    document.getElementById("node").textContent = "pid " + d.pid + " · " + d.version + " · " + d.config +
      " · up " + Math.round(d.uptime_s) + " s";
    document.getElementById("stale").textContent = "updated " + new Date().toLocaleTimeString();
    drawServices(s); drawVrrp(s); drawBgp(s); drawXdp(s); drawDiscovery(s);
    document.body.dataset.updated = String(Date.now());
  } catch (e) {
    document.getElementById("stale").textContent = "not updating: " + e.message;
  }
}
tick(); setInterval(tick, 1000);
</script></body></html>
"""
