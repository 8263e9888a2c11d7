# vmigrate: one build for everything.
#   make            library, tools, guest payloads, tests
#   make test       every test, with the summary line last
#   make bench      benchmarks, each printing its numbers
#   make fuzz       every fuzz target for FUZZ_SECONDS each (default 60)
#   make soak       long migration runs with a leak check (tests/soak)
#   make demo       the end-to-end demo
#   make deps       install every Debian package the project needs (root)
#   make man        the man pages (scdoc), also part of make when scdoc is there
#   make install    binaries, man pages, bash completion, systemd units;
#                   make uninstall removes them again
# Knobs: WERROR=0, V=1, SANITIZER=address|undefined|address,undefined, BUILD=dir,
#        PREFIX=/usr/local and DESTDIR for install and uninstall

BUILD     ?= build
WERROR    ?= 1
SANITIZER ?=
V         ?= 0
FUZZ_SECONDS ?= 60

CC      ?= cc
CLANG   ?= clang

ifeq ($(V),1)
Q :=
else
Q := @
endif

# pkg-config name -> Debian package that provides it.
PKG_liblz4     := liblz4-dev
PKG_libzstd    := libzstd-dev
PKG_libxxhash  := libxxhash-dev
PKG_libssl     := libssl-dev
PKG_libcrypto  := libssl-dev
PKG_libvirt    := libvirt-dev
PKG_libvirt-qemu := libvirt-dev
PKG_librdmacm  := librdmacm-dev
PKG_libibverbs := libibverbs-dev
PKG_json-c     := libjson-c-dev
PKG_libcurl    := libcurl4-openssl-dev
PKG_libmicrohttpd := libmicrohttpd-dev
PKG_inih       := libinih-dev
PKG_libsystemd := libsystemd-dev
PKGS := liblz4 libzstd libxxhash libssl libcrypto libvirt libvirt-qemu librdmacm libibverbs json-c libcurl
PKGS += libmicrohttpd inih libsystemd

NO_BUILD_GOALS := deps clean help man uninstall
ifneq ($(filter-out $(NO_BUILD_GOALS),$(or $(MAKECMDGOALS),all)),)
ifeq ($(shell command -v pkg-config),)
$(error pkg-config not found: install the Debian package pkg-config (or run tools/install-deps.sh))
endif
$(foreach p,$(PKGS),$(if $(shell pkg-config --exists $(p) && echo ok),,\
  $(error library $(p) not found by pkg-config: install the Debian package $(PKG_$(p)) (or run tools/install-deps.sh))))
endif

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wpointer-arith -Wformat=2 -Wvla -Wimplicit-fallthrough \
        -Wno-unused-parameter
ifeq ($(WERROR),1)
WARN += -Werror
endif

CFLAGS   ?= -O2 -g
CPPFLAGS += -D_GNU_SOURCE -I. -Ickpt-format -Ifault -Ivm -Ivm/libvirt -Isnapshot -Itransport -Imigrate -Ireplicate -Itools/common -Itests -Itests/lib -MMD -MP
ALL_CFLAGS = -std=c11 $(WARN) $(CFLAGS) $(PKG_CFLAGS) -pthread
LDFLAGS  += -pthread -Wl,--as-needed
LDLIBS   += $(PKG_LIBS)

ifneq ($(SANITIZER),)
ALL_CFLAGS += -fsanitize=$(SANITIZER) -fno-omit-frame-pointer
LDFLAGS    += -fsanitize=$(SANITIZER)
endif

# (wildcard does not descend: every folder of library code is named here)
LIB_DIRS := fault ckpt-format transport vm vm/libvirt migrate snapshot replicate
LIB_SRCS := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
LIB      := $(BUILD)/libvmigrate.a

