# libfio_tls -- build, test, install.
#
#   make                 build target/release/libfio_tls.{so,a}
#                        and build/ (libfio_tls.so, libfio_tls.so.0 -> it, .a)
#   make API=0.7         the facil.io 0.7.0-0.7.6 release API instead (cargo
#                        feature api07, target/api07/): build/libfio_tls07.so
#                        (SONAME libfio_tls07.so.0, + .so.0 link) and .a;
#                        include/fio_tls07.h; all, check-rust, install and
#                        uninstall take API=0.7 (make check builds it too)
#   make OPENSSL=vendored  the same with OpenSSL 3.5 LTS compiled in (crate
#                        openssl-src ~300.5): target/vendored/, build/vendored/;
#                        check, install, torture and scan take OPENSSL=vendored too
#   make header          regenerate include/fio_tls.h (cbindgen; commit it)
#   make check           every suite under pytest (c_tests/suites/): the Rust
#                        tests, header/symbol/SONAME and install checks, the
#                        API misuse table, the facil.io server and client
#                        suites, quick torture; ends with one total line
#                        (and one SKIP line when facil.io is missing)
#   make check-asan      the API misuse table under ASan+UBSan (Rust staticlib
#                        built with -Zsanitizer=address into target/asan;
#                        c_tests/suites/test_misuse.py -k table)
#   make scan            testssl.sh + sslyze against the demo server, findings
#                        table, interop matrix (c_tests/suites/test_scan.py)
#   make torture         the torture suite with its full counts
#                        (c_tests/suites/test_torture.py; make check runs
#                        the quick counts)
#   make fuzz            cargo-fuzz targets in fuzz/, FUZZ_SECONDS each
#   make install         PREFIX=/usr/local DESTDIR= LIBDIR= INCLUDEDIR=
#                        (debug info stripped; INSTALL_STRIP=0 keeps it)
#   make demo            HTTPS hello server on DEMO_PORT (default 4443)
#   make demo ACME=pebble  the same, its certificate from a local pebble
#                        (ACME TLS-ALPN-01; Debian packages pebble, curl)
#   make clean
#
# facil.io is never built here: point these at an existing 0.7.0.beta4 build.
FACIL_IO_DIR    ?= /opt/facil.io-0.7.0.beta4
FACIL_IO_STATIC ?= $(FACIL_IO_DIR)/build-static/libfacil.io.a
FACIL_IO_SHARED ?= $(FACIL_IO_DIR)/build-shared/libfacil.io.so

CARGO   ?= cargo
# the Python with pytest: Debian's python3-pytest lives in /usr/bin/python3
PYTHON  ?= $(firstword $(wildcard /usr/bin/python3) python3)
PYTEST  ?= $(PYTHON) -m pytest
PYTEST_ARGS ?=
CC      ?= cc
CXX     ?= g++
# Which OpenSSL the library uses:
#   system    the distribution's libssl/libcrypto (openssl-sys finds them with
#             pkg-config), linked dynamically; security updates come with the
#             distribution's packages
#   vendored  OpenSSL 3.5 LTS built from source by the openssl-src crate (a few
#             minutes) and linked in statically; its own cargo target dir and
#             output dir, so both builds can sit side by side. The .a is
#             partially linked into one object whose only global symbols are
#             fio_tls_* (OpenSSL's are made local), so an application may also
#             link the system libssl for its own use.
# Which facil.io TLS API the library implements (the function names are the
# same, so each is its own artefact, side by side in the build dir):
#   beta4  facil.io 0.7.0.beta4's: libfio_tls, include/fio_tls.h
#   0.7    facil.io 0.7.0-0.7.6's release API (cargo feature api07, its
#          own cargo target dir): libfio_tls07, include/fio_tls07.h (our
#          extensions; applications include facil.io's own fio_tls.h)
API ?= beta4
ifeq ($(API),beta4)
API_FEATURES :=
API_TARGET   :=
LIBNAME      := libfio_tls
HEADER       := include/fio_tls.h
API_NAME     := facil.io 0.7.0.beta4 (the fio_tls API)
else ifeq ($(API),0.7)
API_FEATURES := api07
API_TARGET   := api07
LIBNAME      := libfio_tls07
HEADER       := include/fio_tls07.h
API_NAME     := facil.io 0.7.0-0.7.6 (the release fio_tls API)
else
$(error API=$(API): use API=beta4 (the default) or API=0.7)
endif
# the nine functions of facil.io 0.7.x's fio_tls.h (the release build
# exports exactly these, plus what include/fio_tls07.h declares)
API07_FUNCTIONS := fio_tls_new fio_tls_cert_add fio_tls_alpn_add fio_tls_alpn_count \
  fio_tls_trust fio_tls_accept fio_tls_connect fio_tls_dup fio_tls_destroy
