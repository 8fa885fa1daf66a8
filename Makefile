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
# SANITIZE=address,undefined builds an instrumented binary, by default in build/san so the
# plain and the sanitized builds live side by side (BUILD=DIR chooses the directory).
ifdef SANITIZE
BASE_CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
LDFLAGS += -fsanitize=$(SANITIZE)
BUILD     ?= build/san
endif
BUILD     ?= build

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

SRC       := $(wildcard src/*.c)
LUA       := $(filter-out src/lua/common.lua,$(wildcard src/lua/*.lua))
LIB_SRC   := $(filter-out src/main.c,$(SRC))
OBJ       := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(SRC)) $(BUILD)/obj/lua.o
LIB_OBJ   := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(LIB_SRC)) $(BUILD)/obj/lua.o
UNIT_SRC  := $(wildcard tests/unit/*.c)
UNIT_BIN  := $(patsubst tests/unit/%.c,$(BUILD)/unit/%,$(UNIT_SRC))

.PHONY: all deps test unit integration lint-openapi run bench install uninstall clean deb sanitize fuzz fuzz-build valgrind soak

all: $(BUILD)/waguard

$(BUILD)/obj/%.o: src/%.c $(wildcard include/*.h) | $(BUILD)/obj
	$(CC) $(BASE_CFLAGS) $(PKG_CFLAGS) $(CPPFLAGS) $(CFLAGS) -MMD -c -o $@ $<

# The Redis scripts live in src/lua/ as Lua; each is compiled in as a C string with
# src/lua/common.lua in front of it.
$(BUILD)/gen/lua.c: $(LUA) src/lua/common.lua | $(BUILD)/obj
	@mkdir -p $(BUILD)/gen
	@{ echo '/* generated from the scripts in src/lua by the Makefile: edit those */'; \
	  for f in $(LUA); do n=$$(basename $$f .lua); \
	    echo "const char store_lua_$$n[] ="; \
	    cat src/lua/common.lua $$f | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/    "/' -e 's/$$/\\n"/'; \
	    echo ';'; done; } > $@

$(BUILD)/obj/lua.o: $(BUILD)/gen/lua.c
	$(CC) $(BASE_CFLAGS) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/waguard: $(OBJ)
	$(CC) $(LDFLAGS) -o $@ $(OBJ) $(PKG_LIBS) -lm

$(BUILD)/obj $(BUILD)/unit:
	@mkdir -p $@

$(BUILD)/unit/%: tests/unit/%.c tests/unit/unit.h $(LIB_OBJ) | $(BUILD)/unit
	$(CC) $(BASE_CFLAGS) $(PKG_CFLAGS) $(CFLAGS) -o $@ $< $(LIB_OBJ) \
	    $(PKG_LIBS) $(shell pkg-config --cflags --libs check) -lm

# Install what a fresh Debian machine lacks, only when something is missing.
DEB_PKGS := build-essential pkg-config libevent-dev libcjson-dev libhiredis-dev libinih-dev \
            libsystemd-dev libssl-dev check redis-server redis-sentinel python3-pytest python3-requests \
            python3-redis wrk openssl curl prometheus nginx-light man-db groff-base \
            debhelper dpkg-dev lintian python3-jsonschema python3-yaml clang libclang-rt-14-dev valgrind
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
deps:
	@if ! pkg-config --exists $(PKGS) check 2>/dev/null || ! command -v redis-server >/dev/null \
	    || ! command -v redis-sentinel >/dev/null \
	    || ! $(PY) -c 'import pytest, requests, redis, jsonschema, yaml' 2>/dev/null || ! command -v wrk >/dev/null \
	    || ! command -v promtool >/dev/null || ! { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; } \
	    || ! command -v dh >/dev/null || ! command -v dpkg-buildpackage >/dev/null || ! command -v lintian >/dev/null \
	    || ! command -v valgrind >/dev/null || ! command -v clang >/dev/null \
	    || [ ! -e "$$(clang -print-file-name=libclang_rt.fuzzer-$$(uname -m).a)" ]; then \
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

