"""XDP fast-path shield (C source, libbpf loader): filled by the XDP issue."""
