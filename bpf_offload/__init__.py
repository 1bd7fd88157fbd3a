"""The XDP guard in front of IPVS: rate limits, allow/block lists, SYN challenge.

xdp_guard.c, guard.h: the program (built by the Makefile with clang; no binary is committed).
layout:  the byte layouts of guard.h's structs and the verdict reasons.
tables:  desired map contents and their diff against the maps (pure).
libbpf:  libbpf.so.1 through ctypes (symbols of libbpf 1.1 only).
guard:   load, attach, adopt a running program, sync maps, read counters.
"""
