"""keepalived.conf -> ipvsmgr YAML: a pure function of the statement tree.

Every statement is accounted for. What the converter maps it marks used;
whatever is left unmarked at the end is listed as having no equivalent, so
nothing can be dropped silently. keepalived's defaults are written out where
they differ from ipvsmgr's (VRRP version 2, checks every 60 s, reals removed
rather than set to weight 0 on failure, reals up before their first check).
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import re
import shlex
import shutil
from typing import Any

from ipvsmgr.config.durations import format_duration
from ipvsmgr.migrate.findings import Finding
from ipvsmgr.migrate.kaconf import Node, Parsed, Pos
from ipvsmgr.migrate.kakeywords import KEYWORDS

SCHEDULERS = {"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"}
METHODS = {"NAT": "nat", "DR": "dr", "TUN": "tunnel"}
SCHED_FLAGS = {"sh-port", "sh-fallback", "mh-port", "mh-fallback", "flag-1", "flag-2", "flag-3"}
FREE_FORM = "free-form"  # a block of address lines and the like, not keywords

# Settings that change nothing ipvsmgr does: listed as ignored, not as missing behaviour.
IGNORED = {
    "router_id": "ipvsmgr names nodes by host name",
    "notification_email": "no e-mail: use notify commands or the metrics",
    "notification_email_from": "no e-mail",
    "smtp_server": "no e-mail",
    "smtp_connect_timeout": "no e-mail",
    "smtp_helo_name": "no e-mail",
    "smtp_alert": "no e-mail",
    "smtp_alert_vrrp": "no e-mail",
    "smtp_alert_checker": "no e-mail",
    "no_email_faults": "no e-mail",
    "no_checker_emails": "no e-mail",
    "enable_script_security": "ipvsmgr always runs scripts as the configured user, never as root unless told",
    "debug": "use --log-level debug",
    "log_unknown_vrids": "ipvsmgr counts adverts for unknown VRIDs in its metrics",
    "log_all_failures": "ipvsmgr logs every health transition with its reason",
    "checker_log_all_failures": "ipvsmgr logs every health transition with its reason",
    "snmp_name": "no SNMP: use the Prometheus metrics",
    "ha_suspend": "ipvsmgr checks reals on every node, master or backup",
    "linkbeat_use_polling": "ipvsmgr follows links over netlink",
    "dynamic_interfaces": "ipvsmgr follows interfaces over netlink",
    "use_pid_dir": "systemd keeps the daemon's PID",
    "umask": "the daemon's files are created 0600/0700",
    "max_auto_priority": "see vrrp.realtime_priority",
    "min_auto_priority_delay": "see vrrp.realtime_priority",
    "http_protocol": "ipvsmgr sends HTTP/1.1 requests with Connection: close",
    "warmup": "ipvsmgr spreads first checks with its jitter",
}
IGNORED_PREFIXES = (
    "enable_snmp",
    "snmp_",
    "enable_traps",
    "enable_dbus",
    "dbus_",
    "vrrp_process_name",
    "checker_process_name",
    "bfd_process_name",
    "lvs_process_name",
    "process_name",
    "vrrp_no_swap",
    "checker_no_swap",
    "bfd_no_swap",
    "vrrp_cpu_affinity",
    "checker_cpu_affinity",
    "bfd_cpu_affinity",
    "vrrp_rlimit",
    "checker_rlimit",
    "bfd_rlimit",
    "checker_priority",
    "checker_rt_priority",
    "bfd_priority",
    "bfd_rt_priority",
    "vrrp_priority",
    "vrrp_netlink",
    "lvs_netlink",
    "process_monitor_rcv",
    "vrrp_rx_bufs",
    "kernel_rx_buf_size",
    "tmp_config_directory",
    "config_save_dir",
    "random_seed",
    "child_wait_time",
    "reload_",
    "startup_script",
    "shutdown_script",
    "vrrp_notify_fifo",
    "notify_fifo",
    "lvs_notify_fifo",
    "fifo_write",
    "instance",
    "data_use_instance",
)


def block_kind(parent: str, name: str) -> str | None:
    """The KEYWORDS key for a child block, FREE_FORM for a block of lines, None: not a block."""
    if parent == "":
        if name in ("virtual_server_group", "static_ipaddress", "static_routes", "static_rules"):
            return FREE_FORM
        return name if name in KEYWORDS else FREE_FORM
    if parent == "virtual_server" and name == "real_server":
        return "real_server"
    if parent == "real_server" and name in KEYWORDS:
        return name
    if parent in ("HTTP_GET", "SSL_GET") and name == "url":
        return "url"
    if parent == "SMTP_CHECK" and name == "host":
        return "host"
    if parent == "vrrp_instance" and name == "authentication":
        return "authentication"
    return FREE_FORM


class Converter:
    def __init__(self, parsed: Parsed) -> None:
        self.parsed = parsed
        self.findings: list[Finding] = []
        self.scripts: dict[str, Node] = {}
        self.converted_scripts: dict[str, dict[str, Any] | None] = {}
        self.tracked_scripts: set[str] = set()
        self.track_files: dict[str, Node] = {}
        self.groups: dict[str, Node] = {}
        self.instances: dict[str, Node] = {}
        self.defaults: dict[str, Any] = {"vrrp_version": 2}
        self.vs_names: set[str] = set()
        self.vmac_names: set[str] = set()
        self.doc: dict[str, Any] = {}

    # ------------------------------------------------------------- helpers

    def report(self, node: Node | Pos, kind: str, message: str) -> None:
        pos = node if isinstance(node, Pos) else node.pos
        self.findings.append(Finding(pos, kind, message))

    def error(self, node: Node | Pos, message: str) -> None:
        self.report(node, "error", message)

    def use(self, node: Node | None) -> Node | None:
        if node is not None:
            node.used = True
        return node

    def take(self, block: Node, name: str) -> Node | None:
        """The (last) child `name`, marked used; earlier repeats are marked too (overridden)."""
        found = None
        for child in block.all(name):
            child.used = True
            found = child
        return found

    def number(self, node: Node, lo: float, hi: float, i: int = 0, integer: bool = True) -> float | None:
        if len(node.args) <= i:
            self.error(node, f"'{node.name}' needs a value")
            return None
        text = node.args[i]
        try:
            value = float(int(text)) if integer else float(text)
        except ValueError:
            self.error(node, f"'{node.name}': '{text}' is not a{'n integer' if integer else ' number'}")
            return None
        if not lo <= value <= hi:
            self.error(node, f"number '{text}' outside range [{lo:g}, {hi:g}]")
            return None
        return value

    def setting(self, block: Node, name: str, lo: float, hi: float, integer: bool = True) -> float | None:
        node = self.take(block, name)
        return None if node is None else self.number(node, lo, hi, integer=integer)

    def text(self, block: Node, name: str) -> str | None:
        node = self.take(block, name)
        if node is None:
            return None
        if not node.args:
            self.error(node, f"'{name}' needs a value")
            return None
        return " ".join(node.args)

    # ------------------------------------------------------------- driver

    def run(self) -> dict[str, Any]:
        root = self.parsed.root
        for pos, message in self.parsed.warnings:
            self.report(pos, "note", message)
        for node in root.children or []:
            if node.name == "vrrp_instance" and node.args:
                self.instances[node.args[0]] = node
        self._check_keywords(root, "")
        for node in root.children or []:
            if not node.args and node.name in (
                "vrrp_script",
                "track_file",
                "vrrp_track_file",
                "vrrp_instance",
            ):
                self.error(node, f"'{node.name}' needs a name")
                continue
            if node.name == "vrrp_script":
                self.scripts[node.args[0]] = node
            elif node.name in ("track_file", "vrrp_track_file"):
                self.track_files[node.args[0]] = node
            elif node.name == "virtual_server_group" and node.args:
                self.groups[node.args[0]] = node
                node.used = True
        for node in root.all("global_defs"):
            self.use(node)
            self._global_defs(node)
        for name, node in self.scripts.items():
            self.converted_scripts[name] = self._script(node)
        self._script_security(root)
        self._routes_and_rules(root)
        servers = [self._virtual_server(n) for n in root.all("virtual_server")]
        vss = [vs for group in servers for vs in group]
        if vss:
            self.doc["virtual_servers"] = vss
            # keepalived deletes a real that fails or leaves (its connections live on in IPVS as
            # they would at weight 0); ipvsmgr's default keeps it at weight 0 until they end
            self.doc.setdefault("ipvs", {})["drain_timeout"] = "0s"
        instances = [i for i in (self._instance(n) for n in root.all("vrrp_instance")) if i]
        groups = [g for g in (self._sync_group(n) for n in root.all("vrrp_sync_group")) if g]
        if instances:
            vrrp: dict[str, Any] = {"instances": instances}
            if groups:
                vrrp["sync_groups"] = groups
            if "realtime_priority" in self.defaults:
                vrrp["realtime_priority"] = self.defaults["realtime_priority"]
            self.doc["vrrp"] = vrrp
        for name, node in self.scripts.items():
            if name not in self.tracked_scripts and self.converted_scripts.get(name) is not None:
                self.report(node, "note", f"vrrp_script {name} is tracked by no instance: not carried over")
        for name, node in self.track_files.items():
            if not node.used:
                self.use(node)
                self._mark_all(node)
                self.report(node, "note", f"track_file {name} is tracked by nothing: not carried over")
        self._unused(root)
        self.findings.sort(key=lambda f: (f.pos.file, f.pos.line, f.pos.col))
        return self.doc

    def _mark_all(self, node: Node) -> None:
        for c in node.children or []:
            c.used = True
            self._mark_all(c)

    def _check_keywords(self, block: Node, kind: str) -> None:
        """keepalived's "Unknown keyword": a keyword its parser does not know in this block."""
        allowed = KEYWORDS.get(kind)
        for child in block.children or []:
            if allowed is not None and child.name not in allowed:
                hint = ""
                if kind == "vrrp_sync_group" and child.name in self.instances:
                    names = " ".join(c.name for c in block.children or [] if c.name in self.instances)
                    hint = (
                        " (keepalived 2 reads a sync group's instances only inside group { }: "
                        f"write group {{ {names} }})"
                    )
                self.error(child, f"Unknown keyword '{child.name}'{hint}")
                child.used = True
                continue
            if child.children is not None:
                sub = block_kind(kind, child.name)
                if sub != FREE_FORM and sub is not None:
                    self._check_keywords(child, sub)

    def _default_script_user(self) -> bool:
        """keepalived with enable_script_security and no script_user runs scripts as
        keepalived_script, and -t refuses them when that user does not exist here."""
        if not self.defaults.get("script_security"):
            return True
        try:
            pwd.getpwnam(DEFAULT_SCRIPT_USER)
        except KeyError:
            return False
        return True

    def _script_security(self, root: Node) -> None:
        """keepalived -t refuses scripts that exist on this machine unless enable_script_security."""
        if any(g.find("enable_script_security") for g in root.all("global_defs")):
            return
        found: list[Node] = []

        def walk(node: Node) -> None:
            command = None
            if node.name in SCRIPT_KEYWORDS and node.args:
                command = node.args[0]
            if command:
                try:
                    argv0 = shlex.split(command)[0] if command.strip() else ""
                except ValueError:
                    argv0 = ""
                if argv0 and (os.path.exists(argv0) if "/" in argv0 else shutil.which(argv0)):
                    found.append(node)
            for child in node.children or []:
                walk(child)

        walk(root)
        if found:
            self.error(
                found[0],
                "SECURITY VIOLATION - scripts are being executed but script_security not enabled "
                "(keepalived -t refuses this: add enable_script_security to global_defs)",
            )

    def _routes_and_rules(self, root: Node) -> None:
        """What keepalived -t says of route and rule lines (ipvsmgr carries neither over)."""

        def lines(kind: str) -> list[tuple[str, Node]]:
            out = []
            for top in root.children or []:
                blocks = [top] if top.name == kind else top.all(kind) if top.name == "vrrp_instance" else []
                out += [(b.name, line) for b in blocks for line in b.children or []]
            return out

        for kind, line in lines("virtual_routes") + lines("static_routes"):
            words = [line.name, *line.args]
            for old, new in (("or", "nexthop"), ("gw", "via")):
                if old in words[1:]:
                    self.error(line, f'"{old}" for routes is deprecated. Please use "{new}"')
            if kind == "virtual_routes" and "dev" not in words:
                self.error(line, f"cannot track route '{' '.join(words)}' with no interface specified")
        for _, line in lines("virtual_rules") + lines("static_rules"):
            words = [line.name, *line.args]
            if not {"preference", "prio", "priority", "pref", "order"} & set(words):
                self.error(line, "Rule has no preference specified")
            for key in ("from", "to"):
                if key in words[:-1]:
                    value = words[words.index(key) + 1]
                    try:
                        if value != "all":
                            ipaddress.ip_network(value, strict=False)
                    except ValueError:
                        self.error(line, f"Invalid rule {key} address {value}")

    def _unused(self, block: Node) -> None:
        for child in block.children or []:
            if child.used:
                if child.children is not None:
                    self._unused(child)
                continue
            reason = IGNORED.get(child.name)
            if reason is None and child.name.startswith(IGNORED_PREFIXES):
                reason = "process tuning, names and interfaces of keepalived itself"
            if reason is not None:
                self.report(child, "ignored", f"{child.name}: {reason}")
            else:
                self.report(
                    child, "unmapped", f"{child.name}: {UNMAPPED.get(child.name, 'no ipvsmgr equivalent')}"
                )

    # ------------------------------------------------------------- global_defs

    def _global_defs(self, g: Node) -> None:
        v = self.setting(g, "vrrp_version", 2, 3)
        if v is not None:
            self.defaults["vrrp_version"] = int(v)
        for key in ("vrrp_garp_master_delay", "vrrp_garp_master_repeat", "vrrp_garp_master_refresh",
                    "vrrp_garp_interval", "vrrp_gna_interval",
                    "vrrp_garp_master_refresh_repeat"):  # fmt: skip
            node = self.take(g, key)
            if node is not None:
                value = self.number(node, 0, 86400, integer=False)
                if value is not None:
                    self.defaults[key.removeprefix("vrrp_")] = value
        if g.find("enable_script_security") is not None:
            self.defaults["script_security"] = True
        rt = self.take(g, "vrrp_rt_priority")
        if rt is not None:
            value = self.number(rt, 1, 99)
            if value is not None:
                self.defaults["realtime_priority"] = int(value)
        user = self.take(g, "script_user")
        if user is not None and user.args:
            self.defaults["script_user"] = user.args[0]
            if len(user.args) > 1:
                self.report(user, "note", "the group is the user's own group in ipvsmgr")
        timeouts = self.take(g, "lvs_timeouts")
        if timeouts is not None:
            self._lvs_timeouts(timeouts)
        sync = self.take(g, "lvs_sync_daemon")
        if sync is not None:
            self._lvs_sync_daemon(sync)
        for n in g.children or []:
            if n.name == "vrrp_strict" and not n.used:
                n.used = True
                self.report(
                    n,
                    "unmapped",
                    "vrrp_strict: ipvsmgr always accepts packets to its VIPs and "
                    "checks adverts as RFC 5798 says; it adds no firewall rules",
                )

    def _lvs_timeouts(self, n: Node) -> None:
        out: dict[str, str] = {}
        names = {"tcp": "tcp", "tcpfin": "tcp_fin", "udp": "udp"}
        args = n.args
        for i in range(0, len(args) - 1, 2):
            key = names.get(args[i])
            if key is None:
                self.error(n, f"lvs_timeouts: unknown timeout '{args[i]}'")
                continue
            try:
                out[key] = format_duration(float(int(args[i + 1])))
            except ValueError:
                self.error(n, f"lvs_timeouts: '{args[i + 1]}' is not a number")
        if len(args) % 2:
            self.error(n, "lvs_timeouts: a timeout without its value")
        if out:
            self.doc.setdefault("ipvs", {})["timeouts"] = out

    def _lvs_sync_daemon(self, n: Node) -> None:
        if len(n.args) < 2:
            self.error(n, "lvs_sync_daemon needs an interface and a VRRP instance")
            return
        sync: dict[str, Any] = {"interface": n.args[0], "follow": n.args[1]}
        rest = n.args[2:]
        for i in range(0, len(rest) - 1, 2):
            if rest[i] == "id":
                sync["sync_id"] = int(rest[i + 1]) if rest[i + 1].isdigit() else 0
            else:
                self.report(n, "note", f"lvs_sync_daemon {rest[i]}: the kernel's default is kept")
        self.doc.setdefault("ipvs", {})["connection_sync"] = sync

    # ------------------------------------------------------------- virtual servers

    def _virtual_server(self, vs: Node) -> list[dict[str, Any]]:
        self.use(vs)
        keys = self._service_keys(vs)
        if keys is None:
            self._mark_all(vs)
            return []
        common: dict[str, Any] = {}
        proto = self.text(vs, "protocol")
        fwmark_only = all(k[0] == "fwmark" for k in keys)
        if proto is None and not fwmark_only:
            self.error(vs, "no protocol set (keepalived -t refuses this and would run it as UDP)")
        elif proto is not None and proto.upper() not in ("TCP", "UDP", "SCTP"):
            self.error(vs, f"unknown protocol '{proto}'")
        algo_node = self.take(vs, "lb_algo") or self.take(vs, "lvs_sched")
        if algo_node is None:
            self.error(vs, "no scheduler set (keepalived -t refuses this and would run wlc)")
        elif not algo_node.args or algo_node.args[0] not in SCHEDULERS:
            self.error(algo_node, f"Invalid lvs_scheduler '{' '.join(algo_node.args)}'")
        else:
            common["scheduler"] = algo_node.args[0]
        flags = []
        for n in vs.children or []:
            if n.name in SCHED_FLAGS:
                n.used = True
                flag = named_flag(common.get("scheduler", ""), n.name)
                if flag is None:
                    self.report(
                        n, "unmapped", f"{n.name}: a scheduler flag {common.get('scheduler')} has no use for"
                    )
                else:
                    flags.append(flag)
            elif n.name in ("hashed",):
                n.used = True
                self.report(n, "note", "hashed: IPVS hashes every service; nothing to set")
        if flags:
            common["scheduler_flags"] = sorted(set(flags))
        method = self._method(vs, self.take(vs, "lb_kind") or self.take(vs, "lvs_method"))
        if method:
            common.update(method)
        self._persistence(vs, common)
        ops = self.take(vs, "ops")
        if ops is not None:
            common["one_packet"] = True
        real_defaults = self._check_defaults(vs, {})
        reals = [r for r in (self._real(r, real_defaults) for r in vs.all("real_server")) if r]
        self._sorry(vs, common)
        self._quorum(vs, common)
        for name in ("alpha",):
            for n in vs.all(name):
                if not n.used:
                    n.used = True
                    self.report(n, "unmapped", f"{name}: {UNMAPPED[name]}")
        check = _shared_check(reals)
        out = []
        group = vs.args[1] if vs.args[0] == "group" else None
        for key in keys:
            entry: dict[str, Any] = {"#": f"from {vs.pos}: virtual_server {' '.join(vs.args)}"}
            if key[0] == "fwmark":
                entry["name"] = self._name(f"fwmark-{key[1]}" if not group else f"{group}-fwmark-{key[1]}")
                entry["fwmark"] = key[1]
                if key[2]:
                    entry["family"] = key[2]
                if proto and vs.args[0] == "fwmark":
                    self.error(
                        vs.find("protocol") or vs,
                        "protocol specified for fwmark - protocol will be ignored "
                        "(keepalived -t refuses this)",
                    )
            else:
                addr, port = key[1], key[2]
                base = f"{group}-{addr}-{port}" if group else f"{addr}-{port}"
                entry["name"] = self._name(base.replace(":", "_"))
                entry["address"] = addr
                entry["port"] = port
                if proto:
                    entry["protocol"] = proto.lower()
            entry.update({k: v for k, v in common.items() if not k.startswith("_")})
            if check is not None:
                entry["health_check"] = check
            entry["reals"] = [
                {k: v for k, v in r.items() if k != "health_check" or check is None} for r in reals
            ]
            out.append(entry)
        if group and len(out) > 1:
            self.report(
                vs,
                "note",
                f"virtual_server group {group}: written as {len(out)} virtual servers; each real's "
                "identical checks run once for all of them",
            )
        return out

    def _name(self, base: str) -> str:
        name, i = base, 2
        while name in self.vs_names:
            name, i = f"{base}-{i}", i + 1
        self.vs_names.add(name)
        return name

    def _service_keys(self, vs: Node) -> list[tuple[Any, ...]] | None:
        a = vs.args
        if len(a) == 2 and a[0] == "fwmark":
            if not a[1].isdigit() or not 1 <= int(a[1]) <= 0xFFFFFFFF:
                self.error(vs, f"invalid fwmark '{a[1]}'")
                return None
            return [("fwmark", int(a[1]), self._family(vs))]
        if len(a) == 2 and a[0] == "group":
            g = self.groups.get(a[1])
            if g is None:
                self.error(vs, f"virtual server group {a[1]} is not defined")
                return None
            return self._group_keys(g, vs)
        if len(a) == 2:
            addr = _address(a[0])
            port = _port(a[1])
            if addr is None or port is None:
                self.error(vs, f"invalid virtual server address '{' '.join(a)}'")
                return None
            return [("addr", addr, port)]
        self.error(vs, f"virtual_server needs 'IP PORT', 'fwmark N' or 'group NAME', not '{' '.join(a)}'")
        return None

    def _family(self, vs: Node) -> str | None:
        fam = self.take(vs, "ip_family")
        if fam is None or not fam.args:
            return None
        if fam.args[0] not in ("inet", "inet6"):
            self.error(fam, f"unknown ip_family '{fam.args[0]}'")
            return None
        return "ipv6" if fam.args[0] == "inet6" else "ipv4"

    def _group_keys(self, g: Node, vs: Node) -> list[tuple[Any, ...]] | None:
        keys: list[tuple[Any, ...]] = []
        family = self._family(vs)
        for line in g.children or []:
            line.used = True
            words = [line.name, *line.args]
            if words[0] == "fwmark" and len(words) == 2 and words[1].isdigit():
                keys.append(("fwmark", int(words[1]), family))
                continue
            if len(words) != 2:
                self.error(line, f"virtual_server_group entry '{' '.join(words)}': need 'IP[-LAST] PORT'")
                continue
            addrs = _address_range(words[0])
            port = _port(words[1])
            if addrs is None or port is None:
                self.error(line, f"invalid virtual_server_group entry '{' '.join(words)}'")
                continue
            keys.extend(("addr", a, port) for a in addrs)
        fams = {":" in k[1] for k in keys if k[0] == "addr"}
        has_mark = any(k[0] == "fwmark" for k in keys)
        if len(fams) > 1 and has_mark and family is None:
            self.error(
                vs, f"virtual server group {g.args[0]} cannot have IPv4, IPv6 and fwmark without family"
            )
            return None
        if has_mark and family is None and fams:
            keys = [("fwmark", k[1], "ipv6" if True in fams else "ipv4") if k[0] == "fwmark" else k
                    for k in keys]  # fmt: skip
        if not keys:
            self.error(g, f"virtual server group {g.args[0]} has no entries")
            return None
        return keys

    def _method(self, node: Node, kind: Node | None) -> dict[str, Any] | None:
        if kind is None:
            return None
        if not kind.args or kind.args[0] not in METHODS:
            self.error(kind, f"Invalid lvs_method '{' '.join(kind.args)}'")
            return None
        out: dict[str, Any] = {"forwarding": METHODS[kind.args[0]]}
        if kind.args[0] == "TUN":
            tunnel: dict[str, Any] = {}
            rest = kind.args[1:]
            i = 0
            while i < len(rest):
                word = rest[i]
                if word == "type" and i + 1 < len(rest) and rest[i + 1] in ("ipip", "gue", "gre"):
                    tunnel["type"] = rest[i + 1]
                    i += 2
                elif word == "port" and i + 1 < len(rest) and rest[i + 1].isdigit():
                    tunnel["port"] = int(rest[i + 1])
                    i += 2
                elif word in ("csum", "remcsum", "nocsum"):
                    tunnel["checksum"] = "none" if word == "nocsum" else word
                    i += 1
                else:
                    self.error(kind, f"lvs_method TUN: unknown option '{word}'")
                    i += 1
            if tunnel:
                out["tunnel"] = tunnel
        return out

    def _persistence(self, vs: Node, out: dict[str, Any]) -> None:
        timeout = self.setting(vs, "persistence_timeout", 1, 0xFFFFFFFF)
        gran = self.take(vs, "persistence_granularity")
        engine = self.take(vs, "persistence_engine")
        if timeout is None and gran is None and engine is None:
            return
        p: dict[str, Any] = {"timeout": format_duration(timeout if timeout is not None else 360)}
        if engine is not None:
            if engine.args[:1] != ["sip"]:
                self.error(engine, f"unknown persistence_engine '{' '.join(engine.args)}' (IPVS has sip)")
            else:
                p["engine"] = "sip"
        if gran is not None and gran.args:
            mask = gran.args[0]
            if mask.isdigit():
                p["prefix"] = int(mask)
            else:
                try:
                    ipaddress.IPv4Address(mask)
                except ValueError:
                    self.error(gran, f"invalid persistence_granularity '{mask}'")
                    return
                p["netmask"] = mask
        out["persistence"] = p

    def _sorry(self, vs: Node, out: dict[str, Any]) -> None:
        s = self.take(vs, "sorry_server")
        if s is None:
            return
        addr = _address(s.args[0]) if s.args else None
        port = _port(s.args[1]) if len(s.args) > 1 else None
        if addr is None or port is None:
            self.error(s, f"invalid sorry_server '{' '.join(s.args)}'")
            return
        sorry: dict[str, Any] = {"address": addr, "port": port}
        method = self._method(vs, self.take(vs, "sorry_server_lvs_method"))
        if method:
            sorry.update(method)
        inhibit = self.take(vs, "sorry_server_inhibit")
        if inhibit is not None:
            self.report(
                inhibit,
                "note",
                "sorry_server_inhibit: ipvsmgr removes the sorry server when the " "quorum returns",
            )
        out["sorry_server"] = sorry
        out["_quorum_used"] = True

    def _quorum(self, vs: Node, out: dict[str, Any]) -> None:
        q = self.setting(vs, "quorum", 1, 0xFFFFFFFF)
        h = self.setting(vs, "hysteresis", 0, 0xFFFFFFFF)
        commands: dict[str, Any] = {}
        for kind, key in (("quorum_up", "up_command"), ("quorum_down", "down_command")):
            argv = self._command(vs, kind)
            if argv:
                commands[key] = argv
        omega = self.take(vs, "omega")
        if omega is not None:
            if "down_command" in commands:
                commands["down_on_stop"] = True
            else:
                self.report(omega, "note", "omega without quorum_down changes nothing")
        if commands:
            out["_quorum_used"] = True
        if q is None and not out.pop("_quorum_used", False):
            if h is not None:
                self.report(vs, "note", "hysteresis without quorum or a sorry server changes nothing")
            return
        quorum = int(q) if q is not None else 1
        entry: dict[str, Any] = {"min_up": 1, "min_weight": quorum, **commands}
        if h:
            # keepalived: lost below quorum - hysteresis, back at quorum + hysteresis, by weight alone
            hyst = int(h)
            entry.update(min_up=0, min_weight=max(quorum - hyst, 0), hysteresis=2 * hyst)
        out["quorum"] = entry

    # ------------------------------------------------------------- reals and checks

    def _check_defaults(self, block: Node, inherited: dict[str, Any]) -> dict[str, Any]:
        """delay_loop, connect_timeout, retry, delay_before_retry, alpha, inhibit_on_failure, virtualhost:
        set on the virtual server, the real or the checker, the nearest winning."""
        d = dict(inherited)
        for key, lo, hi, integer in (("delay_loop", 0.000001, 86400 * 365, False),
                                     ("connect_timeout", 0.000001, 86400, False),
                                     ("retry", 0, 0xFFFFFFFF, True), ("nb_get_retry", 0, 0xFFFFFFFF, True),
                                     ("delay_before_retry", 0, 86400, False),
                                     ("warmup", 0, 86400, False)):  # fmt: skip
            v = self.setting(block, key, lo, hi, integer)
            if v is not None:
                d["retry" if key == "nb_get_retry" else key] = v
        alpha = self.take(block, "alpha")
        if alpha is not None:
            d["alpha"] = not alpha.args or alpha.args[0] not in ("no", "off", "false")
        omega = block.find("omega")
        if omega is not None and block.name == "virtual_server":
            pass  # reported with the virtual server
        inhibit = self.take(block, "inhibit_on_failure")
        if inhibit is not None:
            d["inhibit"] = not inhibit.args or inhibit.args[0] not in ("no", "off", "false")
        host = self.text(block, "virtualhost")
        if host is not None:
            d["virtualhost"] = host
        return d

    def _real(self, rs: Node, inherited: dict[str, Any]) -> dict[str, Any] | None:
        self.use(rs)
        addr = _address(rs.args[0]) if rs.args else None
        port = _port(rs.args[1]) if len(rs.args) > 1 else 0
        if addr is None or port is None or len(rs.args) > 2:
            self.error(rs, f"invalid real_server '{' '.join(rs.args)}'")
            self._mark_all(rs)
            return None
        real: dict[str, Any] = {"address": addr}
        if port:
            real["port"] = port
        w = self.setting(rs, "weight", 0, 65535)
        real["weight"] = int(w) if w is not None else 1
        method = self._method(rs, self.take(rs, "lvs_method"))
        if method:
            real.update(method)
        for ka, ours in (("uthreshold", "upper_threshold"), ("lthreshold", "lower_threshold")):
            v = self.setting(rs, ka, 0, 0xFFFFFFFF)
            if v is not None:
                real[ours] = int(v)
        defaults = self._check_defaults(rs, inherited)
        checkers = [c for c in rs.children or [] if c.name in CHECKERS]
        checks = []
        for c in checkers:
            self.use(c)
            check = self._checker(c, defaults)
            if check is not None:
                checks.append((c, check))
        if checks:
            real["health_check"] = checks[0][1]
            for c, _ in checks[1:]:
                self.report(
                    c,
                    "unmapped",
                    f"{c.name}: a second checker on one real (keepalived wants every "
                    "checker up; ipvsmgr runs one check per real: the first is kept)",
                )
        for kind in ("notify_up", "notify_down"):
            argv = self._command(rs, kind)
            if argv:
                real[kind] = argv
        return real

    def _checker(self, c: Node, inherited: dict[str, Any]) -> dict[str, Any] | None:
        d = self._check_defaults(c, inherited)
        kind = c.name
        check: dict[str, Any] = {"type": CHECKERS[kind]}
        default_retry = {"DNS_CHECK": 3, "MISC_CHECK": 0}.get(kind, 1)
        delay_loop = d.get("delay_loop", 60.0)
        default_delay = {"HTTP_GET": 3.0, "SSL_GET": 3.0, "DNS_CHECK": delay_loop}.get(kind, 1.0)
        retry = int(d.get("retry", default_retry))
        timeout = d.get("connect_timeout", 5.0)
        if timeout > delay_loop:
            self.report(
                c,
                "note",
                f"connect_timeout {timeout:g}s is longer than delay_loop {delay_loop:g}s: ipvsmgr's timeout "
                "cannot outlast its interval, written as the interval",
            )
            timeout = delay_loop
        check["interval"] = format_duration(delay_loop)
        check["timeout"] = format_duration(timeout)
        check["rise"] = 1
        check["fall"] = 1
        if retry:
            check["retries"] = retry
            check["retry_delay"] = format_duration(d.get("delay_before_retry", default_delay))
        check["start"] = "down" if d.get("alpha") else "up"
        check["on_failure"] = "inhibit" if d.get("inhibit") else "remove"
        ip = self.text(c, "connect_ip")
        if ip is not None:
            if _address(ip) is None:
                self.error(c, f"invalid connect_ip '{ip}'")
            check["address"] = ip
        port = self.setting(c, "connect_port", 1, 65535)
        if port is not None:
            check["port"] = int(port)
        src = self.text(c, "bindto")
        if src is not None:
            check["source"] = src
        for name in ("bind_port", "bind_if", "fwmark"):
            for n in c.all(name):
                n.used = True
                self.report(n, "unmapped", f"{name} on a checker: ipvsmgr binds checks to an address only")
        if kind in ("HTTP_GET", "SSL_GET"):
            self._http(c, d, check)
        elif kind == "SMTP_CHECK":
            helo = self.text(c, "helo_name")
            check["smtp"] = {"helo": helo} if helo else {}
            also = []
            for i, h in enumerate(c.all("host")):  # keepalived wants every host to answer
                h.used = True
                self._mark_all(h)
                where = {k: v for k, v in _host(h).items() if v is not None}
                if i == 0:
                    check.update(where)
                elif "address" in where:
                    also.append(where)
                else:
                    self.report(h, "note", "a host block without connect_ip checks the real again: dropped")
            if also:
                check["smtp"]["also"] = also
            if not check["smtp"]:
                del check["smtp"]
        elif kind == "DNS_CHECK":
            dns = {"name": self.text(c, "name") or ".", "qtype": (self.text(c, "type") or "SOA").upper()}
            check["dns"] = dns
        elif kind == "UDP_CHECK":
            self._udp(c, check)
        elif kind == "MISC_CHECK":
            path = self.text(c, "misc_path")
            if not path:
                self.error(c, "MISC_CHECK needs misc_path")
                return None
            try:
                argv = shlex.split(path)
            except ValueError as e:
                self.error(c, f"misc_path: {e}")
                return None
            script: dict[str, Any] = {"argv": argv}
            user = self.text(c, "user") or self.defaults.get("script_user")
            if user:
                script["user"] = user.split()[0]
            elif not self._default_script_user():
                self.error(c, f"Unable to set default user {DEFAULT_SCRIPT_USER} for MISC_CHECK")
                return None
            mt = self.setting(c, "misc_timeout", 0, 86400)
            if mt:
                check["timeout"] = format_duration(mt)
            dyn = self.take(c, "misc_dynamic")
            if dyn is None:
                self.report(
                    c,
                    "note",
                    "MISC_CHECK without misc_dynamic: ipvsmgr reads exit codes 2-255 as up "
                    "with weight code-2 (keepalived: down); exit 0 and 1 mean the same",
                )
            check["script"] = script
        elif kind == "FILE_CHECK":
            return self._file_check(c, check)
        elif kind == "BFD_CHECK":
            self._mark_all(c)
            self.report(c, "unmapped", "BFD_CHECK: ipvsmgr has no BFD (use a tcp or icmp check)")
            return None
        return check

    def _file_check(self, c: Node, check: dict[str, Any]) -> dict[str, Any] | None:
        """FILE_CHECK { track_file NAME; weight W [reverse]; dynamic }. With weight 0 the file's
        number is the verdict (0 up, else down; reverse: the other way round): ipvsmgr's file
        check. keepalived reads the file when it changes (inotify), without retries: polled
        every second here. A non-zero weight only moves the real's weight (dynamic)."""
        self._mark_all(c)
        tf = c.find("track_file")
        f = self.track_files.get(tf.args[0]) if tf is not None and tf.args else None
        if f is None:
            self.error(tf or c, "FILE_CHECK needs the name of a track_file defined at the top level")
            return None
        self.use(f)
        path = self.text(f, "file")
        if path is None:
            self.error(f, "track_file needs a file")
            return None
        init = self.take(f, "init_file")
        if init is not None:
            self.report(
                init, "note", "init_file: create the file before starting ipvsmgr (a missing file is 0)"
            )
        weight, reverse = self._file_weight(c.find("weight") or f.find("weight"))
        self._mark_all(f)
        if c.find("dynamic") is not None and weight:
            self.report(c, "unmapped", "FILE_CHECK dynamic: " + UNMAPPED["FILE_CHECK"])
            return None
        if weight:
            self.report(
                c, "note",
                f"FILE_CHECK weight {weight} without dynamic: the file never takes the real down in "
                "keepalived: no check written",
            )  # fmt: skip
            return None
        if reverse:
            self.report(
                c, "note",
                "FILE_CHECK weight 0 reverse: keepalived 2.2.7 starts the real by the plain rule (a "
                "non-zero file down) and applies reverse once the file changes; ipvsmgr from the start",
            )  # fmt: skip
        out = {k: check[k] for k in ("type", "start", "on_failure") if k in check}
        out.update(interval="1s", timeout="1s", rise=1, fall=1)
        out["file"] = {"path": path, **({"reverse": True} if reverse else {})}
        return out

    def _file_weight(self, n: Node | None) -> tuple[int, bool]:
        """(weight, reverse) of a `weight W [reverse]` line; keepalived's default weight is 1."""
        if n is None or not n.args:
            return 1, False
        try:
            return int(n.args[0]), "reverse" in n.args[1:]
        except ValueError:
            self.error(n, f"invalid weight '{n.args[0]}'")
            return 1, False

    def _http(self, c: Node, d: dict[str, Any], check: dict[str, Any]) -> None:
        http: dict[str, Any] = {}
        urls = c.all("url")
        if not urls:
            self.error(c, f"{c.name} needs a url block")
        sni = self.take(c, "enable_sni")
        for n in c.all("fast_recovery"):
            n.used = True
            self.report(
                n, "note", "fast_recovery: ipvsmgr's rise 1 already brings a real back after one pass"
            )
        for i, url in enumerate(urls):
            url.used = True
            if i > 0:
                self._mark_all(url)
                self.report(
                    url,
                    "unmapped",
                    "a second url: keepalived wants every url to pass; ipvsmgr checks " "one url per real",
                )
                continue
            path = self.text(url, "path")
            http["path"] = path or "/"
            host = self.text(url, "virtualhost") or d.get("virtualhost")
            if host:
                http["host"] = host
            codes = self.take(url, "status_code")
            http["status"] = self._status(codes) if codes is not None else ["200-299"]
            digest = self.text(url, "digest")
            if digest is not None:
                if not re.fullmatch(r"[0-9a-fA-F]{32}", digest):
                    self.error(url, f"digest '{digest}' is not an MD5 hex digest")
                else:
                    http["body_md5"] = digest.lower()
            regex = self.text(url, "regex")
            if regex is not None:
                http["body_regex"] = regex
            for name in (
                "regex_no_match",
                "regex_options",
                "regex_min_offset",
                "regex_max_offset",
                "regex_stack",
            ):
                for n in url.all(name):
                    n.used = True
                    self.report(
                        n, "unmapped", f"{name}: ipvsmgr's body_regex is a Python regex that must match"
                    )
        if c.name == "SSL_GET":
            check["type"] = "https"
            http["verify"] = False
            self.report(
                c,
                "note",
                "SSL_GET does not verify the real's certificate: written as verify: false; "
                "ipvsmgr verifies by default",
            )
            if sni is not None:
                http["sni"] = http.get("host") or "localhost"
        check["http"] = http

    def _status(self, node: Node) -> list[Any]:
        out: list[Any] = []
        for word in node.args:
            m = re.fullmatch(r"(\d{3})(?:-(\d{3}))?", word)
            if (
                not m
                or not 100 <= int(m.group(1)) <= 599
                or (m.group(2) and int(m.group(2)) < int(m.group(1)))
            ):
                self.error(node, f"Invalid HTTP_GET status code '{word}'")
                continue
            out.append(int(m.group(1)) if not m.group(2) else word)
        return out or ["200-299"]

    def _udp(self, c: Node, check: dict[str, Any]) -> None:
        udp: dict[str, Any] = {}
        payload = self.text(c, "payload")
        if payload is not None:
            hexed = payload.replace(" ", "")
            if not re.fullmatch(r"(?:[0-9a-fA-F]{2})+", hexed):
                self.error(c, f"UDP_CHECK payload '{payload}' is not hex")
            else:
                udp["payload_hex"] = hexed.lower()
        req = self.take(c, "require_reply")
        if req is not None:
            udp["require_reply"] = True
            if req.args:
                udp["expect_hex"] = "".join(req.args).lower()
        for name in ("min_reply_length", "max_reply_length"):
            for n in c.all(name):
                n.used = True
                self.report(n, "unmapped", f"{name}: ipvsmgr matches the reply's bytes, not its length")
        if udp:
            check["udp"] = udp

    # ------------------------------------------------------------- VRRP

    def _instance(self, n: Node) -> dict[str, Any] | None:
        self.use(n)
        name = n.args[0] if n.args else ""
        out: dict[str, Any] = {"#": f"from {n.pos}: vrrp_instance {name}", "name": name}
        iface = self.text(n, "interface")
        if iface is None:
            self.error(n, f"({name}) Unknown interface!")
        else:
            out["interface"] = iface
        vrid = self.setting(n, "virtual_router_id", 1, 255)
        if vrid is None and n.find("virtual_router_id") is None:
            self.error(n, f"({name}) the virtual router id must be set")
        if vrid is not None:
            out["vrid"] = int(vrid)
        prio = self.setting(n, "priority", 1, 255)
        priority = int(prio) if prio is not None else 100
        version = self.setting(n, "version", 2, 3)
        ver = int(version) if version is not None else self.defaults["vrrp_version"]
        out["version"] = ver
        adv = self.setting(n, "advert_int", 0.01, 255, integer=False)
        if adv is not None:
            out["advert_interval"] = format_duration(adv)
        state = self.take(n, "state")
        if state is not None:
            if not state.args or state.args[0] not in ("MASTER", "BACKUP"):
                self.error(state, f"unknown state '{' '.join(state.args)}'")
            elif state.args[0] == "MASTER" and priority != 255:
                self.report(
                    state,
                    "note",
                    "state MASTER: ipvsmgr starts every instance as BACKUP and takes "
                    "over after the master-down interval if no better master is heard",
                )
        if self.take(n, "nopreempt") is not None:
            out["preempt"] = False
        self.take(n, "preempt")
        delay = self.setting(n, "preempt_delay", 0, 1000, integer=False)
        if delay:
            out["preempt_delay"] = format_duration(delay)
        vips = self._vips(n, iface)
        if vips:
            out["virtual_addresses"] = vips
        elif n.find("virtual_ipaddress") is None:
            self.error(n, f"({name}) No VIP specified; at least one is sensible")
        peers_node = self.take(n, "unicast_peer")
        if peers_node is not None:
            peers = []
            for line in peers_node.children or []:
                line.used = True
                if _address(line.name) is None:
                    self.error(line, f"invalid unicast peer '{line.name}'")
                else:
                    peers.append(_address(line.name))
                if line.args:
                    self.report(line, "note", f"unicast peer options {' '.join(line.args)}: not carried over")
            if peers:
                out["unicast_peers"] = peers
        src = self.text(n, "unicast_src_ip") or self.text(n, "mcast_src_ip")
        if src is not None:
            out["source_address"] = src
        vmac = self.take(n, "use_vmac")
        if vmac is not None:
            out["virtual_mac"] = True
            # keepalived names an unnamed VMAC vrrp.VRID whatever the family (ipvsmgr: vrrp4/vrrp6.VRID)
            name = vmac.args[0] if vmac.args else f"vrrp.{out.get('vrid')}"
            if name in self.vmac_names:
                self.report(vmac, "note", f"VMAC {name} is taken by another instance: ipvsmgr's default name")
            else:
                self.vmac_names.add(name)
                out["virtual_mac_interface"] = name
        garp = self._garp(n)
        if garp:
            out["garp"] = garp
        auth = self.take(n, "authentication")
        kind_ah = False
        if auth is not None:
            self._mark_all(auth)
            t = auth.find("auth_type")
            kind = t.args[0] if t is not None and t.args else ""
            if kind not in ("PASS", "AH"):
                self.error(auth, f"unknown auth_type '{kind}'")
            elif ver == 3:
                self.error(auth, f"({name}) VRRP version 3 does not support authentication")
            elif kind == "AH":
                kind_ah = True
                self.report(auth, "unmapped", f"authentication AH: {UNMAPPED['authentication']}")
            else:
                pw = auth.find("auth_pass")
                password = " ".join(pw.args) if pw is not None else ""
                if pw is None or not password:
                    self.error(auth, f"({name}) auth_type PASS needs an auth_pass")
                elif len(password.encode()) > 8:
                    self.error(pw, "Truncating auth_pass to 8 characters (keepalived -t refuses this)")
                else:
                    out["authentication"] = {"type": "pass", "password": password}
                    self.report(
                        auth,
                        "note",
                        "authentication PASS: carried over for keepalived peers; the "
                        "password is in clear in every advert and protects nothing",
                    )
        base, track = self._tracking(n, priority)
        out["priority"] = base
        if track:
            out["track"] = track
        self._notify(n, out)
        if self.take(n, "accept") is not None:
            pass  # ipvsmgr always accepts
        for x in n.all("lvs_sync_daemon_interface"):
            x.used = True
            self.error(
                x,
                f"({name}) Specifying lvs_sync_daemon_interface against a vrrp is deprecated. "
                "Please use global lvs_sync_daemon",
            )
        if kind_ah and state is not None and state.args[:1] == ["MASTER"]:
            self.error(state, f"({name}) Initial state master is incompatible with AH authentication")
        order = ["#", "name", "interface", "vrid", "priority", "version", "advert_interval", "preempt",
                 "preempt_delay", "virtual_addresses", "unicast_peers", "source_address", "virtual_mac",
                 "virtual_mac_interface", "authentication", "garp", "track", "notify_keepalived",
                 "notify_master", "notify_backup", "notify_fault", "notify_stop"]  # fmt: skip
        return {k: out[k] for k in order if k in out}

    def _vips(self, n: Node, iface: str | None) -> list[str | dict[str, str]]:
        block = self.take(n, "virtual_ipaddress")
        out: list[str | dict[str, str]] = []
        if block is None:
            return out
        family = None
        for line in block.children or []:
            line.used = True
            try:
                vip = ipaddress.ip_interface(line.name)
            except ValueError:
                self.error(line, f"VRRP parsed invalid IP {line.name}. skipping IP...")
                continue
            if family is None:
                family = vip.version
            elif vip.version != family:
                self.report(
                    line,
                    "unmapped",
                    f"{vip}: an IPv{vip.version} VIP in an IPv{family} instance "
                    "(keepalived adds it unadvertised; ipvsmgr wants one family per instance)",
                )
                continue
            opts = line.args
            extra: dict[str, str] = {}
            i = 0
            while i < len(opts):
                word = opts[i]
                value = opts[i + 1] if i + 1 < len(opts) else None
                if word == "dev" and value is not None:
                    if iface is not None and value != iface:
                        self.report(
                            line,
                            "unmapped",
                            f"{vip} dev {value}: ipvsmgr adds VIPs on the instance's " f"interface ({iface})",
                        )
                    i += 2
                elif word == "label" and value is not None and vip.version == 4:
                    extra["label"] = value
                    i += 2
                elif word == "scope" and value in ("global", "site", "link", "host", "nowhere"):
                    extra["scope"] = value
                    i += 2
                elif word in ("label", "scope", "brd", "broadcast", "preferred_lft") and value is not None:
                    self.report(line, "note", f"{word} {value}: not carried over")
                    i += 2
                elif word == "no_track":
                    self.report(line, "note", "no_track: ipvsmgr puts a missing VIP back rather than fail")
                    i += 1
                else:
                    self.report(line, "unmapped", f"VIP option '{word}' has no equivalent")
                    i += 1
            text = str(vip) if "/" in line.name else str(vip.ip)
            entry: str | dict[str, str] = {"address": text, **extra} if extra else text
            if entry in out:  # ipvsmgr refuses a repeated entry as a slip; keepalived counts it
                self.report(
                    line, "unmapped",
                    f"{text} is listed twice: keepalived advertises it twice, ipvsmgr once, and keepalived "
                    "drops adverts whose address count differs from its own: remove the repeat on both sides",
                )  # fmt: skip
                continue
            if any((x["address"] if isinstance(x, dict) else x) == text for x in out):
                # a second entry with a label: keepalived sends the address twice, and so will ipvsmgr
                self.report(
                    line, "note", f"{text} is listed twice: kept twice, as keepalived's adverts have it"
                )
            out.append(entry)
        return out

    def _garp(self, n: Node) -> dict[str, Any]:
        g: dict[str, Any] = {}
        repeat = self.setting(n, "garp_master_repeat", 0, 100)
        repeat = repeat if repeat is not None else self.defaults.get("garp_master_repeat")
        if repeat is not None:
            g["count"] = int(repeat)
        interval = self.setting(n, "garp_interval", 0, 60, integer=False)
        interval = interval if interval is not None else self.defaults.get("garp_interval")
        if interval:
            g["interval"] = format_duration(interval)
        refresh = self.setting(n, "garp_master_refresh", 0, 86400, integer=False)
        refresh = refresh if refresh is not None else self.defaults.get("garp_master_refresh")
        if refresh:
            g["refresh"] = format_duration(refresh)
        delay = self.take(n, "garp_master_delay")
        if delay is not None:
            self.report(delay, "note", "garp_master_delay: ipvsmgr sends its second burst with the refresh")
        for name in ("garp_master_refresh_repeat", "garp_lower_prio_delay", "garp_lower_prio_repeat"):
            for x in n.all(name):
                x.used = True
                self.report(x, "note", f"{name}: not carried over (one burst per transition and refresh)")
        return g

    def _tracking(self, n: Node, priority: int) -> tuple[int, dict[str, Any]]:
        """track_interface / track_script / track_file, with keepalived's weights made ipvsmgr's.

        keepalived adds a positive weight while the object is fine and a negative one
        while it is not; ipvsmgr adds its weight while the object is bad. A positive W
        is written as base priority + W and weight -W: the same priority either way."""
        track: dict[str, Any] = {}
        base = priority
        raise_by = 0

        def weight_of(line: Node, default: int) -> int | None:
            args = line.args
            w = default
            if "weight" in args:
                i = args.index("weight")
                try:
                    w = int(args[i + 1])
                except (IndexError, ValueError):
                    self.error(line, "weight needs an integer")
                    return None
                if "reverse" in args[i + 2 :]:
                    self.report(line, "unmapped", "reverse: ipvsmgr's weights apply while the object is bad")
                    return None
            return w

        def ours(w: int) -> int:
            nonlocal raise_by
            if w > 0:
                raise_by += w
                return -w
            return w

        block = self.take(n, "track_interface")
        if block is not None:
            items = []
            for line in block.children or []:
                line.used = True
                w = weight_of(line, 0)
                if w is None:
                    continue
                entry: dict[str, Any] = {"name": line.name}
                if w:
                    entry["weight"] = ours(w)
                items.append(entry)
            if items:
                track["interfaces"] = items
        block = self.take(n, "track_script")
        if block is not None:
            items = []
            for line in block.children or []:
                line.used = True
                if line.name not in self.scripts:
                    self.error(line, f"vrrp_script {line.name} is not defined")
                    continue
                self.tracked_scripts.add(line.name)
                converted = self.converted_scripts.get(line.name)
                script = dict(converted) if converted is not None else None
                if script is None:
                    self.error(line, f"track script {line.name} not found (refused above)")
                    continue
                default = script.pop("_weight", 0)
                if default is None:
                    continue  # a reverse weight: listed as unmapped with the script
                w = weight_of(line, default)
                if w is None:
                    continue
                if w:
                    script["weight"] = ours(w)
                if w > 0:  # keepalived adds nothing before the first run: failing, here, until then
                    script["start"] = "down"
                items.append(script)
            if items:
                track["scripts"] = items
        block = self.take(n, "track_file")
        if block is not None:
            items = []
            for line in block.children or []:
                line.used = True
                f = self.track_files.get(line.name)
                if f is None:
                    self.error(line, f"track_file {line.name} is not defined")
                    continue
                self.use(f)
                path = self.text(f, "file")
                fw = self.setting(f, "weight", -2147483647, 2147483647)
                w = weight_of(line, int(fw) if fw is not None else 1)
                init = self.take(f, "init_file")
                if init is not None:
                    self.report(init, "note", "init_file: create the file before starting ipvsmgr")
                if path is None or w is None:
                    if path is None:
                        self.error(f, "track_file needs a file")
                    continue
                items.append({"path": path, "weight": w})  # value x weight added in both; 0: FAULT
            if items:
                track["files"] = items
        if raise_by:
            base = priority + raise_by
            if priority == 255:
                self.report(n, "note", "the address owner (255) ignores tracking weights, in both")
                base = 255
            elif base > 254:
                self.report(
                    n,
                    "note",
                    f"priority {priority} with positive weights {raise_by}: keepalived caps "
                    f"the effective priority at 254; written as 254 (lower in ipvsmgr while bad)",
                )
                base = 254
        return base, track

    def _script(self, s: Node) -> dict[str, Any] | None:
        self.use(s)
        text = self.text(s, "script")
        if not text:
            self._mark_all(s)
            self.error(s.end or s, f"No script set for vrrp_script {s.args[0]}")
            return None
        try:
            argv = shlex.split(text)
        except ValueError as e:
            self.error(s, f"script: {e}")
            return None
        out: dict[str, Any] = {"argv": argv}
        interval = self.setting(s, "interval", 0.000001, 86400 * 365, integer=False)
        interval = interval if interval is not None else 1.0
        out["interval"] = format_duration(interval)
        timeout = self.setting(s, "timeout", 0.000001, 86400, integer=False)
        out["timeout"] = format_duration(timeout if timeout is not None else interval)
        for key in ("rise", "fall"):
            v = self.setting(s, key, 1, 0xFFFFFFFF)
            if v is not None:
                out[key] = min(int(v), 100)
        user = self.text(s, "user") or self.defaults.get("script_user")
        if user:
            out["user"] = user.split()[0]
        elif not self._default_script_user():
            self._mark_all(s)
            self.error(
                s.end or s, f"Unable to set default user {DEFAULT_SCRIPT_USER} for vrrp script {s.args[0]}"
            )
            return None
        w = self.take(s, "weight")
        if w is not None:
            try:
                out["_weight"] = int(w.args[0])
            except (IndexError, ValueError):
                self.error(w, "weight needs an integer")
            if "reverse" in w.args:  # not carried over: the inverted sign would track the wrong way
                self.report(w, "unmapped", "reverse: ipvsmgr's weights apply while the script fails")
                out["_weight"] = None
        if self.take(s, "init_fail") is not None:
            out["start"] = "down"
        return out

    def _sync_group(self, n: Node) -> dict[str, Any] | None:
        self.use(n)
        name = n.args[0] if n.args else ""
        group = self.take(n, "group")
        if group is not None:
            lines = list(group.children or [])
        else:  # the older syntax: instance names straight in the block
            lines = [c for c in n.children or [] if not c.used and c.name in self.instances]
        members = []
        for line in lines:
            line.used = True
            for word in [line.name, *line.args]:
                if word not in self.instances:
                    self.error(line, f"({name}) vrrp_instance {word} is not defined")
                else:
                    members.append(word)
        if not members:
            self.error(n, f"sync group {name} has no member instances")
            return None
        out: dict[str, Any] = {"name": name, "instances": members}
        self._notify(n, out)  # keepalived runs them as the group as a whole changes state
        return out

    def _notify(self, n: Node, out: dict[str, Any]) -> None:
        """An instance's or a sync group's notify commands (notify is keepalived's: notify_keepalived)."""
        for kind_name in ("notify", "notify_master", "notify_backup", "notify_fault", "notify_stop"):
            argv = self._command(n, kind_name)
            if not argv:
                continue
            out["notify_keepalived" if kind_name == "notify" else kind_name] = argv
            if self.defaults.get("script_user", "root") != "root":
                last = n.all(kind_name)[-1]
                self.report(last, "note", f"{kind_name}: ipvsmgr runs notify commands as its own user")

    def _command(self, block: Node, kind: str) -> list[str] | None:
        """A command line (`quorum_up "/bin/up.sh web"`) as argv, split as a shell would."""
        node = self.take(block, kind)
        if node is None or not node.args:
            return None
        try:
            return shlex.split(" ".join(node.args))
        except ValueError as e:
            self.error(node, f"{kind}: {e}")
            return None


