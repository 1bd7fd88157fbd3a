"""VRRP v2/v3 (RFC 3768, RFC 5798), interoperable with keepalived.

packet:   adverts on the wire, parsing and building (no sockets).
machine:  one virtual router's state machine, free of I/O.
instance: a configured instance and the receive rules that need it.
service:  the asyncio side: raw sockets, timers, VIPs, GARP/NA, tracking, sync groups.
netlink:  links, addresses and macvlans, and link-change events.
rtnetlink: the rtnetlink requests behind them (standard library).
child:    the VRRP process (`python -m vrrp.child`) that runs the service apart from the daemon.
remote:   the daemon's handle on that process, with the service's interface.
channel:  the framing between the two.
realtime: SCHED_RR for the VRRP process, bounded by RLIMIT_RTTIME.
"""
