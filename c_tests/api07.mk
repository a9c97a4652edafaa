# ---------------------------------------------------------------------------
# facil.io 0.7.x release API (issue 14): the C programs, suite, side-by-side
# table and bench rows of the release build (make API=0.7 builds the library:
# build/libfio_tls07.{so,a}). Included by the Makefile.
#
#   make check07     the C programs of every backend, then the API07 suite
#                    (c_tests/suites/test_api07.py)
#   make compare07   the faults of facil.io 0.7.6's own OpenSSL backend, probed
#                    against it and against our release build: one table
#   make bench07     the release-build bench rows only (bench/bench.py
#                    --api07), ours vs facil.io 0.7.6's own backend
#
# facil.io is never built here: point these at an existing 0.7.6 tree and
# its CMake builds (static and shared without OpenSSL: their weak stubs are
# what the release build replaces; build-openssl with -DHAVE_OPENSSL=1
# -DFIO_TLS_FOUND=1: the upstream backend, for the comparisons only).
# ---------------------------------------------------------------------------
FACIL_IO_07_DIR     ?= /opt/facil.io-0.7.6
FACIL_IO_07_STATIC  ?= $(FACIL_IO_07_DIR)/build-static/libfacil.io.a
FACIL_IO_07_SHARED  ?= $(FACIL_IO_07_DIR)/build-shared/libfacil.io.so
FACIL_IO_07_OPENSSL ?= $(FACIL_IO_07_DIR)/build-openssl/libfacil.io.a
# where make API=0.7 puts the release build (of the same OPENSSL=)
LIB07_DIR ?= $(BUILD_DIR)
LIB07_A   := $(LIB07_DIR)/libfio_tls07.a
LIB07_SO  := $(LIB07_DIR)/libfio_tls07.so

FACIL_IO_07_FOUND := $(and $(wildcard $(FACIL_IO_07_DIR)/lib/facil/fio.h),$(wildcard $(FACIL_IO_07_STATIC)),$(wildcard $(FACIL_IO_07_SHARED)))
FACIL_IO_07_MISSING = facil.io 0.7.6 build not found or incomplete (FACIL_IO_07_DIR=$(FACIL_IO_07_DIR) [lib/facil/fio.h $(call found_or_missing,$(FACIL_IO_07_DIR)/lib/facil/fio.h)], FACIL_IO_07_STATIC=$(FACIL_IO_07_STATIC) [$(call found_or_missing,$(FACIL_IO_07_STATIC))], FACIL_IO_07_SHARED=$(FACIL_IO_07_SHARED) [$(call found_or_missing,$(FACIL_IO_07_SHARED))]); set these make variables to run the release-API suite
UPSTREAM07_FOUND := $(wildcard $(FACIL_IO_07_OPENSSL))

# facil.io 0.7.6's own headers only (its fio_tls.h is the API: never our
# include/): -isystem, they are not ours to keep warning-free
FACIL_IO_07_INCLUDES := $(addprefix -isystem $(FACIL_IO_07_DIR)/,lib lib/facil \
  lib/facil/tls lib/facil/fiobj lib/facil/cli lib/facil/http lib/facil/http/parsers \
  lib/facil/redis)
CT07 := $(BUILD_DIR)/c_tests07
CT07_RPATH_FACIL := $(abspath $(dir $(FACIL_IO_07_SHARED)))
CT07_RPATH_OURS  := $(abspath $(LIB07_DIR))
CT07_PROGRAMS := fio07_server fio07_client http-chat
# backends: static, shared, preload (ours, the working link modes); broken
# (libfio_tls07.so + libfacil.io.a: fio.c's weak fallbacks inside the
# program win); upstream (facil.io's own OpenSSL backend); none (facil.io
# alone: its fio_tls_missing.c stubs, what an application gets without us)
CT07_OURS_MODES := static shared preload broken
CT07_BINARIES := $(if $(UPSTREAM07_FOUND),$(addprefix $(CT07)/upstream/,$(CT07_PROGRAMS))) \
  $(CT07)/none/fio07_server \
  $(foreach m,$(CT07_OURS_MODES),$(addprefix $(CT07)/$(m)/,$(CT07_PROGRAMS)))
.SECONDARY: $(addprefix $(CT07)/,$(addsuffix .o,$(CT07_PROGRAMS)))

# the release build, from the beta4 make (make check, make bench): cargo
# decides what is stale (the Makefile's lib07 rule), make compares the times
ifneq ($(API),0.7)
$(LIB07_A) $(LIB07_SO) &: FORCE
	@$(MAKE) --no-print-directory API=0.7 OPENSSL=$(OPENSSL) all
