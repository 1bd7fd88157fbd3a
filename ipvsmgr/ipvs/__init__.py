"""IPVS over generic netlink, spoken with the standard library.

constants: numbers from <linux/ip_vs.h> and <linux/genetlink.h>.
wire:      packing/unpacking of messages and attributes (no sockets).
model:     plain data classes (Service, Destination, ...) everyone else uses.
client:    the socket, batching, acks mapped back to requests, dumps.
"""