comma := ,
empty :=
space := $(empty) $(empty)
# cargo's --features and --target-dir for the features given
cargo_flags = $(if $(strip $(1)),--features $(subst $(space),$(comma),$(strip $(1)))) \
  $(if $(filter-out target,$(2)),--target-dir $(2))

OPENSSL ?= system
ifeq ($(OPENSSL),vendored)
CARGO_TARGET := target/$(if $(API_TARGET),$(API_TARGET)-)vendored
CARGO_FLAGS := $(strip $(call cargo_flags,vendored $(API_FEATURES),$(CARGO_TARGET)))
BUILD_DIR   := build/vendored
# what a program linking libfio_tls.a needs besides it
# (cargo rustc --release -- --print native-static-libs)
FIO_TLS_STATIC_LIBS ?= -lpthread -ldl -lm
# fio_tls.pc: nothing from the system's OpenSSL
PC_REQUIRES :=
PC_DESCRIPTION := TLS for $(API_NAME), OpenSSL 3.5 LTS built in
else ifeq ($(OPENSSL),system)
CARGO_TARGET := target$(if $(API_TARGET),/$(API_TARGET))
CARGO_FLAGS := $(strip $(call cargo_flags,$(API_FEATURES),$(CARGO_TARGET)))
BUILD_DIR   := build
FIO_TLS_STATIC_LIBS ?= -lssl -lcrypto -lpthread -ldl -lm
PC_REQUIRES := openssl
PC_DESCRIPTION := TLS over OpenSSL for $(API_NAME)
else
$(error OPENSSL=$(OPENSSL): use OPENSSL=system (the default) or OPENSSL=vendored)
endif
# the system OpenSSL's link flags (ASan build, isolation test program)
SYSTEM_SSL_LIBS := -lssl -lcrypto -lpthread -ldl -lm
LD      ?= ld
OBJCOPY ?= objcopy
AR      ?= ar

PREFIX       ?= /usr/local
# make install drops the debug info (the build keeps it, for profiling)
INSTALL_STRIP ?= 1
STRIP        ?= strip
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR      ?=

DEMO_PORT ?= 4443

# V=1 shows the compiler command lines; by default one short line a file
ifeq ($(V),1)
Q   :=
say := @true
else
Q   := @
say := @printf '  %-4s %s\n'
endif

VERSION := $(shell sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml 2>/dev/null | head -n 1)
SONAME  := $(LIBNAME).so.0

RELEASE := $(CARGO_TARGET)/release
BUILD   := $(BUILD_DIR)
CT      := $(BUILD)/c_tests

# -isystem: facil.io's own headers are not ours to keep warning-free
FACIL_IO_INCLUDES := $(addprefix -isystem $(FACIL_IO_DIR)/,lib lib/facil \
  lib/facil/fiobj lib/facil/cli lib/facil/http lib/facil/http/parsers \
  lib/facil/redis)
CT_CFLAGS  ?= -std=gnu99 -O2 -g -Wall -Wextra -Werror
CT_RPATH_FACIL := $(abspath $(dir $(FACIL_IO_SHARED)))
CT_RPATH_OURS  := $(abspath $(BUILD))

FACIL_IO_FOUND := $(and $(wildcard $(FACIL_IO_DIR)/lib/facil/fio.h),$(wildcard $(FACIL_IO_STATIC)),$(wildcard $(FACIL_IO_SHARED)))
found_or_missing = $(if $(wildcard $(1)),found,MISSING)
FACIL_IO_MISSING = facil.io 0.7.0.beta4 build not found or incomplete (FACIL_IO_DIR=$(FACIL_IO_DIR) [lib/facil/fio.h $(call found_or_missing,$(FACIL_IO_DIR)/lib/facil/fio.h)], FACIL_IO_STATIC=$(FACIL_IO_STATIC) [$(call found_or_missing,$(FACIL_IO_STATIC))], FACIL_IO_SHARED=$(FACIL_IO_SHARED) [$(call found_or_missing,$(FACIL_IO_SHARED))]); set these make variables to run the C suite

