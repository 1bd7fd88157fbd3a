# make deb: the Debian package from the working tree (tracked and new files),
# built in build/deb/ with Debian's own Python: pybuild must not see pyenv's.
# make lintian: the package checked by lintian (errors and warnings fail).
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' ipvsmgr/__init__.py)
BUILD := build/deb
SRC := $(BUILD)/ipvsmgr-$(VERSION)
DEB := $(BUILD)/ipvsmgr_$(VERSION)_all.deb
DEBIAN_ENV := env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=$(HOME) LC_ALL=C.UTF-8

all: deb

FILES := $(wildcard $(shell git ls-files -co --exclude-standard))

# Always from scratch: a few seconds, and a removed file cannot linger.
deb:
	rm -rf $(BUILD)
	mkdir -p $(SRC)
	cp -P --parents -t $(SRC) $(FILES)
	cd $(SRC) && $(DEBIAN_ENV) dpkg-buildpackage -us -uc -b
	@echo built $(DEB)

lintian: deb
	$(DEBIAN_ENV) lintian --fail-on error,warning --display-info $(DEB)

clean:
	rm -rf build
	$(MAKE) -C bpf_offload clean

.PHONY: all deb lintian clean
