# waguard — build, test, run, install.  `make` builds build/waguard.
VERSION   := 0.1.0
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
UNITDIR   ?= $(PREFIX)/lib/systemd/system
MANDIR    ?= $(PREFIX)/share/man
DOCDIR    ?= $(PREFIX)/share/doc/waguard
SYSCONFDIR ?= /etc
DESTDIR   ?=

CC        ?= cc
PKGS      := libevent libevent_openssl libcjson hiredis inih libsystemd openssl
PY        := /usr/bin/python3

# The user's CFLAGS are kept; ours come after so warnings stay errors.
WARN      := -Wall -Wextra -Werror -Wstrict-prototypes -Wmissing-prototypes -Wshadow
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -O2 -g $(WARN) -Iinclude -DWAGUARD_VERSION='"$(VERSION)"'
# SANITIZE=address,undefined builds an instrumented binary.
ifdef SANITIZE
BASE_CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
LDFLAGS += -fsanitize=$(SANITIZE)
endif

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

SRC       := $(wildcard src/*.c)
LUA       := $(filter-out src/lua/common.lua,$(wildcard src/lua/*.lua))
LIB_SRC   := $(filter-out src/main.c,$(SRC))
OBJ       := $(patsubst src/%.c,build/obj/%.o,$(SRC)) build/obj/lua.o
LIB_OBJ   := $(patsubst src/%.c,build/obj/%.o,$(LIB_SRC)) build/obj/lua.o
UNIT_SRC  := $(wildcard tests/unit/*.c)
UNIT_BIN  := $(patsubst tests/unit/%.c,build/unit/%,$(UNIT_SRC))

.PHONY: all deps test unit integration lint-openapi run bench install uninstall clean deb

all: build/waguard

build/obj/%.o: src/%.c $(wildcard include/*.h) | build/obj
	$(CC) $(BASE_CFLAGS) $(PKG_CFLAGS) $(CPPFLAGS) $(CFLAGS) -MMD -c -o $@ $<

# The Redis scripts live in src/lua/ as Lua; each is compiled in as a C string with
# src/lua/common.lua in front of it.
build/gen/lua.c: $(LUA) src/lua/common.lua | build/obj
	@mkdir -p build/gen
	@{ echo '/* generated from the scripts in src/lua by the Makefile: edit those */'; \
	  for f in $(LUA); do n=$$(basename $$f .lua); \
	    echo "const char store_lua_$$n[] ="; \
	    cat src/lua/common.lua $$f | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/    "/' -e 's/$$/\\n"/'; \
	    echo ';'; done; } > $@

build/obj/lua.o: build/gen/lua.c
	$(CC) $(BASE_CFLAGS) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

build/waguard: $(OBJ)
	$(CC) $(LDFLAGS) -o $@ $(OBJ) $(PKG_LIBS) -lm

build/obj build/unit:
	@mkdir -p $@

build/unit/%: tests/unit/%.c tests/unit/unit.h $(LIB_OBJ) | build/unit
	$(CC) $(BASE_CFLAGS) $(PKG_CFLAGS) $(CFLAGS) -o $@ $< $(LIB_OBJ) \
	    $(PKG_LIBS) $(shell pkg-config --cflags --libs check) -lm

# Install what a fresh Debian machine lacks, only when something is missing.
DEB_PKGS := build-essential pkg-config libevent-dev libcjson-dev libhiredis-dev libinih-dev \
            libsystemd-dev libssl-dev check redis-server redis-sentinel python3-pytest python3-requests \
            python3-redis wrk openssl curl prometheus nginx-light man-db groff-base \
            debhelper dpkg-dev lintian python3-jsonschema python3-yaml
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
deps:
	@if ! pkg-config --exists $(PKGS) check 2>/dev/null || ! command -v redis-server >/dev/null \
	    || ! command -v redis-sentinel >/dev/null \
	    || ! $(PY) -c 'import pytest, requests, redis, jsonschema, yaml' 2>/dev/null || ! command -v wrk >/dev/null \
	    || ! command -v promtool >/dev/null || ! { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; } \
	    || ! command -v dh >/dev/null || ! command -v dpkg-buildpackage >/dev/null || ! command -v lintian >/dev/null; then \
	  echo "make deps: installing Debian packages: $(DEB_PKGS)"; \
	  $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y $(DEB_PKGS); \
	fi
	@# Node for the OpenAPI linter; only when there is no npm (a nodejs from elsewhere, such as
	@# NodeSource's, carries its own npm and conflicts with Debian's npm package).
	@if ! command -v npm >/dev/null; then \
	  echo "make deps: installing Debian packages: nodejs npm"; \
	  $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y nodejs npm; \
	fi

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