# C programs of the suite, per link mode:
#   static   libfio_tls.a before libfacil.io.a               (works)
#   shared   libfio_tls.so before libfacil.io.so (DT_NEEDED) (works)
#   preload  libfacil.io.so only; run with LD_PRELOAD        (works)
#   broken   libfio_tls.so + libfacil.io.a                   (http.c's weak stubs win)
CT_PROGRAMS := fio_server fio_client demo
CT_MODES    := static shared preload broken
CT_BINARIES := $(foreach m,$(CT_MODES),$(addprefix $(CT)/$(m)/,$(CT_PROGRAMS)))
# keep the objects: every link mode reuses them
.SECONDARY: $(addprefix $(CT)/,$(addsuffix .o,$(CT_PROGRAMS)) \
  $(addsuffix .preload.o,$(CT_PROGRAMS)))

.PHONY: all header check check-header-fresh check-rust check-asan scan torture fuzz fuzz-build c-tests demo \
        install uninstall clean FORCE
# the check steps must run in order (cargo itself builds in parallel)
.NOTPARALLEL:

all: $(BUILD)/$(LIBNAME).so $(BUILD)/$(SONAME) $(BUILD)/$(LIBNAME).a

# cargo decides what is stale; make then compares the files' times, so the
# copies and the C programs are only redone when cargo changed something
$(RELEASE)/libfio_tls.so $(RELEASE)/libfio_tls.a &: FORCE
	$(CARGO) build --release $(CARGO_FLAGS)
FORCE:

# The header is generated from the Rust sources by cbindgen, run by a small
# program (examples/gen_header.rs, feature "header": the ordinary build
# needs no cbindgen and never writes into the source tree), and committed.
# `make check` regenerates it into build/ and fails when it differs.
GEN_HEADER := $(CARGO) run --quiet --features header --example gen_header --
ifeq ($(API),beta4)
header:
	$(GEN_HEADER) $(abspath $(HEADER))
else
header:
	@echo "$(HEADER) is kept by hand (make check compares it with the exports); make header writes include/fio_tls.h (API=beta4)" >&2; exit 1
endif

$(BUILD)/$(LIBNAME).so: $(RELEASE)/libfio_tls.so
	@mkdir -p $(BUILD)
	$(say) CP $@
	$(Q)cp -f $< $@
$(BUILD)/$(SONAME): $(BUILD)/$(LIBNAME).so
	$(say) LN $@
	$(Q)ln -sf $(LIBNAME).so $@
