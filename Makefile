# PocketSAM: the two commands of the README are `make demo` and `make test`.
SWIFT ?= swift
CONFIG ?= release

.PHONY: all build test demo checkpoints clean

all: build

build:
	$(SWIFT) build -c $(CONFIG)

checkpoints: .cache/lite_medsam.pth

.cache/lite_medsam.pth:
	scripts/fetch-litemedsam.sh

# Quantizes the real LiteMedSAM checkpoint to int8 and prints what was detected and stored.
demo: checkpoints build
	.build/$(CONFIG)/pocketsam-quantize .cache/lite_medsam.pth -o .cache/lite_medsam.psam --report

# Every test, in release mode (numerics are only meaningful optimised), with the real checkpoint.
test: checkpoints
	$(SWIFT) build -c $(CONFIG) --build-tests
	$(SWIFT) test -c $(CONFIG) --skip-build

clean:
	rm -rf .build
