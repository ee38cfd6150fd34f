# herald — one non-recursive Makefile.
#   make            build bin/, lib/ and the example handlers
#   make test       unit + integration tests (Criterion), real programs over real sockets
#   make run        install missing packages, build, run a broker + 2 workers on config/herald.cfg
#   make demo       a scripted tour: a poison event, its dead letter, a fix, a replay
#   make install    PREFIX=/usr/local DESTDIR=   programs, libherald, the Python client, man pages,
#                   systemd units
#                   (make uninstall: the same files removed)
#   make SANITIZE=address,undefined test
CC      ?= cc
PREFIX  ?= /usr/local
PKGS    := libzmq msgpack sqlite3 libconfig libmicrohttpd
# Debian 12 packages the build, the tests and the examples need.
DEB_PKGS := gcc make pkg-config libzmq3-dev libmsgpack-dev libsqlite3-dev libconfig-dev \
            libmicrohttpd-dev libcriterion-dev python3 awscli python3-boto3 curl nodejs \
            python3-croniter tzdata man-db chromium chromium-driver python3-selenium \
            python3-zmq python3-msgpack

OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Werror -MMD -MP -Iinclude -fPIC
LDLIBS  += -lpthread -lm
ifneq ($(SANITIZE),)
CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
export LSAN_OPTIONS = suppressions=$(CURDIR)/tests/lsan.supp
# RSS checks skip themselves (ASan keeps freed memory); big loads shrink
export HERALD_TEST_SANITIZE = 1
export UBSAN_OPTIONS = print_stacktrace=1:halt_on_error=1
endif
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
CFLAGS  += $(PKG_CFLAGS)
ZMQ_LIBS     = $(shell pkg-config --libs libzmq msgpack 2>/dev/null)
CONFIG_LIBS  = $(shell pkg-config --libs libconfig 2>/dev/null)
SQLITE_LIBS  = $(shell pkg-config --libs sqlite3 2>/dev/null)