ifeq ($(OPENSSL),vendored)
# One relocatable object: the library's code plus the parts of the Rust
# runtime and OpenSSL it reaches (ld -r pulls archive members from the
# seed functions), then every global symbol but fio_tls_* made local (and
# rustc's embedded LLVM bitcode dropped: it is not needed to link, and an
# LLVM plugin of binutils chokes on it once the symbols changed). An
# application linking it and the system's -lssl -lcrypto gets two OpenSSLs
# that never see each other's symbols (c_tests/suites/test_pq_vendored.py).
# The seeds: every function the header declares.
lparen := (
FIO_TLS_SEEDS = $(sort $(if $(filter 0.7,$(API)),$(API07_FUNCTIONS)) $(shell grep -o '^[a-z][a-z_ *]*[ *]fio_tls_[a-z_]*$(lparen)' $(HEADER) | sed 's/.*[ *]\(fio_tls_[a-z_]*\).$$/\1/'))
$(BUILD)/$(LIBNAME).a: $(RELEASE)/libfio_tls.a $(HEADER)
	@mkdir -p $(BUILD)/localize
	$(say) LD $@
	$(Q)$(LD) -r -d -o $(BUILD)/localize/fio_tls.o $(addprefix -u ,$(FIO_TLS_SEEDS)) $<
	$(Q)$(OBJCOPY) --localize-hidden --wildcard --keep-global-symbol='fio_tls_*' \
	  --remove-section=.llvmbc --remove-section=.llvmcmd $(BUILD)/localize/fio_tls.o
	$(Q)rm -f $@
	$(Q)$(AR) rcs $@ $(BUILD)/localize/fio_tls.o
else
$(BUILD)/$(LIBNAME).a: $(RELEASE)/libfio_tls.a
	@mkdir -p $(BUILD)
	$(say) CP $@
	$(Q)cp -f $< $@
endif

# The release-API build (make API=0.7) next to this one: make check builds
# and tests both (c_tests/suites/test_lib07.py; the facil.io 0.7.6 suite
# uses it too).
.PHONY: lib07
lib07:
	@$(MAKE) --no-print-directory API=0.7 OPENSSL=$(OPENSSL) all
check: lib07

# ---------------------------------------------------------------------------
# make check
# ---------------------------------------------------------------------------
# Everything below is built first; then one pytest run (c_tests/conftest.py)
# runs every suite, the Rust tests included, and make check ends with its
# one total line. PYTEST_ARGS passes options (e.g. -k NAME, -x, -v).
# conftest.py's options: where the build and facil.io are, the compiler
# and the static link line (for the suites that compile and link C
# programs themselves), and why facil.io is missing, if it is
# (--opt=VALUE: a value that starts with '-', such as -lm, stays a value)
PYTEST_PATHS = --build-dir="$(abspath $(BUILD))" --facil-dir="$(abspath $(FACIL_IO_DIR))" \
  --facil-static="$(abspath $(FACIL_IO_STATIC))" --facil-shared="$(abspath $(FACIL_IO_SHARED))" \
  --cc="$(CC)" --static-libs="$(FIO_TLS_STATIC_LIBS)" \
  --openssl=$(OPENSSL) --cargo-target-dir="$(abspath $(CARGO_TARGET))" --pc-requires="$(PC_REQUIRES)" \
  $(if $(FACIL_IO_FOUND),,--facil-missing="$(FACIL_IO_MISSING)")
# the scanners (marker scan) are make scan's, not make check's
check: check-header-fresh all check-programs check-programs07
	$(call run_pytest,pytest,c_tests -m "not scan")

# The committed header must be what `make header` would write now.
ifneq ($(API),beta4)
check-header-fresh:
	@echo "make check builds and tests both APIs: run it without API=$(API) (make API=$(API) check-rust runs this build's Rust tests)" >&2; exit 1
else
check-header-fresh:
	@mkdir -p $(BUILD)
	@test -f $(HEADER) || { echo "FAIL - $(HEADER) is missing (make header writes it; commit it)"; exit 1; }
	$(GEN_HEADER) $(abspath $(BUILD))/fio_tls.h.generated
	@if ! cmp -s $(BUILD)/fio_tls.h.generated $(HEADER); then \
	  diff -u $(HEADER) $(BUILD)/fio_tls.h.generated; \
	  echo "FAIL - $(HEADER) is stale: the Rust sources generate the header above (diff -u committed generated); run make header and commit it"; \
	  exit 1; fi
	@echo "ok - $(HEADER) is what the sources generate"
endif

check-rust:
	$(CARGO) test --release $(CARGO_FLAGS)

# only the header on the include path: it must be self-contained (the C
# object is the check; c_tests/suites/test_library.py reads the C++ one)
$(CT)/header_check_c.o: c_tests/programs/header_check.c $(HEADER)
	@mkdir -p $(CT)
	$(say) CC $@
	$(Q)$(CC) -std=c99 -Wall -Wextra -Werror -pedantic -Iinclude -c $< -o $@
$(CT)/header_check_cxx.o: c_tests/programs/header_check.c $(HEADER)
	@mkdir -p $(CT)
	$(say) CXX $@
	$(Q)$(CXX) -Wall -Wextra -Werror -x c++ -Iinclude -c $< -o $@

# (c_tests/suites/test_install.py runs `make install` into a scratch
# DESTDIR itself and looks at the result)


# ---------------------------------------------------------------------------
# C programs against facil.io
# ---------------------------------------------------------------------------
c-tests: all $(CT_BINARIES)

$(CT)/%.o: c_tests/programs/%.c $(HEADER) c_tests/programs/https_headers.h c_tests/programs/preload_trust.h
	@mkdir -p $(CT)
	$(say) CC $@
	$(Q)$(CC) $(CT_CFLAGS) -Iinclude $(FACIL_IO_INCLUDES) -c $< -o $@

$(CT)/static/%: $(CT)/%.o $(BUILD)/libfio_tls.a
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) -o $@ $< $(BUILD)/libfio_tls.a $(FACIL_IO_STATIC) $(FIO_TLS_STATIC_LIBS)

