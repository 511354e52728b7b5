# Imperium build.  `make run` and `make check` are the two commands a new
# machine needs; both install missing Debian packages first.

CC      ?= cc
PKGS    := libmicrohttpd jansson sqlite3 libsodium openssl libcurl libcares libseccomp
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wformat=2 -D_GNU_SOURCE \
           -fno-strict-aliasing $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread

SAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
             -fno-sanitize-recover=undefined

B    := build
BA   := build/asan

COMMON_SRC := $(wildcard src/common/*.c)
API_SRC    := $(wildcard src/api/*.c)
CLI_SRC    := $(wildcard src/cli/*.c)
# imperium-init (the container's PID 1) is a program of its own: its
# main and loop are not part of imperium-node.
INIT_SRC   := src/node/init_main.c src/node/init.c src/node/report.c src/node/seccomp.c \
              src/common/err.c
NODE_SRC   := $(filter-out src/node/init_main.c src/node/init.c,$(wildcard src/node/*.c))
UNIT_SRC   := $(wildcard tests/unit/test_*.c)

# Sources of the API daemon minus main.c: what unit tests may link against.
API_LIB_SRC := $(filter-out src/api/main.c,$(API_SRC))

obj = $(patsubst %.c,$(1)/obj/%.o,$(2))

.PHONY: all asan deps run check unit e2e clean bench

BINS := imperium-api imperium $(if $(NODE_SRC),imperium-node imperium-init)

all: $(addprefix $(B)/,$(BINS))

asan: $(addprefix $(BA)/,$(BINS))

deps:
	@scripts/deps.sh

$(B)/obj/%.o: %.c $(wildcard src/*/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS) -c $< -o $@

$(BA)/obj/%.o: %.c $(wildcard src/*/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC-SAN  $<"
	@$(CC) $(CFLAGS) $(SAN_FLAGS) -c $< -o $@

$(B)/imperium-api: $(call obj,$(B),$(API_SRC) $(COMMON_SRC))
	@echo "  LD      $@"
	@$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(B)/imperium: $(call obj,$(B),$(CLI_SRC) $(COMMON_SRC))
	@echo "  LD      $@"
	@$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(B)/imperium-node: $(call obj,$(B),$(NODE_SRC) $(COMMON_SRC))
	@echo "  LD      $@"
	@$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BA)/imperium-node: $(call obj,$(BA),$(NODE_SRC) $(COMMON_SRC))
	@echo "  LD-SAN  $@"
	@$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ $^ $(LDLIBS)

# imperium-init runs inside the container, whose distro need not have the
# node's libraries: it is linked statically.  The sanitizers cannot be, so
# build/asan holds the same non-sanitized static binary.
INIT_LDLIBS := -static -lseccomp

$(B)/imperium-init: $(call obj,$(B),$(INIT_SRC))
	@echo "  LD      $@"
	@$(CC) $(CFLAGS) -o $@ $^ $(INIT_LDLIBS)

$(BA)/imperium-init: $(call obj,$(B),$(INIT_SRC))
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(CFLAGS) -o $@ $^ $(INIT_LDLIBS)

$(BA)/imperium-api: $(call obj,$(BA),$(API_SRC) $(COMMON_SRC))
	@echo "  LD-SAN  $@"
	@$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ $^ $(LDLIBS)

$(BA)/imperium: $(call obj,$(BA),$(CLI_SRC) $(COMMON_SRC))
	@echo "  LD-SAN  $@"
	@$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ $^ $(LDLIBS)

# Unit tests (cmocka), built with the sanitizers.
# The node's pure helpers (no daemon, no syscalls) are unit-tested too.
NODE_LIB_SRC := src/node/subscription.c src/node/shells.c src/node/state.c
$(BA)/tests/%: tests/unit/%.c $(wildcard tests/unit/*.h) $(call obj,$(BA),$(API_LIB_SRC) $(COMMON_SRC) $(NODE_LIB_SRC))
	@mkdir -p $(dir $@)
	@echo "  LD-SAN  $@"
	@$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ $(filter-out %.h,$^) $(LDLIBS) -lcmocka

UNIT_BINS := $(patsubst tests/unit/%.c,$(BA)/tests/%,$(UNIT_SRC))

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

# End-to-end tests start the sanitizer builds of the real binaries.
e2e: asan
	IMPERIUM_BIN=$(CURDIR)/$(BA) /usr/bin/python3 -m pytest -q tests/e2e

check: deps
	$(MAKE) all asan
	$(MAKE) unit
	$(MAKE) e2e

run: deps
	$(MAKE) all
	scripts/run.sh

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

# ssh into containers (docs/SSH.md): the NSS module and the login shell run
# inside sshd (a non-sanitized program; the shell is setuid root once
# installed), so they have no sanitizer build; imperium-wall has one.
SSH_ENTER_SRC := src/ssh/enter.c src/node/state.c src/common/config.c src/common/err.c \
                 src/common/strutil.c src/common/beneath.c \
                 src/node/seccomp.c src/node/cgroup.c src/common/log.c
SSH_WALL_SRC  := src/ssh/wall.c src/node/shells.c src/node/state.c src/common/err.c
SSH_LDLIBS    := $(shell pkg-config --libs jansson libsodium libseccomp 2>/dev/null)

all: $(B)/libnss_imperium.so.2 $(B)/imperium-enter $(B)/imperium-wall

asan: $(BA)/imperium-wall

$(B)/libnss_imperium.so.2: src/ssh/nss_imperium.c
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(CFLAGS) -fPIC -shared -fvisibility=hidden -Wl,-soname,libnss_imperium.so.2 \
	    -Wl,-z,defs -o $@ $<

$(B)/imperium-enter: $(call obj,$(B),$(SSH_ENTER_SRC))
	@echo "  LD      $@"
	@$(CC) $(CFLAGS) -o $@ $^ $(SSH_LDLIBS)

$(B)/imperium-wall: $(call obj,$(B),$(SSH_WALL_SRC))
	@echo "  LD      $@"
	@$(CC) $(CFLAGS) -o $@ $^ $(SSH_LDLIBS)

$(BA)/imperium-wall: $(call obj,$(BA),$(SSH_WALL_SRC))
	@echo "  LD-SAN  $@"
	@$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ $^ $(SSH_LDLIBS)