integration: build/waguard
	$(PY) -m pytest -q tests

# docs/openapi.yaml, linted by Redocly's CLI (the version pinned in package-lock.json; rules in
# redocly.yaml).  npm ci runs again only when the lock file changes.
REDOCLY := node_modules/.bin/redocly
$(REDOCLY): package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts --prefer-offline
	@touch $@

lint-openapi: $(REDOCLY)
	REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true $(REDOCLY) lint

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory lint-openapi
	@$(MAKE) --no-print-directory integration

# A private Redis on a unix socket, the WABA simulator and waguard in the foreground.
run: deps
	@$(MAKE) --no-print-directory all
	@bash tests/run-dev.sh

bench: deps
	@$(MAKE) --no-print-directory all
	bash bench/run.sh

install: build/waguard
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(MANDIR)/man8 \
	    $(DESTDIR)$(SYSCONFDIR)/waguard $(DESTDIR)$(DOCDIR)
	install -m 0755 build/waguard $(DESTDIR)$(BINDIR)/waguard
	sed 's|/usr/bin/waguard|$(BINDIR)/waguard|g' systemd/waguard.service > $(DESTDIR)$(UNITDIR)/waguard.service
	install -m 0644 systemd/waguard.socket $(DESTDIR)$(UNITDIR)/waguard.socket
	chmod 0644 $(DESTDIR)$(UNITDIR)/waguard.service
	install -m 0644 man/waguard.8 $(DESTDIR)$(MANDIR)/man8/waguard.8
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/waguard/waguard.conf ]; then \
	  echo "keeping existing $(DESTDIR)$(SYSCONFDIR)/waguard/waguard.conf"; \
	else install -m 0644 deploy/waguard.conf $(DESTDIR)$(SYSCONFDIR)/waguard/waguard.conf; fi
	install -m 0644 deploy/waguard.conf deploy/redis-waguard.conf deploy/nginx-waguard.conf \
	    deploy/waguard.rules.yml deploy/grafana-waguard.json deploy/DEPLOYING.md README.md \
	    $(DESTDIR)$(DOCDIR)/

# The Debian package (debian/, debhelper): built with dpkg-buildpackage in a copy of
# the tree under build/deb/, so neither the working tree nor its build/ are touched;
# the .deb is copied to build/waguard_$(VERSION)_<arch>.deb.
DEB_STAGE := build/deb/waguard-$(VERSION)
deb: deps
	rm -rf build/deb build/waguard_*.deb
	mkdir -p $(DEB_STAGE)
	tar -c --exclude-vcs --exclude=./build --exclude=./.run --exclude=__pycache__ \
	    --exclude=.pytest_cache --exclude=./debian/waguard --exclude=./debian/.debhelper . \
	    | tar -x -C $(DEB_STAGE)
	cd $(DEB_STAGE) && dpkg-buildpackage -us -uc -b
	cp build/deb/waguard_$(VERSION)_*.deb build/
	@ls build/waguard_$(VERSION)_*.deb

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/waguard $(DESTDIR)$(UNITDIR)/waguard.service \
	    $(DESTDIR)$(UNITDIR)/waguard.socket $(DESTDIR)$(MANDIR)/man8/waguard.8
	rm -rf $(DESTDIR)$(DOCDIR)
	@echo "left $(DESTDIR)$(SYSCONFDIR)/waguard/waguard.conf in place (remove it by hand if unwanted)"

clean:
	rm -rf build .run

-include $(OBJ:.o=.d)