TEST_SRCS := $(wildcard tests/unit/test_*.c)
TEST_BINS := $(TEST_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
HARNESS_OBJ := $(BUILD)/tests/harness.o
TESTLIB_SRCS := $(wildcard tests/lib/*.c)
TESTLIB_OBJS := $(TESTLIB_SRCS:%.c=$(BUILD)/%.o)
TESTLIB := $(BUILD)/tests/libtest.a

BENCH_SRCS := $(wildcard tests/bench/bench_*.c)
BENCH_BINS := $(BENCH_SRCS:tests/bench/%.c=$(BUILD)/bench/%)

TOOL_BINS := $(BUILD)/tools/mkgolden $(BUILD)/tools/qstream-relay $(BUILD)/vmigrate $(BUILD)/vmigrated

# Guest payloads: freestanding 64-bit code, linked at 1 MiB, made flat.
GUEST_CFLAGS := -std=c11 -O2 -g0 -Wall -Wextra -ffreestanding -fno-pic -fno-pie \
	-mno-red-zone -mgeneral-regs-only -fno-stack-protector \
	-fno-asynchronous-unwind-tables -fcf-protection=none -I.
GUEST_LDFLAGS := -nostdlib -static -no-pie -Wl,-T,tools/guests/guest.ld \
	-Wl,--build-id=none -Wl,-z,noexecstack
GUESTS := $(BUILD)/guests/memtouch.bin

COMMON_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tools/common/*.c))
CLI_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tools/vmigrate/*.c)) $(COMMON_OBJS)
SERVICE_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tools/vmigrated/*.c)) $(COMMON_OBJS)

.PHONY: all test bench soak fuzz demo deps clean help
all: $(LIB) $(GUESTS) $(TOOL_BINS) $(TEST_BINS) $(BENCH_BINS)

define compile
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -c -o $@ $<
endef

define link
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
endef

$(BUILD)/%.o: %.c
	$(compile)

$(BUILD)/guests/%.elf: tools/guests/entry.S tools/guests/%.c tools/guests/guest.ld \
		tools/guests/guest_io.h vm/guest_abi.h
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  GUEST   $@")
	$(Q)$(CC) $(GUEST_CFLAGS) $(GUEST_LDFLAGS) -o $@ tools/guests/entry.S tools/guests/$*.c

$(BUILD)/guests/%.bin: $(BUILD)/guests/%.elf
	$(Q)objcopy -O binary $< $@

# The payloads are linked into the library (vm/payloads.c).
$(BUILD)/vm/payloads.o: CPPFLAGS += -DMEMTOUCH_BIN='"$(BUILD)/guests/memtouch.bin"'
$(BUILD)/vm/payloads.o: $(GUESTS)

$(BUILD)/vmigrate: $(CLI_OBJS) $(LIB)
	$(link)

$(BUILD)/vmigrated: $(SERVICE_OBJS) $(LIB)
	$(link)

$(LIB): $(LIB_OBJS)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(TESTLIB): $(TESTLIB_OBJS)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

# the service's read-ahead ring and downtime ramp, tested on their own
$(BUILD)/tests/test_read_ahead: $(BUILD)/tools/vmigrated/read_ahead.o
$(BUILD)/tests/test_downtime_ramp: $(BUILD)/tools/vmigrated/downtime_ramp.o
$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(HARNESS_OBJ) $(TESTLIB) $(LIB)
	$(link)

$(BUILD)/bench/%: $(BUILD)/tests/bench/%.o $(TESTLIB) $(LIB)
	$(link)

$(BUILD)/tools/mkgolden: $(BUILD)/tests/golden/mkgolden.o $(TESTLIB) $(LIB)
	$(link)

# Parses a QEMU migration stream and writes it again into another QEMU
# (tests/integration/qemu_stream.sh).
$(BUILD)/tools/qstream-relay: $(BUILD)/tests/tools/qstream_relay.o $(LIB)
	$(link)

test: all
	$(Q)VMIGRATE_SRCDIR=$(CURDIR) VMIGRATE_BUILD=$(abspath $(BUILD)) tests/run-tests.sh $(BUILD)

bench: all
	$(Q)for b in $(BENCH_BINS); do $$b || exit 1; done
	$(Q)tests/bench/bench_migrate.sh $(BUILD)
	$(Q)tests/bench/bench_sidebyside.sh $(BUILD)
	$(Q)tests/bench/bench_snapshot.sh $(BUILD)
	$(Q)tests/bench/bench_scale.sh $(BUILD)
	$(Q)tests/bench/bench_replicate.sh $(BUILD)
	$(Q)tests/bench/bench_failover.sh $(BUILD)
	$(Q)tests/bench/bench_postcopy.sh $(BUILD)
	$(Q)tests/bench/bench_libvirt.sh $(BUILD)
	$(Q)tests/bench/bench_libvirt_snapshot.sh $(BUILD)

# Long runs of live migration with a leak check, bounded in time
# (SOAK_MIGRATIONS, SOAK_ROUNDS, SOAK_TIMEOUT_S: tests/soak/soak.sh).
soak: all
	$(Q)tests/soak/soak.sh $(BUILD)

# The fuzzers are built apart with clang: libFuzzer plus ASan and UBSan.
# One target per kind of untrusted input, each with its seed corpus in
# tests/fuzz/ (run-fuzz.sh says which). The library and the service's code
# (without its main) are compiled again with clang into one archive, from
# which each target links what it reads with.
FUZZ_DIR      := $(BUILD)/fuzz
FUZZ_OBJ      := $(FUZZ_DIR)/obj
FUZZ_TARGETS  := reader peer_hello peer_dial mig_msg control etcd_reply conf qemu_stream domain_ckpt
FUZZ_BINS     := $(FUZZ_TARGETS:%=$(FUZZ_DIR)/fuzz_%)
FUZZ_LIB      := $(FUZZ_DIR)/libvmigrate-fuzz.a
FUZZ_LIB_SRCS := $(LIB_SRCS) $(wildcard tools/common/*.c) \
	$(filter-out tools/vmigrated/main.c,$(wildcard tools/vmigrated/*.c))
FUZZ_SAN      := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS   := -std=c11 -g -O1 $(filter-out -Werror,$(WARN)) \
	-Wno-gnu-variable-sized-type-not-at-end $(FUZZ_SAN) -Itools/vmigrated \
	-DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION $(PKG_CFLAGS) -pthread

$(FUZZ_OBJ)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CLANG   $<")
	$(Q)$(CLANG) $(CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_OBJ)/vm/payloads.o: CPPFLAGS += -DMEMTOUCH_BIN='"$(BUILD)/guests/memtouch.bin"'
$(FUZZ_OBJ)/vm/payloads.o: $(GUESTS)

$(FUZZ_LIB): $(FUZZ_LIB_SRCS:%.c=$(FUZZ_OBJ)/%.o)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

.SECONDARY: $(FUZZ_TARGETS:%=$(FUZZ_OBJ)/tests/fuzz/fuzz_%.o)
$(FUZZ_DIR)/fuzz_%: $(FUZZ_OBJ)/tests/fuzz/fuzz_%.o $(FUZZ_LIB)
	@$(if $(Q),echo "  FUZZ    $@")
	$(Q)$(CLANG) -fsanitize=fuzzer $(FUZZ_SAN) -pthread -o $@ $^ $(PKG_LIBS)

# The peer targets know their nonces in advance (fuzz_random.c).
$(FUZZ_DIR)/fuzz_peer_hello $(FUZZ_DIR)/fuzz_peer_dial: $(FUZZ_OBJ)/tests/fuzz/fuzz_random.o

# Every target for FUZZ_SECONDS each; fails if any crashed, leaked or hung.
fuzz: $(FUZZ_BINS)
	$(Q)tests/fuzz/run-fuzz.sh $(FUZZ_DIR) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

demo: all
	$(Q)tools/demo.sh $(BUILD)

deps:
	tools/install-deps.sh

clean:
	rm -rf $(BUILD)

help:
	@sed -n '1,/^$$/p' Makefile

# The version, from `git describe` at build time: a vX.Y tag and what came
# since, or VERSION_BASE and the commit where there is no tag yet, or
# VERSION_BASE alone outside a git checkout. Only tools/common/version.o
# (and the man pages) are made again when it changes.
VERSION_BASE := 0.1.0
VERSION_GIT := $(or $(patsubst v%,%,$(shell git -C $(CURDIR) describe --tags --match 'v[0-9]*' \
	--dirty 2>/dev/null)),$(addprefix $(VERSION_BASE)+g,$(shell git -C $(CURDIR) describe \
	--always --dirty 2>/dev/null)),$(VERSION_BASE))
VERSION ?= $(VERSION_GIT)
VERSION_STAMP := $(BUILD)/version.stamp

.PHONY: FORCE
$(VERSION_STAMP): FORCE
	@mkdir -p $(dir $@)
	$(Q)echo '$(VERSION)' | cmp -s - $@ || echo '$(VERSION)' >$@

$(BUILD)/tools/common/version.o $(FUZZ_OBJ)/tools/common/version.o: $(VERSION_STAMP)
$(BUILD)/tools/common/version.o $(FUZZ_OBJ)/tools/common/version.o: \
	CPPFLAGS += -DVMIGRATE_VERSION='"$(VERSION)"'

# Man pages: scdoc sources in tools/man, NAME.SECTION.scd, into roff.
SCDOC     ?= $(shell command -v scdoc 2>/dev/null)
MAN_SRCS  := $(wildcard tools/man/*.scd)
MAN_PAGES := $(MAN_SRCS:tools/man/%.scd=$(BUILD)/man/%)

.PHONY: man install uninstall
man: $(MAN_PAGES)
ifneq ($(SCDOC),)
all: $(MAN_PAGES)
endif

$(BUILD)/man/%: tools/man/%.scd $(VERSION_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  SCDOC   $@")
	$(if $(SCDOC),,$(error scdoc not found: install the Debian package scdoc (or run tools/install-deps.sh)))
	$(Q)sed 's/@VERSION@/$(VERSION)/g' $< | $(SCDOC) >$@.tmp && mv $@.tmp $@

# make install: PREFIX (default /usr/local) and DESTDIR, as usual. The
# systemd units name the binaries where they are installed.
PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
MANDIR      ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
UNITDIR     ?= $(PREFIX)/lib/systemd/system
UNITS       := $(notdir $(wildcard tools/systemd/*.service tools/systemd/*.timer))
man_path     = $(MANDIR)/man$(patsubst .%,%,$(suffix $(1)))/$(1)
INSTALLED    = $(BINDIR)/vmigrate $(BINDIR)/vmigrated \
	$(foreach p,$(notdir $(MAN_PAGES)),$(call man_path,$(p))) \
	$(BASHCOMPDIR)/vmigrate $(UNITS:%=$(UNITDIR)/%)

install: $(BUILD)/vmigrate $(BUILD)/vmigrated $(MAN_PAGES)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(UNITDIR) \
		$(sort $(foreach p,$(notdir $(MAN_PAGES)),$(DESTDIR)$(dir $(call man_path,$(p)))))
	install -m 755 $(BUILD)/vmigrate $(BUILD)/vmigrated $(DESTDIR)$(BINDIR)/
	for p in $(MAN_PAGES); do \
		install -m 644 $$p $(DESTDIR)$(MANDIR)/man$${p##*.}/ || exit 1; done
	install -m 644 tools/completion/vmigrate.bash $(DESTDIR)$(BASHCOMPDIR)/vmigrate
	for u in $(UNITS); do \
		sed 's|/usr/local/bin/vmigrate|$(BINDIR)/vmigrate|g' tools/systemd/$$u \
			>$(DESTDIR)$(UNITDIR)/$$u && chmod 644 $(DESTDIR)$(UNITDIR)/$$u || exit 1; done

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
