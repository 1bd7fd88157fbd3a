"""Generate an N x M configuration and the equivalent `ipvsadm -R` rules."""

from __future__ import annotations


def vip(i: int) -> str:
    return f"198.18.{i >> 8}.{i & 255}"


def real(n: int) -> str:
    return f"198.19.{(n >> 8) & 255}.{n & 255}"


def real_port(n: int) -> int:
    return 8000 + (n >> 16)  # 65,536 distinct addresses per port


def config(services: int, reals: int, weight_of: dict[tuple[int, int], int] | None = None) -> str:
    weights = weight_of or {}
    out = ["virtual_servers:"]
    for i in range(services):
        out.append(f"  - name: vs{i}\n    address: {vip(i)}\n    port: 80\n    scheduler: wrr\n    reals:")
        for j in range(reals):
            n = i * reals + j
            w = weights.get((i, j), 1)
            out.append(f"      - {{address: {real(n)}, port: {real_port(n)}, weight: {w}}}")
    return "\n".join(out) + "\n"


def rules(services: int, reals: int) -> str:
    out = []
    for i in range(services):
        out.append(f"-A -t {vip(i)}:80 -s wrr")
        for j in range(reals):
            n = i * reals + j
            out.append(f"-a -t {vip(i)}:80 -r {real(n)}:{real_port(n)} -m -w 1")
    return "\n".join(out) + "\n"