def _host(h: Node) -> dict[str, Any]:
    """An SMTP_CHECK host block's connect_ip, connect_port and bindto as ipvsmgr's names."""
    ip, port, src = h.find("connect_ip"), h.find("connect_port"), h.find("bindto")
    return {
        "address": ip.args[0] if ip is not None and ip.args else None,
        "port": int(port.args[0]) if port is not None and port.args and port.args[0].isdigit() else None,
        "source": src.args[0] if src is not None and src.args else None,
    }


DEFAULT_SCRIPT_USER = "keepalived_script"
SCRIPT_KEYWORDS = {
    "script", "misc_path", "notify", "notify_master", "notify_backup", "notify_fault", "notify_stop",
    "notify_deleted", "notify_up", "notify_down", "quorum_up", "quorum_down", "notify_master_rx_lower_pri",
}  # fmt: skip

CHECKERS = {
    "TCP_CHECK": "tcp",
    "HTTP_GET": "http",
    "SSL_GET": "https",
    "SMTP_CHECK": "smtp",
    "DNS_CHECK": "dns",
    "UDP_CHECK": "udp",
    "PING_CHECK": "icmp",
    "MISC_CHECK": "script",
    "FILE_CHECK": "file",
    "BFD_CHECK": "bfd",
}

UNMAPPED = {
    "alpha": "not yet carried over",
    "authentication": "ipvsmgr speaks no IPsec AH (RFC 3768 removed it); VRRPv2 PASS is supported",
    "FILE_CHECK": "ipvsmgr reads no weights from files for reals (weight 0, a verdict, is carried over)",
    "virtual_ipaddress_excluded": "ipvsmgr adds only advertised VIPs: list them in virtual_addresses",
    "virtual_routes": "ipvsmgr adds no routes with the VIPs",
    "virtual_rules": "ipvsmgr adds no policy rules with the VIPs",
    "static_ipaddress": "ipvsmgr adds no static addresses: use the system's network configuration",
    "static_routes": "ipvsmgr adds no static routes: use the system's network configuration",
    "static_rules": "ipvsmgr adds no static rules: use the system's network configuration",
    "track_process": "ipvsmgr does not track processes: use a track script (pidof NAME)",
    "vrrp_track_process": "ipvsmgr does not track processes: use a track script (pidof NAME)",
    "track_bfd": "ipvsmgr has no BFD",
    "bfd_instance": "ipvsmgr has no BFD",
    "dont_track_primary": "ipvsmgr always tracks the instance's own interface",
    "no_accept": "ipvsmgr always accepts packets to its VIPs",
    "strict_mode": "ipvsmgr adds no firewall rules",
    "garp_group": "not carried over",
    "net_namespace": "run ipvsmgr in the namespace instead (ip netns exec)",
}


