# Imperium build.  `make run` and `make check` are the two commands a new
# machine needs; both install missing Debian packages first.

CC      ?= cc
PKGS    := libmicrohttpd jansson sqlite3 libsodium openssl libcurl libcares
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
NODE_SRC   := $(wildcard src/node/*.c)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)

# Sources of the API daemon minus main.c: what unit tests may link against.
API_LIB_SRC := $(filter-out src/api/main.c,$(API_SRC))

obj = $(patsubst %.c,$(1)/obj/%.o,$(2))

.PHONY: all asan deps run check unit e2e clean bench

BINS := imperium-api imperium $(if $(NODE_SRC),imperium-node)

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

$(BA)/imperium-api: $(call obj,$(BA),$(API_SRC) $(COMMON_SRC))
	@echo "  LD-SAN  $@"
	@$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ $^ $(LDLIBS)

$(BA)/imperium: $(call obj,$(BA),$(CLI_SRC) $(COMMON_SRC))
	@echo "  LD-SAN  $@"
	@$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ $^ $(LDLIBS)

# Unit tests (cmocka), built with the sanitizers.
$(BA)/tests/%: tests/unit/%.c $(call obj,$(BA),$(API_LIB_SRC) $(COMMON_SRC))
	@mkdir -p $(dir $@)
	@echo "  LD-SAN  $@"
	@$(CC) $(CFLAGS) $(SAN_FLAGS) -o $@ $^ $(LDLIBS) -lcmocka

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