endif

# one object per program serves every backend: it includes facil.io's
# fio_tls.h only
$(CT07)/%.o: c_tests/programs/%.c c_tests/programs/fio07_args.h
	@mkdir -p $(CT07)
	$(say) CC $@
	$(Q)$(CC) $(CT_CFLAGS) $(FACIL_IO_07_INCLUDES) -c $< -o $@
# facil.io 0.7.6's own websocket chat example (its only example with TLS:
# `-tls` makes a self-signed certificate for the host's address), compiled
# unchanged from the facil.io tree (its warnings are not ours)
$(CT07)/http-chat.o: $(FACIL_IO_07_DIR)/examples/http-chat.c
	@mkdir -p $(CT07)
	$(say) CC $@
	$(Q)$(CC) -std=gnu99 -O2 -w $(FACIL_IO_07_INCLUDES) -c $< -o $@
$(CT07)/upstream/%: $(CT07)/%.o $(FACIL_IO_07_OPENSSL)
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) -o $@ $< $(FACIL_IO_07_OPENSSL) $(SYSTEM_SSL_LIBS)
$(CT07)/static/%: $(CT07)/%.o $(LIB07_A)
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) -o $@ $< $(LIB07_A) $(FACIL_IO_07_STATIC) $(FIO_TLS_STATIC_LIBS)
$(CT07)/shared/%: $(CT07)/%.o $(LIB07_SO)
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) -o $@ $< $(LIB07_SO) $(FACIL_IO_07_SHARED) \
	  -Wl,-rpath,$(CT07_RPATH_OURS):$(CT07_RPATH_FACIL) -lpthread -lm
$(CT07)/preload/%: $(CT07)/%.o
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) -o $@ $< $(FACIL_IO_07_SHARED) -Wl,-rpath,$(CT07_RPATH_FACIL) -lpthread -lm
$(CT07)/none/%: $(CT07)/%.o
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) -o $@ $< $(FACIL_IO_07_STATIC) -lpthread -lm
$(CT07)/broken/%: $(CT07)/%.o $(LIB07_SO)
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) -o $@ $< $(LIB07_SO) $(FACIL_IO_07_STATIC) \
	  -Wl,-rpath,$(CT07_RPATH_OURS) -lpthread -lm

# pytest's options for the release-API suite (every pytest run of the
# Makefile gets them)
PYTEST_PATHS += --facil07-dir="$(abspath $(FACIL_IO_07_DIR))" \
  --facil07-static="$(abspath $(FACIL_IO_07_STATIC))" --facil07-shared="$(abspath $(FACIL_IO_07_SHARED))" \
  --facil07-openssl="$(abspath $(FACIL_IO_07_OPENSSL))" --lib07-dir="$(abspath $(LIB07_DIR))" \
  --ct07-dir="$(abspath $(CT07))" \
  $(if $(FACIL_IO_07_FOUND),,--facil07-missing="$(FACIL_IO_07_MISSING)")

.PHONY: check-programs07 check07 compare07 bench07
check-programs07: $(if $(FACIL_IO_07_FOUND),$(CT07_BINARIES))
	@$(if $(FACIL_IO_07_FOUND),,echo "SKIP facil.io 0.7.6 integration: $(FACIL_IO_07_MISSING)")

check07: check-programs07
	$(call run_pytest,pytest07,c_tests/suites/test_api07.py)

# the side-by-side table: c_tests/tools/compare07.py
compare07: check-programs07
	$(PYTHON) c_tests/tools/compare07.py --ct07-dir $(CT07) --work $(BUILD_DIR)/compare07

# the release-API bench rows: make bench adds them (when facil.io 0.7.6 is
# there; a backend not built leaves its column out), make bench07 runs them
# alone into bench/results07.md
BENCH07_BINS := $(CT07)/static/fio07_server $(CT07)/upstream/fio07_server
BENCH07_ARGS = $(if $(FACIL_IO_07_FOUND),--api07-server-bins $(BENCH07_BINS))
bench: check-programs07
ifeq ($(FACIL_IO_07_FOUND),)
bench07:
	@echo "SKIP bench07: $(FACIL_IO_07_MISSING)"
else
bench07: bench-deps check-programs07
	$(PYTHON) bench/bench.py --api07-only --server-bin $(BENCH_BIN) --work build/bench/run07 \
	  $(if $(filter-out 0,$(BENCH_QUICK)),--quick) $(BENCH07_ARGS) --results bench/results07.md $(BENCH_ARGS)
endif