integration: $(BUILD)/waguard
	WAGUARD_BIN=$(BUILD)/waguard $(PY) -m pytest -q tests

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
	@$(MAKE) --no-print-directory sanitize
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(TEST_FUZZ_SECONDS)

# ---- sanitizers, fuzzing, memcheck and the fault soak (README: "Fuzzing, sanitizers and
# the fault suite").  `make sanitize`: the unit tests and the whole integration suite again
# on an ASan+UBSan build in build/san, leak detection on; any report fails the run
# (tests/daemon.py reads the daemons' stderr at teardown).
SAN_ENV := ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0:detect_stack_use_after_return=1:strict_string_checks=1 \
           UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 LSAN_OPTIONS=print_suppressions=0
sanitize:
	@$(SAN_ENV) $(MAKE) --no-print-directory SANITIZE=address,undefined BUILD=build/san all unit integration

# `make fuzz`: every tests/fuzz/fuzz_*.c built with clang's libFuzzer (+ASan+UBSan) against
# src/*.c but main.c, in build/fuzz; each replays tests/fuzz/regressions/<target>/ and then
# runs FUZZ_SECONDS on a copy of tests/fuzz/corpus/<target>/ (tests/fuzz/run.sh).  In
# `make test`: 60 s each under CI=true, 10 s each otherwise.
FUZZ_SECONDS ?= 60
TEST_FUZZ_SECONDS := $(if $(filter true,$(CI)),60,10)
FUZZ_CC    ?= clang
FUZZ_SAN   := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -O1 -g $(filter-out -Werror,$(WARN)) -Iinclude -DWAGUARD_VERSION='"$(VERSION)"' $(FUZZ_SAN)
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN   := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(FUZZ_SRC))
FUZZ_OBJ   := $(patsubst src/%.c,build/fuzz/obj/%.o,$(LIB_SRC)) build/fuzz/obj/lua.o

build/fuzz/obj:
	@mkdir -p $@

build/fuzz/obj/%.o: src/%.c $(wildcard include/*.h) | build/fuzz/obj
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(PKG_CFLAGS) -c -o $@ $<

build/fuzz/obj/lua.o: $(BUILD)/gen/lua.c | build/fuzz/obj
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(wildcard tests/fuzz/*.h) $(FUZZ_OBJ)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $(PKG_CFLAGS) -o $@ $< $(FUZZ_OBJ) $(PKG_LIBS) -lm

.SECONDARY: $(FUZZ_OBJ)

fuzz-build: $(FUZZ_BIN)

fuzz: $(FUZZ_BIN)
	@bash tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_BIN)

# `make valgrind`: the integration suite (not the fault suite) with every daemon under
# memcheck; a memcheck error or a definite leak makes the daemon exit 99 and fails the test.
VALGRIND := valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
            --show-leak-kinds=definite --track-origins=yes --num-callers=30
valgrind: all
	WAGUARD_BIN=build/waguard WAGUARD_WRAPPER="$(VALGRIND)" \
	    $(PY) -m pytest -q -m 'not fault' tests

# `make soak`: the fault suite with FAULT_KILLS kill -9s (100 here, 20 in `make test`);
# `make soak SANITIZE=address,undefined` runs it on the sanitizer build.
FAULT_KILLS ?= 100
soak: all
	$(SAN_ENV) FAULT_KILLS=$(FAULT_KILLS) WAGUARD_BIN=$(BUILD)/waguard $(PY) -m pytest -q -s -m fault tests/test_fault.py

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
	# a plain build whatever this make was asked (make sanitize passes BUILD and SANITIZE down)
	cd $(DEB_STAGE) && env -u MAKEFLAGS -u MFLAGS -u MAKEOVERRIDES -u MAKELEVEL -u BUILD -u SANITIZE \
	    dpkg-buildpackage -us -uc -b
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