$(CT)/shared/%: $(CT)/%.o $(BUILD)/libfio_tls.so $(BUILD)/$(SONAME)
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) -o $@ $< $(BUILD)/libfio_tls.so $(FACIL_IO_SHARED) \
	  -Wl,-rpath,$(CT_RPATH_OURS):$(CT_RPATH_FACIL) -lpthread -lm

# LD_PRELOAD programs link facil.io only, which lacks the extension
# fio_tls_trust: -DFIO_TESTS_PRELOAD makes the programs reference it weakly,
# and -DFIO_TLS_NO_LINK_CHECK turns off the header's link check (its
# reference to a function only libfio_tls defines)
$(CT)/%.preload.o: c_tests/programs/%.c $(HEADER) c_tests/programs/https_headers.h c_tests/programs/preload_trust.h
	@mkdir -p $(CT)
	$(say) CC $@
	$(Q)$(CC) $(CT_CFLAGS) -DFIO_TESTS_PRELOAD -DFIO_TLS_NO_LINK_CHECK -Iinclude $(FACIL_IO_INCLUDES) -c $< -o $@

$(CT)/preload/%: $(CT)/%.preload.o
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) -o $@ $< $(FACIL_IO_SHARED) -Wl,-rpath,$(CT_RPATH_FACIL) -lpthread -lm

$(CT)/broken/%: $(CT)/%.o $(BUILD)/libfio_tls.so $(BUILD)/$(SONAME)
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) -o $@ $< $(BUILD)/libfio_tls.so $(FACIL_IO_STATIC) \
	  -Wl,-rpath,$(CT_RPATH_OURS) -lpthread -lm

# the vendored .a next to the system's libssl: the program's own calls go
# to the system OpenSSL, the library's to its own
.SECONDARY: $(CT)/isolation.o
$(CT)/static/isolation: $(CT)/isolation.o $(BUILD)/libfio_tls.a
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) -o $@ $< $(BUILD)/libfio_tls.a $(FACIL_IO_STATIC) $(SYSTEM_SSL_LIBS)

# ---------------------------------------------------------------------------
# API misuse table (c_tests/programs/misuse.c, driven by
# c_tests/suites/test_misuse.py in make check's pytest run)
# ---------------------------------------------------------------------------
# misuse links libfio_tls only; misuse_facil adds facil.io (bad uuids); the
# suite's log/SSLKEYLOGFILE tests run the static fio_server. Without
# facil.io, the tests that need it are skipped with the reason.
MISUSE_DIR := $(BUILD)/misuse
MISUSE_BINS := $(MISUSE_DIR)/misuse
ifneq ($(FACIL_IO_FOUND),)
MISUSE_BINS += $(MISUSE_DIR)/misuse_facil
endif

$(MISUSE_DIR)/misuse: c_tests/programs/misuse.c $(HEADER) $(BUILD)/libfio_tls.a
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) $(CT_CFLAGS) -Iinclude $< -o $@ $(BUILD)/libfio_tls.a $(FIO_TLS_STATIC_LIBS)
$(MISUSE_DIR)/misuse_facil: c_tests/programs/misuse.c $(HEADER) $(BUILD)/libfio_tls.a
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) $(CT_CFLAGS) -DMISUSE_FACIL -Iinclude $(FACIL_IO_INCLUDES) $< -o $@ \
	  $(BUILD)/libfio_tls.a $(FACIL_IO_STATIC) $(FIO_TLS_STATIC_LIBS)