B := build
PROTO_OBJ  := $(patsubst %.c,$(B)/%.o,$(wildcard proto/*.c))
# sched/: time zones and schedule expressions (pure C, no library): the config
# loader checks schedules with it, the broker fires them with it.
SCHED_OBJ  := $(patsubst %.c,$(B)/%.o,$(wildcard sched/*.c))
CONFIG_OBJ := $(patsubst %.c,$(B)/%.o,$(wildcard config/*.c)) $(SCHED_OBJ)
BROKER_OBJ := $(patsubst %.c,$(B)/%.o,$(wildcard broker/*.c))
WORKER_OBJ := $(patsubst %.c,$(B)/%.o,$(filter-out worker/launcher_exe.c,$(wildcard worker/*.c)))
# herald-launcher: the worker's launcher as a libc-only program (worker/launcher_exe.c)
LAUNCHER_OBJ := $(B)/worker/launcher_exe.o $(B)/worker/launcher.o $(B)/worker/exec.o $(B)/worker/host.o \
                $(B)/worker/chan.o $(B)/worker/attrs.o $(B)/worker/runtime.o $(B)/worker/rtapi.o \
                $(B)/worker/http.o $(B)/worker/peer.o $(B)/proto/util.o
LIBH_OBJ   := $(patsubst %.c,$(B)/%.o,$(filter-out publisher/main.c,$(wildcard publisher/*.c)))
PUB_OBJ    := $(B)/publisher/main.o
CTL_OBJ    := $(patsubst %.c,$(B)/%.o,$(wildcard ctl/*.c))
GW_OBJ     := $(patsubst %.c,$(B)/%.o,$(wildcard gateway/*.c))
UNIT_OBJ   := $(patsubst %.c,$(B)/%.o,$(wildcard tests/unit/*.c))
INTEG_OBJ  := $(patsubst %.c,$(B)/%.o,$(wildcard tests/integration/*.c))
EXAMPLES   := $(patsubst examples/handlers/%.c,examples/handlers/lib%.so,$(wildcard examples/handlers/*.c))
TEST_HANDLERS := $(patsubst tests/handlers/%.c,$(B)/tests/handlers/lib%.so,$(wildcard tests/handlers/*.c))

PROGS := bin/herald-broker bin/herald-worker bin/herald-publish bin/heraldctl $(if $(GW_OBJ),bin/herald-gateway)
LIBS  := lib/libherald.a lib/libherald.so

all: $(PROGS) libexec/herald-launcher $(LIBS) $(EXAMPLES)

# libherald carries proto/ so that apps link it with libzmq + msgpack only.
lib/libherald.a: $(LIBH_OBJ) $(PROTO_OBJ) | lib
	rm -f $@; ar rcs $@ $^
lib/libherald.so: $(LIBH_OBJ) $(PROTO_OBJ) | lib
	$(CC) $(LDFLAGS) -shared -o $@ $^ $(ZMQ_LIBS) $(LDLIBS)
# The version is defined once, in include/herald.h (what every program's --version prints).
VERSION := $(shell sed -n 's/^\#define HERALD_VERSION "\(.*\)"/\1/p' include/herald.h)

bin/herald-broker: $(BROKER_OBJ) $(CONFIG_OBJ) $(PROTO_OBJ) | bin
	$(CC) $(LDFLAGS) -o $@ $^ $(ZMQ_LIBS) $(SQLITE_LIBS) $(CONFIG_LIBS) $(LDLIBS)
libexec/herald-launcher: $(LAUNCHER_OBJ) | libexec
	$(CC) $(LDFLAGS) -Wl,-z,now -o $@ $^ $(LDLIBS) -ldl
# -z now: symbols bound once at start, not again in every forked supervisor
bin/herald-worker: $(WORKER_OBJ) $(CONFIG_OBJ) $(PROTO_OBJ) | bin
	$(CC) $(LDFLAGS) -Wl,-z,now -o $@ $^ $(ZMQ_LIBS) $(CONFIG_LIBS) $(LDLIBS) -ldl
bin/herald-publish: $(PUB_OBJ) lib/libherald.a | bin
	$(CC) $(LDFLAGS) -o $@ $^ $(ZMQ_LIBS) $(LDLIBS)
bin/heraldctl: $(CTL_OBJ) $(B)/broker/dlq.o $(CONFIG_OBJ) lib/libherald.a | bin
	$(CC) $(LDFLAGS) -o $@ $^ $(ZMQ_LIBS) $(SQLITE_LIBS) $(CONFIG_LIBS) $(LDLIBS)

# The gateway is a client: libherald for publish/invoke, ctl's admin client for the rest.
# The web console's static files (console/) are built into the gateway.
CONSOLE_FILES := $(wildcard console/*)
$(B)/gateway/console_assets.c: $(CONSOLE_FILES) gateway/embed.sh
	@mkdir -p $(dir $@)
	gateway/embed.sh console > $@
$(B)/gateway/console_assets.o: $(B)/gateway/console_assets.c
	$(CC) $(CFLAGS) -c -o $@ $<
bin/herald-gateway: $(GW_OBJ) $(B)/gateway/console_assets.o $(B)/ctl/admin.o $(B)/ctl/json.o $(CONFIG_OBJ) lib/libherald.a | bin
	$(CC) $(LDFLAGS) -o $@ $^ $(shell pkg-config --libs libmicrohttpd 2>/dev/null) $(ZMQ_LIBS) $(CONFIG_LIBS) $(LDLIBS)

# Native example handlers depend on include/herald/handler.h only.
examples/handlers/lib%.so: examples/handlers/%.c include/herald/handler.h
	$(CC) $(OPT) -g -std=gnu11 -Wall -Wextra -Werror -Iinclude -shared -fPIC -o $@ $<

$(B)/tests/handlers/lib%.so: tests/handlers/%.c include/herald/handler.h
	@mkdir -p $(dir $@)
	$(CC) -O1 -g -std=gnu11 -Wall -Wextra -Werror -Iinclude -shared -fPIC -o $@ $<

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

bin lib libexec:
	mkdir -p $@

# --- tests -----------------------------------------------------------------
TEST_LIBS = $(shell pkg-config --libs criterion 2>/dev/null)
$(B)/test-unit: $(UNIT_OBJ) $(filter-out $(B)/broker/main.o,$(BROKER_OBJ)) \
                $(filter-out $(B)/worker/main.o,$(WORKER_OBJ)) $(LIBH_OBJ) $(CONFIG_OBJ) $(PROTO_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(TEST_LIBS) $(ZMQ_LIBS) $(SQLITE_LIBS) $(CONFIG_LIBS) $(LDLIBS) -ldl
$(B)/test-integration: $(INTEG_OBJ) lib/libherald.a
	$(CC) $(LDFLAGS) -o $@ $^ $(TEST_LIBS) $(ZMQ_LIBS) $(SQLITE_LIBS) $(LDLIBS)

TEST_JOBS ?= 2
# The core, heraldctl and worker-session scenarios run twice: plaintext, then with CURVE on every
# endpoint (HERALD_TEST_CURVE=1: the harness makes keys and every program uses them).
CURVE_SUITES ?= @(spine|failure|heraldctl|workers)/*
# The runtime suite runs on its own: its Python and Node starts are bursts of
# CPU that would otherwise land in the timing-sensitive suites beside it.
test: deps all $(TEST_HANDLERS) $(B)/test-unit $(B)/test-integration $(B)/test-reliability
	python3 tests/config_doc.py
	$(B)/test-unit --jobs $(TEST_JOBS)
	HERALD_ROOT=$(CURDIR) $(B)/test-integration --jobs $(TEST_JOBS) --filter '!(runtime)/*'
	HERALD_ROOT=$(CURDIR) $(B)/test-integration --jobs $(TEST_JOBS) --filter 'runtime/*'
	HERALD_ROOT=$(CURDIR) HERALD_TEST_CURVE=1 $(B)/test-integration --jobs $(TEST_JOBS) --filter '$(CURVE_SUITES)'
	HERALD_ROOT=$(CURDIR) $(B)/test-reliability --jobs $(TEST_JOBS)
	MAKE='$(MAKE)' tests/install.sh

# --- reliability (docs/RELIABILITY.md) -----------------------------------------
#   make test-reliability   the full suite: crash loops, chaos, disk full, back-pressure,
#                           socket fuzzing, valgrind, then every libFuzzer target for FUZZ_SECONDS
#   make test-valgrind      broker + worker under memcheck through a short workload
#   make test-sanitize      make clean, then make test SANITIZE=address,undefined (rebuilds everything)
#   make fuzz               the libFuzzer targets (clang) into build/fuzz/; make fuzz-run runs them
REL_OBJ := $(patsubst %.c,$(B)/%.o,$(wildcard tests/reliability/*.c))
REL_REPORT ?= $(B)/reliability-report.txt
$(B)/test-reliability: $(REL_OBJ) $(B)/tests/integration/harness.o lib/libherald.a
	$(CC) $(LDFLAGS) -o $@ $^ $(TEST_LIBS) $(ZMQ_LIBS) $(SQLITE_LIBS) $(LDLIBS)
test-reliability: deps all $(TEST_HANDLERS) $(B)/test-reliability fuzz
	rm -f $(REL_REPORT)
	st=0; HERALD_ROOT=$(CURDIR) HERALD_RELIABILITY=full HERALD_RELIABILITY_REPORT=$(CURDIR)/$(REL_REPORT) \
	  $(B)/test-reliability --jobs 1 || st=1; \
	$(MAKE) -s fuzz-run || st=1; \
	echo "figures: $(REL_REPORT)"; exit $$st
test-valgrind: deps all $(TEST_HANDLERS) $(B)/test-reliability
	HERALD_ROOT=$(CURDIR) HERALD_RELIABILITY=full $(B)/test-reliability --filter 'valgrind/*'
test-sanitize:
	$(MAKE) clean
	$(MAKE) test SANITIZE=address,undefined
	$(MAKE) clean
	$(MAKE)

# libFuzzer: one target per message type (fuzz_msg.c with FUZZ_TYPE), the
# whole-frame decoder (fuzz_proto.c), the config loader (fuzz_config.c) and
# the Runtime API's HTTP parser (fuzz_http.c, libc only) and the schedule
# expressions and TZif reader (fuzz_sched.c, libc only).
FUZZ_CC      ?= clang
FUZZ_SAN     := -g -O1 -fno-sanitize-recover=undefined -std=gnu11 -Iinclude $(PKG_CFLAGS)
FUZZ_FLAGS   := -fsanitize=fuzzer,address,undefined $(FUZZ_SAN)
FUZZ_TYPES   := hello welcome publish confirm register config deliver result heartbeat drain admin admin_reply error invoke invoke_reply refused bye stats
FUZZ_TARGETS := proto config http sched $(addprefix msg_,$(FUZZ_TYPES))
FUZZ_SECONDS ?= 20
FUZZ_LIB_SRC := $(wildcard proto/*.c) $(wildcard config/*.c)
$(B)/fuzz/libfz.a: $(FUZZ_LIB_SRC) $(wildcard proto/*.h) $(wildcard config/*.h)
	@mkdir -p $(B)/fuzz/obj
	cd $(B)/fuzz/obj && rm -f *.o && for f in $(FUZZ_LIB_SRC); do \
	  $(FUZZ_CC) -fsanitize=fuzzer-no-link,address,undefined $(FUZZ_SAN) -I$(CURDIR)/include -c -o $$(echo $$f | tr / _ | sed 's/\.c$$/.o/') $(CURDIR)/$$f || exit 1; done
	rm -f $@ && ar rcs $@ $(B)/fuzz/obj/*.o
$(B)/fuzz/fuzz_proto: tests/fuzz/fuzz_proto.c $(B)/fuzz/libfz.a
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^ $(ZMQ_LIBS) $(CONFIG_LIBS) $(LDLIBS)
$(B)/fuzz/fuzz_config: tests/fuzz/fuzz_config.c $(B)/fuzz/libfz.a
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^ $(ZMQ_LIBS) $(CONFIG_LIBS) $(LDLIBS)
$(B)/fuzz/fuzz_http: tests/fuzz/fuzz_http.c worker/http.c worker/http.h
	@mkdir -p $(B)/fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ tests/fuzz/fuzz_http.c worker/http.c
$(B)/fuzz/fuzz_sched: tests/fuzz/fuzz_sched.c $(wildcard sched/*.c) $(wildcard sched/*.h)
	@mkdir -p $(B)/fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ tests/fuzz/fuzz_sched.c $(wildcard sched/*.c)
$(B)/fuzz/fuzz_msg_%: tests/fuzz/fuzz_msg.c $(B)/fuzz/libfz.a
	$(FUZZ_CC) $(FUZZ_FLAGS) -DFUZZ_TYPE='"$(shell echo $* | tr a-z A-Z)"' -o $@ $^ $(ZMQ_LIBS) $(CONFIG_LIBS) $(LDLIBS)
fuzz: $(addprefix $(B)/fuzz/fuzz_,$(FUZZ_TARGETS))
# Rewrites the committed seeds from our own encoders and the test configs.
fuzz-corpus: $(PROTO_OBJ)
	@mkdir -p $(B)/fuzz
	$(CC) $(CFLAGS) -o $(B)/fuzz/make_corpus tests/fuzz/make_corpus.c $(PROTO_OBJ) $(ZMQ_LIBS) $(LDLIBS)
	rm -rf tests/fuzz/corpus/proto tests/fuzz/corpus/msg_* tests/fuzz/corpus/config
	$(B)/fuzz/make_corpus tests/fuzz/corpus
	mkdir -p tests/fuzz/corpus/config && cp tests/configs/*.cfg config/herald.cfg tests/fuzz/corpus/config/
# Each target runs FUZZ_SECONDS from its committed seed corpus (tests/fuzz/corpus/
# TARGET/, read only; new inputs go to build/fuzz/work/); a crash leaves its
# input in build/fuzz/crash-TARGET-*.
fuzz-run: fuzz
	@fail=""; for t in $(FUZZ_TARGETS); do \
	  rm -rf $(B)/fuzz/work/$$t && mkdir -p $(B)/fuzz/work/$$t; \
	  printf 'fuzz_%-18s ' $$t; \
	  if LSAN_OPTIONS=suppressions=$(CURDIR)/tests/fuzz/lsan.supp $(B)/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) \
	      -max_len=4096 -timeout=10 -rss_limit_mb=2048 -artifact_prefix=$(B)/fuzz/crash-$$t- \
	      $(B)/fuzz/work/$$t tests/fuzz/corpus/$$t > $(B)/fuzz/$$t.log 2>&1; then \
	    grep -o 'Done [0-9]* runs in [0-9]* second' $(B)/fuzz/$$t.log | tail -1; \
	  else echo "FAILED: $$(grep -m1 -o 'ERROR: [A-Za-z]*Sanitizer: [a-z -]*\|runtime error: .*\|deadly signal' $(B)/fuzz/$$t.log) (see $(B)/fuzz/$$t.log)"; \
	    fail="$$fail $$t"; fi; \
	done; if [ -n "$$fail" ]; then echo "fuzz targets that failed:$$fail"; exit 1; fi
# The web console's screenshots in docs/, taken by the browser test from a live broker.
console-screenshots: all $(TEST_HANDLERS) $(B)/test-integration
	HERALD_ROOT=$(CURDIR) HERALD_CONSOLE_SCREENSHOTS=$(CURDIR)/docs $(B)/test-integration \
	  --filter 'console/the_pages*'

.PHONY: test-reliability test-valgrind test-sanitize fuzz fuzz-run fuzz-corpus console-screenshots

# --- running ---------------------------------------------------------------
RUN_CFG ?= config/herald.cfg
run: deps all
	@examples/run.sh $(RUN_CFG)

demo: deps all
	@examples/demo.sh

# Installs what is missing when root; otherwise prints the exact command.
deps:
	@miss=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || miss="$$miss $$p"; done; \
	if [ -n "$$miss" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing:$$miss"; \
	    (apt-get install -y -qq $$miss || (apt-get update -qq && apt-get install -y -qq $$miss)) >/dev/null || exit 1; \
	  else echo "missing packages; run: sudo apt-get install -y$$miss" >&2; exit 1; fi; \
	fi

# herald.pc is written at install time, so it names the PREFIX being installed
# to (files go to DESTDIR/PREFIX; the .pc says PREFIX). Libs carries an rpath to
# PREFIX/lib: a program built with pkg-config finds libherald.so without
# LD_LIBRARY_PATH or ldconfig.
INST_BIN  := $(notdir $(PROGS))
INST_INC  := include/herald.h include/herald/handler.h
# man pages (hand-written roff) and systemd units (docs/SERVICES.md): each
# unit's @BINDIR@ becomes PREFIX/bin at install time, as herald.pc's prefix does.
MAN1      := $(wildcard man/*.1)
MAN3      := $(wildcard man/*.3)
MAN5      := $(wildcard man/*.5)
UNITS     := $(patsubst systemd/%.in,%,$(wildcard systemd/*.service.in))
MANDIR    := $(PREFIX)/share/man
UNITDIR   := $(PREFIX)/lib/systemd/system
# The Python client (clients/python/herald) goes where Debian's python3 looks
# for packages under a prefix: /usr/lib/python3/dist-packages with PREFIX=/usr
# (/usr/local/lib/python3/dist-packages is on Debian's sys.path too).
PYDIR     := $(PREFIX)/lib/python3/dist-packages/herald
PYFILES   := $(wildcard clients/python/herald/*.py)
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/libexec $(DESTDIR)$(PREFIX)/lib/pkgconfig \
	  $(DESTDIR)$(PREFIX)/include/herald $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3 \
	  $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(PYDIR)
	install -m 644 $(PYFILES) $(DESTDIR)$(PYDIR)/
	install -m 644 $(MAN1) $(DESTDIR)$(MANDIR)/man1/
	install -m 644 $(MAN3) $(DESTDIR)$(MANDIR)/man3/
	install -m 644 $(MAN5) $(DESTDIR)$(MANDIR)/man5/
	for u in $(UNITS); do \
	  sed 's|@BINDIR@|$(PREFIX)/bin|g' systemd/$$u.in > $(DESTDIR)$(UNITDIR)/$$u && chmod 644 $(DESTDIR)$(UNITDIR)/$$u || exit 1; \
	done
	install -m 755 $(PROGS) $(DESTDIR)$(PREFIX)/bin/
	install -m 755 libexec/herald-launcher $(DESTDIR)$(PREFIX)/libexec/
	install -m 644 lib/libherald.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 lib/libherald.so $(DESTDIR)$(PREFIX)/lib/
	install -m 644 include/herald.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 include/herald/handler.h $(DESTDIR)$(PREFIX)/include/herald/
	printf 'prefix=%s\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nName: herald\nDescription: herald client library\nVersion: $(VERSION)\nRequires.private: libzmq msgpack\nLibs: -L$${libdir} -Wl,-rpath,$${libdir} -lherald\nCflags: -I$${includedir}\n' \
	  '$(PREFIX)' > $(DESTDIR)$(PREFIX)/lib/pkgconfig/herald.pc
	chmod 644 $(DESTDIR)$(PREFIX)/lib/pkgconfig/herald.pc

# Removes exactly what install put there (and include/herald/ and the Python
# package's directory once empty).
uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/bin/,$(INST_BIN)) $(DESTDIR)$(PREFIX)/libexec/herald-launcher \
	  $(DESTDIR)$(PREFIX)/lib/libherald.a $(DESTDIR)$(PREFIX)/lib/libherald.so \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig/herald.pc $(addprefix $(DESTDIR)$(PREFIX)/,$(INST_INC)) \
	  $(addprefix $(DESTDIR)$(MANDIR)/man1/,$(notdir $(MAN1))) $(addprefix $(DESTDIR)$(MANDIR)/man3/,$(notdir $(MAN3))) \
	  $(addprefix $(DESTDIR)$(MANDIR)/man5/,$(notdir $(MAN5))) $(addprefix $(DESTDIR)$(UNITDIR)/,$(UNITS)) \
	  $(addprefix $(DESTDIR)$(PYDIR)/,$(notdir $(PYFILES)))
	rm -rf $(DESTDIR)$(PYDIR)/__pycache__
	rmdir $(DESTDIR)$(PREFIX)/include/herald $(DESTDIR)$(PYDIR) 2>/dev/null || true

clean:
	rm -rf $(B) bin libexec lib examples/handlers/*.so

.PHONY: all test run demo deps install uninstall clean
-include $(shell find $(B) -name '*.d' 2>/dev/null)

# --- benchmarks (docs/PERFORMANCE.md) ----------------------------------------
#   make bench [RUNS=3]   W1–W3, B1 backlog, X1–X3 exec and runtimes (docs/PERFORMANCE.md): one table
#   make bench-peers      a peers harness (PEERS_DIR, not in this repo) on Redis, RabbitMQ, NATS and herald
RUNS ?= 3
BENCH_OBJ := $(patsubst %.c,$(B)/%.o,$(filter-out bench/bench_handler.c,$(wildcard bench/*.c)))
bin/herald-bench: $(BENCH_OBJ) lib/libherald.a | bin
	$(CC) $(LDFLAGS) -o $@ $^ $(ZMQ_LIBS) $(LDLIBS)
$(B)/bench/libbench_handler.so: bench/bench_handler.c bench/shared.h include/herald/handler.h
	@mkdir -p $(dir $@)
	$(CC) $(OPT) -g -std=gnu11 -Wall -Wextra -Werror -Iinclude -shared -fPIC -o $@ $<
bench: all bin/herald-bench $(B)/bench/libbench_handler.so
	bin/herald-bench --runs $(RUNS)
bench-peers: all
	HERALD_ROOT=$(CURDIR) bench/peers.sh
.PHONY: bench bench-peers
