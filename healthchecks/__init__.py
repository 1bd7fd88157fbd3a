"""Health checks of real servers: many checks on one asyncio loop, rise/fall hysteresis.

result:       what one check reports, and the checker interface.
checkers/:    tcp, http/https, tls, dns, udp, icmp, smtp, grpc, script.
connectprobe: TCP connect probes without a coroutine or timer per probe.
net:          socket plumbing shared by the datagram and line checkers.
hysteresis:   rise/fall for one real (sans-IO).
scheduler:    runs the checks, spreads them over the interval, reports changes.
"""