# ASan + UBSan: the C side with gcc's sanitizers, the Rust side instrumented
# with -Zsanitizer=address (stable toolchain, RUSTC_BOOTSTRAP=1) into its own
# target dir; gcc's ASan runtime serves both. OpenSSL and facil.io are not
# instrumented, but every allocation is checked (and leak-checked) anyway.
ASAN_TARGET_DIR ?= target/asan
ASAN_TRIPLE     ?= x86_64-unknown-linux-gnu
ASAN_LIB        := $(ASAN_TARGET_DIR)/$(ASAN_TRIPLE)/debug/libfio_tls.a
ASAN_CFLAGS     ?= -std=gnu99 -O1 -g -Wall -Wextra -Werror -fno-omit-frame-pointer \
                   -fsanitize=address,undefined -fno-sanitize-recover=all
ASAN_BINS := $(MISUSE_DIR)/misuse_asan
ifneq ($(FACIL_IO_FOUND),)
ASAN_BINS += $(MISUSE_DIR)/misuse_facil_asan
endif

$(ASAN_LIB): FORCE
	RUSTFLAGS="-Zsanitizer=address" RUSTC_BOOTSTRAP=1 \
	  $(CARGO) build --lib --target $(ASAN_TRIPLE) --target-dir $(ASAN_TARGET_DIR)
$(MISUSE_DIR)/misuse_asan: c_tests/programs/misuse.c $(HEADER) $(ASAN_LIB)
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) $(ASAN_CFLAGS) -Iinclude $< -o $@ $(ASAN_LIB) $(SYSTEM_SSL_LIBS)
$(MISUSE_DIR)/misuse_facil_asan: c_tests/programs/misuse.c $(HEADER) $(ASAN_LIB)
	@mkdir -p $(@D)
	$(say) CC $@
	$(Q)$(CC) $(ASAN_CFLAGS) -DMISUSE_FACIL -Iinclude $(FACIL_IO_INCLUDES) $< -o $@ \
	  $(ASAN_LIB) $(FACIL_IO_STATIC) $(SYSTEM_SSL_LIBS)

# the misuse table only (-k table: not the server tests), with the ASan
# binaries (MISUSE_BINS), at the default level and at level 5, after the
# sanitizer canary; ends with its own total line
check-asan: $(ASAN_BINS)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	MISUSE_BINS="$(abspath $(ASAN_BINS))" MISUSE_LEVELS=5 MISUSE_CANARY=1 \
	$(PYTEST) c_tests/suites/test_misuse.py -k table $(PYTEST_PATHS) \
	  --basetemp $(abspath $(BUILD))/pytest-asan --summary-file $(BUILD)/asan-total.txt \
	  $(PYTEST_ARGS); \
	status=$$?; \
	cat $(BUILD)/asan-total.txt 2>/dev/null || echo "total: pytest did not finish (exit $$status)"; \
	exit $$status

# run_pytest NAME, ARGS[, ENV]: the pytest run of make check, make torture
# and make scan (scratch in build/NAME; ENV: VAR=value words before it)
run_pytest = @$(3) $(PYTEST) $(2) $(PYTEST_PATHS) --basetemp $(abspath $(BUILD))/$(1) \
	  --summary-file $(BUILD)/$(1)-total.txt $(PYTEST_ARGS); \
	status=$$?; \
	$(if $(FACIL_IO_FOUND),,echo "SKIP facil.io integration: $(FACIL_IO_MISSING)";) \
	$(if $(FACIL_IO_07_FOUND),,echo "SKIP facil.io 0.7.6 integration: $(FACIL_IO_07_MISSING)";) \
	cat $(BUILD)/$(1)-total.txt 2>/dev/null || echo "total: pytest did not finish (exit $$status)"; \
	exit $$status

# ---------------------------------------------------------------------------
# scanners and interop matrix (c_tests/suites/test_scan.py, marker scan);
# missing tools are installed (apt: testssl.sh wrk nghttp2-client
# gnutls-bin; PyPI: sslyze in build/scan-venv; SCAN_NO_INSTALL=1 does not)
# ---------------------------------------------------------------------------
scan: all check-programs
	$(call run_pytest,pytest-scan,c_tests/suites/test_scan.py -m scan -s)

