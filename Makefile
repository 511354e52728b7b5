# Imperium build.  `make run` and `make check` are the two commands a new
# machine needs; both install missing Debian packages first.

CC      ?= cc
AR      ?= ar
PKGS    := libmicrohttpd jansson sqlite3 libpq libsodium openssl libcurl libcares libseccomp
# Container networking (docs/NETWORK.md): only imperium-node and the unit
# tests link them (NET_LIBS); their headers are in CFLAGS like the others.
NET_PKGS := libnftables libmnl
# Alarm delivery over XMPP (docs/ALARMS.md): imperium-node and the unit tests only.
NODE_PKGS := libstrophe
# Readiness for systemd (sd_notify, Type=notify units): the two daemons and
# the unit tests (which link the node's agent) only, not the CLI.
SD_PKGS := libsystemd

# The Debian package that ships each pkg-config module (scripts/packages.txt
# lists them all): named in the error when a module is missing.
PKG_DEBS := libmicrohttpd=libmicrohttpd-dev jansson=libjansson-dev sqlite3=libsqlite3-dev libpq=libpq-dev \
            libsodium=libsodium-dev openssl=libssl-dev libcurl=libcurl4-openssl-dev \
            libcares=libc-ares-dev libseccomp=libseccomp-dev cmocka=libcmocka-dev \
            libnftables=libnftables-dev libmnl=libmnl-dev libstrophe=libstrophe-dev \
            libsystemd=libsystemd-dev

# Goals that need no library: they install the packages (deps) or call
# `$(MAKE) all ...` after installing them, and that sub-make checks.
NO_PKG_GOALS := deps clean check run bench
# `make` alone builds everything (the library rules come before `all:`).
.DEFAULT_GOAL := all
ifneq ($(filter-out $(NO_PKG_GOALS),$(or $(MAKECMDGOALS),all)),)
NEEDED_PKGS := $(PKGS) $(NET_PKGS) $(NODE_PKGS) $(SD_PKGS) $(if $(filter unit check,$(MAKECMDGOALS)),cmocka)
ifeq ($(shell command -v pkg-config 2>/dev/null),)
$(error pkg-config is not installed: apt-get install pkg-config (or run `make deps` as root))
endif
MISSING_PKGS := $(shell for m in $(NEEDED_PKGS); do pkg-config --exists $$m || echo $$m; done)
MISSING_DEBS := $(strip $(foreach m,$(MISSING_PKGS),$(patsubst $(m)=%,%,$(filter $(m)=%,$(PKG_DEBS)))))
UNKNOWN_PKGS := $(strip $(foreach m,$(MISSING_PKGS),$(if $(filter $(m)=%,$(PKG_DEBS)),,$(m))))
ifneq ($(MISSING_PKGS),)
$(error missing pkg-config module(s): $(MISSING_PKGS)$(if $(MISSING_DEBS),; \
install the Debian package(s): apt-get install $(MISSING_DEBS) \
(or run `make deps` as root: it installs scripts/packages.txt))$(if $(UNKNOWN_PKGS),; \
no Debian package is known for $(UNKNOWN_PKGS): add it to PKG_DEBS and to scripts/packages.txt))
endif
endif

