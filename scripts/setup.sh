#!/usr/bin/env bash
# Install everything ipvsmgr's tests, benchmarks and demo need on a fresh
# Debian 12 machine (idempotent): system packages for the IPVS VM, and a
# virtualenv (.venv) with the runtime dependencies pinned to Debian 12's
# versions plus the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  qemu-system-x86   # the VM that has IPVS (the host kernel has none)
  linux-image-amd64 # Debian's kernel: ip_vs with every scheduler, ipip, gre
  ipvsadm           # the independent reader of kernel state
  busybox-static    # virtme-ng's initramfs
  keepalived        # the VRRP peer of the interop tests, and the health-check baseline
  frr               # zebra + vrrpd / bgpd: second VRRP implementation, second BGP router
  exabgp            # the BGP speaker ipvsmgr drives (Debian's 4.2; 5.x comes from PyPI for tests)
  bird2             # the BGP router of the ECMP tests
  iproute2 procps kmod
  clang libbpf-dev linux-libc-dev make  # the XDP object, built from source (bpf_offload/Makefile)
  bpftool           # the independent reader of the attached XDP program
  tcpdump           # the independent reader of adverts on the wire (the packaged unit's VRRP test)
  dnsmasq-base      # the DNS server of the discovery tests: records and TTLs they change
  etcd-server       # etcd 3.4: the discovery source and the fleet's store in the tests
  prometheus        # promtool: checks and unit-tests the shipped alert rules and the dashboard's queries
  prometheus-node-exporter  # its IPVS collector, the reference for ipvsmgr's node_ipvs_* series
  chromium-headless-shell   # Debian's headless Chromium: loads the status page in the VM tests
  nftables          # the SNAT router and stateful firewall between clients and the XDP guard (tests/netns/test_xdp_nat.py)
  # the Debian package (make deb), lintian, and the clean Debian 12/13 roots it is tested in
  debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools python3-typer python3-yaml
  lintian debootstrap
  systemd-container # systemd-nspawn: the packaged unit under a real systemd (PID 1 of a container) in the VM
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # Packages with services (keepalived, frr, exabgp, bird2) must not start them here: policy-rc.d says no.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/pip install -q -r requirements/runtime-debian12.txt -r requirements/dev.txt