# ---------------------------------------------------------------------------
# fuzzing (fuzz/, cargo-fuzz + libFuzzer, ASan; needs `cargo install cargo-fuzz`)
# ---------------------------------------------------------------------------
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= server_handshake key_cert_files
# extra libFuzzer flags, e.g. FUZZ_FLAGS=-jobs=2
FUZZ_FLAGS   ?=
FUZZ_ENV     := RUSTC_BOOTSTRAP=1
fuzz-build:
	cd fuzz && $(FUZZ_ENV) $(CARGO) fuzz build
# each target runs FUZZ_SECONDS on its corpus (fuzz/corpus/, not committed)
# seeded from fuzz/seeds/; a crash leaves the input in fuzz/artifacts/
# (copy it to fuzz/regressions/<target>/: cargo test replays those)
fuzz: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  mkdir -p fuzz/corpus/$$t fuzz/artifacts/$$t; \
	  (cd fuzz && $(FUZZ_ENV) $(CARGO) fuzz run $$t corpus/$$t seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	    -print_final_stats=1 $(FUZZ_FLAGS)) \
	  || { echo "FUZZ FAILURE in $$t: the input is in fuzz/artifacts/$$t"; exit 1; }; \
	done

# ---------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------
ifeq ($(FACIL_IO_FOUND),)
demo:
	@echo "demo needs a facil.io 0.7.0.beta4 build: set FACIL_IO_DIR, FACIL_IO_STATIC, FACIL_IO_SHARED" >&2; exit 1
else
demo: all $(CT)/static/demo
ifeq ($(ACME),pebble)
	$(PYTHON) c_tests/acme_demo.py $(CT)/static/demo $(DEMO_PORT)
else
	$(CT)/static/demo $(DEMO_PORT)
endif
endif

# ---------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------
# pkg-config name (fio_tls.pc, or fio_tls07.pc for API=0.7)
PC_NAME := $(patsubst lib%,%,$(LIBNAME))
install: all
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 0755 $(RELEASE)/libfio_tls.so $(DESTDIR)$(LIBDIR)/$(LIBNAME).so.$(VERSION)
	$(say) LN $@
	$(Q)ln -sf $(LIBNAME).so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	$(say) LN $@
	$(Q)ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/$(LIBNAME).so
	install -m 0644 $(BUILD)/$(LIBNAME).a $(DESTDIR)$(LIBDIR)/$(LIBNAME).a
ifneq ($(INSTALL_STRIP),0)
	$(STRIP) --strip-debug $(DESTDIR)$(LIBDIR)/$(LIBNAME).so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(LIBNAME).a
endif
	install -m 0644 $(HEADER) $(DESTDIR)$(INCLUDEDIR)/$(notdir $(HEADER))
	printf '%s\n' \
	  'prefix=$(PREFIX)' \
	  'libdir=$(LIBDIR)' \
	  'includedir=$(INCLUDEDIR)' \
	  '' \
	  'Name: $(PC_NAME)' \
	  'Description: $(PC_DESCRIPTION)' \
	  'Version: $(VERSION)' \
	  $(if $(PC_REQUIRES),'Requires.private: $(PC_REQUIRES)') \
	  'Libs: -L$${libdir} -l$(PC_NAME)' \
	  'Libs.private: $(FIO_TLS_STATIC_LIBS)' \
	  'Cflags: -I$${includedir}' \
	  > $(DESTDIR)$(PKGCONFIGDIR)/$(PC_NAME).pc
	chmod 0644 $(DESTDIR)$(PKGCONFIGDIR)/$(PC_NAME).pc

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/$(LIBNAME).so $(DESTDIR)$(LIBDIR)/$(SONAME) \
	  $(DESTDIR)$(LIBDIR)/$(LIBNAME).so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(LIBNAME).a \
	  $(DESTDIR)$(INCLUDEDIR)/$(notdir $(HEADER)) $(DESTDIR)$(PKGCONFIGDIR)/$(PC_NAME).pc

clean:
	$(CARGO) clean
	rm -rf $(BUILD) c_tests/__pycache__