# Read once: pkg-config is not run again for every object.
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) $(NET_PKGS) $(NODE_PKGS) $(SD_PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
NET_LIBS   := $(shell pkg-config --libs $(NET_PKGS) 2>/dev/null)
NODE_LIBS  := $(shell pkg-config --libs $(NODE_PKGS) 2>/dev/null)
SD_LIBS    := $(shell pkg-config --libs $(SD_PKGS) 2>/dev/null)

# The environment's flags alone (a package build's hardening), for what
# uWSGI builds (the router's plugins) with its own warnings, not ours.
ENV_CFLAGS := $(if $(filter environment%,$(origin CFLAGS)),$(CFLAGS))
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wformat=2 -D_GNU_SOURCE \
           -fno-strict-aliasing $(PKG_CFLAGS)
LDLIBS  += $(PKG_LIBS) -lpthread
# Each object's header dependencies, written by the compiler beside it (.d).
DEPFLAGS := -MMD -MP

SAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
             -fno-sanitize-recover=undefined

B    := build
BA   := build/asan

COMMON_SRC := $(wildcard src/common/*.c)
API_SRC    := $(wildcard src/api/*.c)
CLI_SRC    := $(wildcard src/cli/*.c)
# The node runtime (docs/NODE.md), crun's libcrun being the model: the
# steps that make and enter a container, a library linked by imperium-node,
# imperium-init, imperium-enter and imperium-wall.
RUNTIME_SRC := $(wildcard src/runtime/*.c)
# imperium-init (the container's PID 1) is a program of its own.
INIT_SRC   := $(wildcard src/init/*.c)
# The node daemon and its debug CLI; imperium-acme-hook (the challenge hook
# uacme runs, docs/ROUTER.md "Automatic HTTPS") is a program of its own.
ACME_HOOK_SRC := src/node/acme_hook_main.c
LEGION_HOOK_SRC := src/node/legion_hook_main.c
NODE_SRC   := $(filter-out $(ACME_HOOK_SRC) $(LEGION_HOOK_SRC),$(wildcard src/node/*.c))
# ssh into containers: imperium-enter (the login shell), imperium-wall and
# the shells_broadcast() it runs; the NSS module is built on its own below.
SSH_SRC    := src/ssh/shells.c
UNIT_SRC   := $(wildcard tests/unit/test_*.c)

obj = $(patsubst %.c,$(1)/obj/%.o,$(2))
lib = $(1)/libimperium-$(2).a

# Static libraries, each in $(B) and $(BA): $(call library,NAME,SOURCES).
# A binary lists its own objects and then the libraries it uses, most
# dependent first (runtime before common); the linker takes from an
# archive only the objects that something needs.
define library
$(call lib,$(B),$(1)): $(call obj,$(B),$(2))
	@echo "  AR      $$@"
	@rm -f $$@ && $(AR) rcs $$@ $$^
$(call lib,$(BA),$(1)): $(call obj,$(BA),$(2))
	@echo "  AR-SAN  $$@"
	@rm -f $$@ && $(AR) rcs $$@ $$^
endef
$(eval $(call library,common,$(COMMON_SRC)))
$(eval $(call library,runtime,$(RUNTIME_SRC)))
$(eval $(call library,ssh,$(SSH_SRC)))
# The daemons minus their main(): what unit tests may link against.
$(eval $(call library,api,$(filter-out src/api/main.c,$(API_SRC))))
$(eval $(call library,node,$(filter-out src/node/main.c,$(NODE_SRC))))

COMMON_LIB  = $(call lib,$(1),common)
RUNTIME_LIB = $(call lib,$(1),runtime) $(call lib,$(1),common)

.PHONY: all asan deps run cluster check unit e2e e2e-pg clean bench circles

BINS := imperium-api imperium $(if $(NODE_SRC),imperium-node imperium-init imperium-acme-hook \
                                 imperium-legion-hook)

all: $(addprefix $(B)/,$(BINS))

asan: $(addprefix $(BA)/,$(BINS))

deps:
	@scripts/deps.sh

# An object without its .d (a build directory from before -MMD) is rebuilt
# once, so that its header dependencies are known from then on.
%.d: ;
.PRECIOUS: %.d

$(B)/obj/%.o: %.c $(B)/obj/%.d
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CPPFLAGS) $(CFLAGS) $(DEPFLAGS) -c $< -o $@

$(BA)/obj/%.o: %.c $(BA)/obj/%.d
	@mkdir -p $(dir $@)
	@echo "  CC-SAN  $<"
	@$(CC) $(CPPFLAGS) $(CFLAGS) $(SAN_FLAGS) $(DEPFLAGS) -c $< -o $@

ALL_SRC := $(wildcard src/*/*.c src/*/*/*.c tests/unit/*.c)
-include $(patsubst %.o,%.d,$(call obj,$(B),$(ALL_SRC)) $(call obj,$(BA),$(ALL_SRC)))

$(B)/imperium-api: $(call obj,$(B),$(API_SRC)) $(call COMMON_LIB,$(B))
	@echo "  LD      $@"
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(SD_LIBS) $(LDLIBS)

$(B)/imperium: $(call obj,$(B),$(CLI_SRC)) $(call COMMON_LIB,$(B))
	@echo "  LD      $@"
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/imperium-node: $(call obj,$(B),$(NODE_SRC)) $(call RUNTIME_LIB,$(B))
	@echo "  LD      $@"
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(NET_LIBS) $(NODE_LIBS) $(SD_LIBS) $(LDLIBS)

$(BA)/imperium-node: $(call obj,$(BA),$(NODE_SRC)) $(call RUNTIME_LIB,$(BA))
	@echo "  LD-SAN  $@"
	@$(CC) $(CFLAGS) $(SAN_FLAGS) $(LDFLAGS) -o $@ $^ $(NET_LIBS) $(NODE_LIBS) $(SD_LIBS) $(LDLIBS)

$(B)/imperium-acme-hook: $(call obj,$(B),$(ACME_HOOK_SRC)) $(call lib,$(B),node) $(call RUNTIME_LIB,$(B))
	@echo "  LD      $@"
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(NET_LIBS) $(NODE_LIBS) $(LDLIBS)

$(BA)/imperium-acme-hook: $(call obj,$(BA),$(ACME_HOOK_SRC)) $(call lib,$(BA),node) $(call RUNTIME_LIB,$(BA))
	@echo "  LD-SAN  $@"
	@$(CC) $(CFLAGS) $(SAN_FLAGS) $(LDFLAGS) -o $@ $^ $(NET_LIBS) $(NODE_LIBS) $(LDLIBS)

$(B)/imperium-legion-hook: $(call obj,$(B),$(LEGION_HOOK_SRC)) $(call lib,$(B),node) $(call RUNTIME_LIB,$(B))
	@echo "  LD      $@"
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(NET_LIBS) $(NODE_LIBS) $(LDLIBS)

$(BA)/imperium-legion-hook: $(call obj,$(BA),$(LEGION_HOOK_SRC)) $(call lib,$(BA),node) $(call RUNTIME_LIB,$(BA))
	@echo "  LD-SAN  $@"
	@$(CC) $(CFLAGS) $(SAN_FLAGS) $(LDFLAGS) -o $@ $^ $(NET_LIBS) $(NODE_LIBS) $(LDLIBS)

# imperium-init runs inside the container, whose distro need not have the
# node's libraries: it is linked statically, taking from the (non-sanitized)
# libraries only the objects it uses.  The sanitizers cannot be linked
# statically, so build/asan holds the same non-sanitized static binary.
INIT_LDLIBS := -static -lseccomp

$(B)/imperium-init: $(call obj,$(B),$(INIT_SRC)) $(call RUNTIME_LIB,$(B))
	@echo "  LD      $@"
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(INIT_LDLIBS)

$(BA)/imperium-init: $(call obj,$(B),$(INIT_SRC)) $(call RUNTIME_LIB,$(B))
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(INIT_LDLIBS)

$(BA)/imperium-api: $(call obj,$(BA),$(API_SRC)) $(call COMMON_LIB,$(BA))
	@echo "  LD-SAN  $@"
	@$(CC) $(CFLAGS) $(SAN_FLAGS) $(LDFLAGS) -o $@ $^ $(SD_LIBS) $(LDLIBS)

$(BA)/imperium: $(call obj,$(BA),$(CLI_SRC)) $(call COMMON_LIB,$(BA))
	@echo "  LD-SAN  $@"
	@$(CC) $(CFLAGS) $(SAN_FLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Unit tests (cmocka), built with the sanitizers, link the daemons' code
# and the node runtime as libraries.
UNIT_LIBS := $(call lib,$(BA),api) $(call lib,$(BA),node) $(call lib,$(BA),ssh) \
             $(call RUNTIME_LIB,$(BA))
UNIT_BINS := $(patsubst tests/unit/%.c,$(BA)/tests/%,$(UNIT_SRC))

$(UNIT_BINS): $(BA)/tests/%: $(BA)/obj/tests/unit/%.o $(UNIT_LIBS)
	@mkdir -p $(dir $@)
	@echo "  LD-SAN  $@"
	@$(CC) $(CFLAGS) $(SAN_FLAGS) $(LDFLAGS) -o $@ $^ $(NET_LIBS) $(NODE_LIBS) $(SD_LIBS) $(LDLIBS) -lcmocka

# Each suite under a time limit: a test that hangs fails instead of holding CI.
# test_db_pg needs a PostgreSQL database: IMPERIUM_TEST_PG_URL when set, else
# a throwaway cluster (scripts/pgtmp.sh) on PG_UNIT_PORT (default: a free
# port), removed afterwards; with no PostgreSQL server installed it skips.
PG_UNIT_PORT ?=
unit: export FREE_PORT_PY := import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])
unit: $(UNIT_BINS)
	@set -e; \
	if [ -z "$$IMPERIUM_TEST_PG_URL" ] && ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then \
	    dir=$$(mktemp -d /tmp/imperium-unit-pg-XXXXXX); \
	    trap "scripts/pgtmp.sh destroy $$dir >/dev/null" EXIT; \
	    port=$(PG_UNIT_PORT); \
	    [ -n "$$port" ] || port=$$(/usr/bin/python3 -c "$$FREE_PORT_PY"); \
	    scripts/pgtmp.sh start $$dir $$port >/dev/null; \
	    IMPERIUM_TEST_PG_URL=$$(scripts/pgtmp.sh createdb $$dir $$port unit); \
	    export IMPERIUM_TEST_PG_URL; \
	fi; \
	for t in $(UNIT_BINS); do echo "== $$t"; timeout 300 $$t; done

# No circle of files inside a folder of src/, and no folder using a layer it
# may not (the rules are LAYERS in the script): read from the objects'
# symbols with nm.  `scripts/circles.py $(B) --only api` checks one folder.
circles: all
	/usr/bin/python3 scripts/circles.py $(B)

# End-to-end tests start the sanitizer builds of the real binaries.
e2e: asan
	IMPERIUM_BIN=$(CURDIR)/$(BA) /usr/bin/python3 -m pytest -q tests/e2e

# The same API tests on PostgreSQL (issue 20): a throwaway cluster for the
# session (scripts/pgtmp.sh, through tests/e2e/pgutil.py), a database per API,
# plus the several-instances tests.  Only the modules whose subject is the API
# and its storage: the node's modules test the node, not the database
# (test_distro_build builds a rootfs; test_admin_cli's `make run` demo starts
# nodes, its other tests drive the API through the CLI).
E2E_PG_MODULES := $(addprefix tests/e2e/test_,$(addsuffix .py,alarms admin_cli client_compat \
    container_restarts containers conventions custom_distros database_url domains isolation \
    loopboxes metrics news node_channel node_reports portmappings public_differences \
    quickstart response_cache security_auth security_ids tags_me multi_instance)) \
    $(wildcard tests/e2e/test_db_copy.py)

e2e-pg: asan
	IMPERIUM_TEST_DB=postgresql IMPERIUM_BIN=$(CURDIR)/$(BA) /usr/bin/python3 -m pytest -q \
	    $(E2E_PG_MODULES) --deselect tests/e2e/test_admin_cli.py::test_run_sh_demo

# Issue 21: the Debian packages built from a copy of the tree, lintian, installed
# with apt on a debootstrapped bookworm root booted with systemd as its PID 1
# (systemd-nspawn, a network namespace of its own; deb.debian.org, before the
# boot, is the one address besides loopback): the API started by its postinst in
# its sandbox, a node configured as docs/INSTALL.md says running a container,
# systemd's restarts, the upgrade to 0.21.0-2, the node's removal, the purge
# (tests/e2e/test_packages.py; ~1.5 min on 2 cores with the cached root).
.PHONY: e2e-packages
e2e-packages: deps
	IMPERIUM_TEST_PACKAGES=1 /usr/bin/python3 -m pytest -q tests/e2e/test_packages.py

check: deps
	$(MAKE) all asan
	$(MAKE) circles
	$(MAKE) unit
	$(MAKE) e2e
	$(MAKE) e2e-pg
	$(MAKE) e2e-packages

# `make run DB=postgresql`: two APIs on one throwaway PostgreSQL (scripts/run.sh).
run: deps
	$(MAKE) all
	$(if $(DB),IMPERIUM_DB='$(DB)' )scripts/run.sh

# A Legion of three nodes in network namespaces of their own (root;
# docs/CLUSTER.md): a floating address, a cluster-domain app, the failover.
cluster: deps
	$(MAKE) all
	IMPERIUM_BIN_DIR=$(CURDIR)/$(B) scripts/cluster.sh

clean:
	rm -rf $(B)

# Benchmarks (docs/PERFORMANCE.md), never part of `make check`: timing must not
# decide CI.  `make bench ONLY=api,router QUICK=1`; B=build-x benches build-x/.
bench:
	@scripts/deps.sh
	@scripts/deps.sh bench/packages.txt
	$(MAKE) all
	/usr/bin/python3 bench/bench.py --bin $(B) $(if $(ONLY),--only $(ONLY)) \
	    $(if $(QUICK),--quick) $(if $(KEEP),--keep) $(if $(API_ARGS),--api-args "$(API_ARGS)")

# The node's router (docs/ROUTER.md): uWSGI's http and corerouter plugins
# from Debian's uwsgi-src, our patches (uwsgi/patches/, which only call into
# uwsgi/imperium_router.c) applied, built by `uwsgi --build-plugin` into
# $(B)/imperium_{http,corerouter}_plugin.so.  uWSGI loads them: never
# sanitized; the ASan node finds a copy beside itself.
UWSGI_PLUGINS_SRC := /usr/src/uwsgi/plugins
# `uwsgi --build-plugin` adds $$CFLAGS and $$LDFLAGS from the environment to
# its own: the environment's (a package build's hardening), never ours
# (-Werror -Wshadow would fail uWSGI's code; make exports CFLAGS with them
# when it came from the environment).
UWSGI_BUILD := env CFLAGS='$(strip $(CPPFLAGS) $(ENV_CFLAGS))' LDFLAGS='$(LDFLAGS)' \
               uwsgi --build-plugin
ROUTER_PLUGIN_DEPS := uwsgi/imperium_router.c uwsgi/imperium_router.h $(wildcard uwsgi/patches/*.patch)

all: $(B)/imperium_http_plugin.so

asan: $(BA)/imperium_http_plugin.so

$(B)/imperium_http_plugin.so $(B)/imperium_corerouter_plugin.so &: $(ROUTER_PLUGIN_DEPS)
	@test -d $(UWSGI_PLUGINS_SRC)/http || { echo "uWSGI's plugin sources are missing: apt-get install uwsgi-src (scripts/packages.txt)"; exit 1; }
	@echo "  UWSGI   $(B)/imperium_http_plugin.so $(B)/imperium_corerouter_plugin.so"
	@rm -rf $(B)/uwsgi-src && mkdir -p $(B)/uwsgi-src/plugins
	@cp -r $(UWSGI_PLUGINS_SRC)/http $(UWSGI_PLUGINS_SRC)/corerouter $(B)/uwsgi-src/plugins/
	@for p in uwsgi/patches/*.patch; do patch -s -p1 -d $(B)/uwsgi-src < $$p || exit 1; done
	@for d in http corerouter; do cp uwsgi/imperium_router.c uwsgi/imperium_router.h $(B)/uwsgi-src/plugins/$$d/; done
	@uwsgi --dot-h > $(B)/uwsgi-src/uwsgi.h
	@cd $(B)/uwsgi-src && for p in corerouter http; do \
	    $(UWSGI_BUILD) "plugins/$$p imperium_$$p" > build-$$p.log 2>&1 || \
	    { cat build-$$p.log; exit 1; }; \
	    ! grep -A3 'imperium_router.*warning' build-$$p.log || exit 1; done
	@cp $(B)/uwsgi-src/imperium_http_plugin.so $(B)/uwsgi-src/imperium_corerouter_plugin.so $(B)/

$(BA)/imperium_http_plugin.so $(BA)/imperium_corerouter_plugin.so &: $(B)/imperium_http_plugin.so $(B)/imperium_corerouter_plugin.so
	@mkdir -p $(BA)
	@cp $^ $(BA)/

# cluster-domain (docs/CLUSTER.md): uWSGI's fastrouter, unpatched, built the
# same way against our corerouter (REQUIRES emptied: uWSGI would load
# Debian's corerouter_plugin.so beside ours).
all: $(B)/imperium_fastrouter_plugin.so

asan: $(BA)/imperium_fastrouter_plugin.so

$(B)/imperium_fastrouter_plugin.so: $(B)/imperium_corerouter_plugin.so
	@test -d $(UWSGI_PLUGINS_SRC)/fastrouter || { echo "uWSGI's plugin sources are missing: apt-get install uwsgi-src (scripts/packages.txt)"; exit 1; }
	@echo "  UWSGI   $@"
	@rm -rf $(B)/uwsgi-fr-src && mkdir -p $(B)/uwsgi-fr-src/plugins
	@cp -r $(UWSGI_PLUGINS_SRC)/fastrouter $(UWSGI_PLUGINS_SRC)/corerouter $(B)/uwsgi-fr-src/plugins/
	@sed -i "s/^REQUIRES = .*/REQUIRES = []/" $(B)/uwsgi-fr-src/plugins/fastrouter/uwsgiplugin.py
	@uwsgi --dot-h > $(B)/uwsgi-fr-src/uwsgi.h
	@cd $(B)/uwsgi-fr-src && { $(UWSGI_BUILD) "plugins/fastrouter imperium_fastrouter" > build.log 2>&1 || { cat build.log; exit 1; }; }
	@cp $(B)/uwsgi-fr-src/imperium_fastrouter_plugin.so $@

$(BA)/imperium_fastrouter_plugin.so: $(B)/imperium_fastrouter_plugin.so
	@mkdir -p $(BA)
	@cp $< $@

# ssh into containers (docs/SSH.md): the NSS module and the login shell run
# inside sshd (a non-sanitized program; the shell is setuid root once
# installed), so they have no sanitizer build; imperium-wall has one.  Both
# programs link the node runtime library, not the daemon's files.
SSH_LDLIBS    := $(shell pkg-config --libs jansson libsodium libseccomp 2>/dev/null)

all: $(B)/libnss_imperium.so.2 $(B)/imperium-enter $(B)/imperium-wall

asan: $(BA)/imperium-wall

$(B)/libnss_imperium.so.2: src/ssh/nss_imperium.c $(B)/libnss_imperium.d
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) $(DEPFLAGS) -MF $(B)/libnss_imperium.d -MT $@ \
	    -fPIC -shared -fvisibility=hidden -Wl,-soname,libnss_imperium.so.2 \
	    -Wl,-z,defs -o $@ $<
-include $(B)/libnss_imperium.d

$(B)/imperium-enter: $(call obj,$(B),src/ssh/enter.c) $(call RUNTIME_LIB,$(B))
	@echo "  LD      $@"
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(SSH_LDLIBS)

$(B)/imperium-wall: $(call obj,$(B),src/ssh/wall.c) $(call lib,$(B),ssh) $(call RUNTIME_LIB,$(B))
	@echo "  LD      $@"
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(SSH_LDLIBS)

$(BA)/imperium-wall: $(call obj,$(BA),src/ssh/wall.c) $(call lib,$(BA),ssh) $(call RUNTIME_LIB,$(BA))
	@echo "  LD-SAN  $@"
	@$(CC) $(CFLAGS) $(SAN_FLAGS) $(LDFLAGS) -o $@ $^ $(SSH_LDLIBS)

# `make install` (issue 21; docs/INSTALL.md): the plain (non-sanitized)
# build into FHS paths under DESTDIR, the layout the Debian packages ship
# (debian/rules runs it with PREFIX=/usr).  It never creates users, chowns
# to one, or starts anything: the packages' maintainer scripts (or the
# supplier, INSTALL.md) do.  The daemons find their helpers in
# PREFIX/lib/imperium with no setting (fs_beside_self, src/common/fsutil.c).
# Configs and units are shipped with the /usr, /etc and /var paths; the sed
# below moves them to the prefixes given.  An existing config is never
# overwritten (a second `make install` keeps the supplier's edits).
DESTDIR       ?=
PREFIX        ?= /usr/local
SYSCONFDIR    ?= /etc
LOCALSTATEDIR ?= /var
UNITDIR       ?= /lib/systemd/system
MULTIARCH     ?= $(shell dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || $(CC) -print-multiarch)
INSTALL       ?= install

IMP_LIBDIR   := $(PREFIX)/lib/imperium
IMP_SHAREDIR := $(PREFIX)/share/imperium
IMP_ETCDIR   := $(SYSCONFDIR)/imperium
INSTALL_SED  := -e 's|/usr/sbin/imperium|$(PREFIX)/sbin/imperium|g' \
                -e 's|/usr/lib/imperium|$(IMP_LIBDIR)|g' \
                -e 's|/usr/share/imperium|$(IMP_SHAREDIR)|g' \
                -e 's|/etc/imperium|$(IMP_ETCDIR)|g' \
                -e 's|/var/lib/imperium|$(LOCALSTATEDIR)/lib/imperium|g'
# The node's sshd: its own host keys (made by the package's postinst or the
# supplier: INSTALL.md) and no pid file (/run/sshd.pid is the host sshd's).
SSHD_SED := -e 's|^\# HostKey lines: none means.*|\# Its own host keys, not the host sshd'"'"'s (made at install).\nHostKey $(IMP_ETCDIR)/ssh_host_ed25519_key\nHostKey $(IMP_ETCDIR)/ssh_host_ecdsa_key\nHostKey $(IMP_ETCDIR)/ssh_host_rsa_key\nPidFile none|'
UNITS := imperium-api.service imperium-node.service imperium-sshd.service
# name:mode of each shipped config.
CONFS := api.conf:0640 node.conf:0640 ssh.conf:0644 nsswitch.conf:0644

.PHONY: install

install: all
	@test -n "$(MULTIARCH)" || { echo "install: MULTIARCH is unknown (dpkg-architecture or gcc -print-multiarch)"; exit 1; }
	$(INSTALL) -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(IMP_LIBDIR) \
	    $(DESTDIR)$(PREFIX)/lib/$(MULTIARCH) $(DESTDIR)$(IMP_SHAREDIR) $(DESTDIR)$(UNITDIR)
	$(INSTALL) -m 0755 $(B)/imperium $(DESTDIR)$(PREFIX)/bin/imperium
	$(INSTALL) -m 0755 $(B)/imperium-api $(B)/imperium-node $(DESTDIR)$(PREFIX)/sbin/
	$(INSTALL) -m 0755 $(B)/imperium-init $(B)/imperium-acme-hook $(B)/imperium-legion-hook \
	    $(B)/imperium-wall $(DESTDIR)$(IMP_LIBDIR)/
	$(INSTALL) -m 4755 $(B)/imperium-enter $(DESTDIR)$(IMP_LIBDIR)/imperium-enter
	$(INSTALL) -m 0644 $(B)/imperium_http_plugin.so $(B)/imperium_corerouter_plugin.so \
	    $(B)/imperium_fastrouter_plugin.so $(DESTDIR)$(IMP_LIBDIR)/
	$(INSTALL) -m 0644 $(B)/libnss_imperium.so.2 $(DESTDIR)$(PREFIX)/lib/$(MULTIARCH)/
	$(INSTALL) -m 0644 etc/uwsgi/shortcuts.ini $(DESTDIR)$(IMP_SHAREDIR)/shortcuts.ini
	@set -e; for u in $(UNITS); do \
	    echo "sed etc/systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u"; \
	    sed $(INSTALL_SED) etc/systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u; \
	    chmod 0644 $(DESTDIR)$(UNITDIR)/$$u; done
	$(INSTALL) -d -m 0755 $(DESTDIR)$(IMP_ETCDIR)
	@set -e; for c in $(CONFS) sshd_config:0644; do \
	    f=$${c%%:*}; dst=$(DESTDIR)$(IMP_ETCDIR)/$$f; \
	    if [ -e "$$dst" ]; then echo "$$dst exists: kept"; continue; fi; \
	    if [ $$f = sshd_config ]; then \
	        sed $(INSTALL_SED) $(SSHD_SED) etc/ssh/sshd_config > "$$dst.new"; \
	    else \
	        sed $(INSTALL_SED) etc/imperium/$$f > "$$dst.new"; \
	    fi; \
	    chmod $${c##*:} "$$dst.new"; mv "$$dst.new" "$$dst"; echo "installed $$dst"; done
	@# The CLI's default token file (imperium admin on the API's machine, as
	@# root) is where the API, which may write nothing else, makes it.
	@[ -e $(DESTDIR)$(IMP_ETCDIR)/admin.token ] || [ -L $(DESTDIR)$(IMP_ETCDIR)/admin.token ] || \
	    { ln -s $(LOCALSTATEDIR)/lib/imperium/admin.token $(DESTDIR)$(IMP_ETCDIR)/admin.token && \
	      echo "ln -s $(LOCALSTATEDIR)/lib/imperium/admin.token $(DESTDIR)$(IMP_ETCDIR)/admin.token"; }
	$(INSTALL) -d -m 0750 $(DESTDIR)$(LOCALSTATEDIR)/lib/imperium
	$(INSTALL) -d -m 0755 $(DESTDIR)$(LOCALSTATEDIR)/lib/imperium-node \
	    $(DESTDIR)$(LOCALSTATEDIR)/lib/imperium-node/containers
	$(INSTALL) -d -m 0700 $(DESTDIR)$(LOCALSTATEDIR)/lib/imperium-node/state