def named_flag(scheduler: str, flag: str) -> str | None:
    """IPVS's generic flag-1/flag-2 under the names sh and mh give them."""
    if flag in ("flag-1", "flag-2") and scheduler in ("sh", "mh"):
        return f"{scheduler}-{'fallback' if flag == 'flag-1' else 'port'}"
    return flag if flag in ("sh-port", "sh-fallback", "mh-port", "mh-fallback") else None


def _address(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _port(text: str) -> int | None:
    return int(text) if text.isdigit() and 0 <= int(text) <= 65535 else None


def _address_range(text: str) -> list[str] | None:
    """keepalived's group ranges: 198.18.0.3-10 (last byte), 2001:db8::1-5 (last group, hex)."""
    if "-" not in text:
        a = _address(text)
        return [a] if a else None
    first, _, last = text.rpartition("-")
    start = _address(first)
    if start is None:
        return None
    ip = ipaddress.ip_address(start)
    try:
        end = int(last, 16) if ip.version == 6 else int(last)
    except ValueError:
        return None
    step = 0xFFFF if ip.version == 6 else 0xFF
    low = int(ip) & step
    if end < low or end > step:
        return None
    return [str(ipaddress.ip_address(int(ip) - low + k)) for k in range(low, end + 1)]


def _shared_check(reals: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The reals' check when they all have the same one: written once for the virtual server."""
    checks: list[dict[str, Any] | None] = [r.get("health_check") for r in reals]
    first = checks[0] if checks else None
    if first is not None and all(c == first for c in checks):
        return first
    return None


def convert(parsed: Parsed) -> tuple[dict[str, Any], list[Finding]]:
    conv = Converter(parsed)
    doc = conv.run()
    return doc, conv.findings