# ---------------------------------------------------------------------------
# torture suite (issue 4): hostile and heavy traffic against a real facil.io
# (c_tests/suites/test_torture.py, `fio_server torture` in static mode)
#   make torture   full counts (~4 min idle; item 8 runs 10 000 connections
#                  under valgrind, much longer on a busy machine), every
#                  item's figures printed
#   make check     runs the same items with the quick counts (~1.5 min)
# VALGRIND names valgrind for item 8 (not found: the item is skipped).
# ---------------------------------------------------------------------------
VALGRIND ?= valgrind
.PHONY: torture
torture: all check-programs
	$(call run_pytest,pytest-torture,c_tests/suites/test_torture.py --torture-full -s,VALGRIND=$(VALGRIND))

# ---------------------------------------------------------------------------
# benchmarks (issue 6): make bench [BENCH_QUICK=1] [BENCH_ARGS="--reps 5"]
# Installs nginx, h2load (nghttp2-client) and wrk with apt-get when missing
# (and stops the service the nginx package may start), runs bench/bench.py
# on the static fio_server (its mode `bench`, c_tests/programs/fio_server.c),
# which prints the table and writes bench/results.md. Loopback only.
# ---------------------------------------------------------------------------
BENCH_BIN  := $(CT)/static/fio_server
BENCH_ARGS ?=
.PHONY: bench bench-deps

bench-deps:
	@missing=""; \
	for pair in nginx:nginx h2load:nghttp2-client wrk:wrk taskset:util-linux; do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || [ -x /usr/sbin/$${pair%%:*} ] || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "bench: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  (service nginx stop || /usr/sbin/nginx -s stop) >/dev/null 2>&1 || true; \
	fi

# The vendored column (BENCH_VENDORED=0 leaves it out): the same
# fio_server linked with build/vendored/libfio_tls.a, and the
# X25519MLKEM768 client examples/bench_handshakes.rs (OpenSSL 3.5).
BENCH_VENDORED ?= 1
BENCH_VENDORED_BIN := build/vendored/c_tests/static/fio_server
BENCH_PQ_CLIENT    := target/vendored/release/examples/bench_handshakes
.PHONY: bench-server bench-vendored
bench-server: $(BENCH_BIN)
bench-vendored:
	$(MAKE) --no-print-directory OPENSSL=vendored all bench-server
	$(CARGO) build --release --features vendored --target-dir target/vendored --example bench_handshakes

ifeq ($(OPENSSL),vendored)
bench:
	@echo "make bench measures both builds: run it without OPENSSL=vendored (BENCH_VENDORED=0 leaves the vendored column out)" >&2; exit 1
else ifeq ($(FACIL_IO_FOUND),)
bench:
	@echo "SKIP bench: facil.io 0.7.0.beta4 build not found or incomplete (FACIL_IO_DIR=$(FACIL_IO_DIR), FACIL_IO_STATIC=$(FACIL_IO_STATIC)); set these make variables to run it"
else
bench: all bench-deps $(BENCH_BIN) $(if $(filter-out 0,$(BENCH_VENDORED)),bench-vendored)
	$(PYTHON) bench/bench.py --server-bin $(BENCH_BIN) --work $(BUILD)/bench/run $(if $(filter-out 0,$(BENCH_QUICK)),--quick) \
	  --so $(BUILD)/libfio_tls.so \
	  $(if $(filter-out 0,$(BENCH_VENDORED)),--vendored-server-bin $(BENCH_VENDORED_BIN) --pq-client $(BENCH_PQ_CLIENT) \
	  --so-vendored build/vendored/libfio_tls.so) $(BENCH07_ARGS) $(BENCH_ARGS)
endif

# ---------------------------------------------------------------------------
# what make check runs its suites on
# ---------------------------------------------------------------------------
CHECK_PROGRAMS := $(CT)/header_check_c.o $(CT)/header_check_cxx.o $(MISUSE_BINS)
ifneq ($(FACIL_IO_FOUND),)
CHECK_PROGRAMS += $(CT_BINARIES)
# two OpenSSLs in one process (c_tests/suites/test_pq_vendored.py)
ifeq ($(OPENSSL),vendored)
CHECK_PROGRAMS += $(CT)/static/isolation
endif
endif
.PHONY: check-programs
check-programs: all $(CHECK_PROGRAMS)

# the facil.io 0.7.x release API's programs, suite, table and bench rows
include c_tests/api07.mk
