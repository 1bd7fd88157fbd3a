"""The daemon's parts, each a component behind one interface (base.Part).

One module per part: IPVS reconcile (ipvs.py), health checks (health.py),
VRRP (vrrp.py), BGP (bgp.py), the XDP guard (xdp.py), connection sync
(connsync.py), and the control socket and metrics listeners (listeners.py).
runtime.Daemon is the supervisor that starts, reloads and stops them in
order and moves state between them (docs/architecture.md).
"""
