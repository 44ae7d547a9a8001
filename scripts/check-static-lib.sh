#!/usr/bin/env bash
# Checks libpocketsam.a (scripts/make-static-lib.sh) with nm:
#  - every function include/pocketsam.h declares is defined, as a global text symbol;
#  - no other symbol is global (the Swift runtime, libdispatch and the kernels are local to the archive);
#  - every undefined symbol is defined by one of the system libraries a program links it with: libc, libm, libdl,
#    libpthread, libstdc++, libgcc (libgcc.a, libgcc_s), OpenBLAS, libturbojpeg, libpng (the dynamic loader too, for
#    __tls_get_addr); besides those, only the bounds of the renamed metadata sections (__start_psam_swift5_* and
#    __stop_psam_swift5_*) and __ehdr_start, which the linker defines.
# usage: scripts/check-static-lib.sh LIB [HEADER]   (HEADER defaults to include/pocketsam.h)
# Prints what it found; exits 1 naming each missing or unexpected symbol. Needs nm and a C compiler ($CC).
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 LIB [HEADER]" >&2
  exit 64
fi
lib=$1
header=${2:-"$(cd "$(dirname "$0")/.." && pwd)/include/pocketsam.h"}
cc=${CC:-cc}
for f in "$lib" "$header"; do [ -f "$f" ] || { echo "check-static-lib: $f not found" >&2; exit 1; }; done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export LC_ALL=C
status=0

"$cc" -E -P -x c "$header" | grep -oE '\bpsam_[A-Za-z0-9_]+[[:space:]]*\(' | sed -E 's/[[:space:]]*\($//' \
  | sort -u >"$work/api"
nm -g --defined-only "$lib" | awk 'NF == 3 { print $3, $2 }' | sort -u >"$work/global"
nm -u "$lib" | awk 'NF == 2 { print $2 }' | sort -u >"$work/undefined"

missing=$(join -v1 "$work/api" <(awk '$2 == "T" { print $1 }' "$work/global"))
if [ -n "$missing" ]; then
  echo "check-static-lib: declared in $(basename "$header") but not defined as a global function:" $missing >&2
  status=1
fi
extra=$(join -v1 <(cut -d' ' -f1 "$work/global") "$work/api")
if [ -n "$extra" ]; then
  echo "check-static-lib: global symbols that are not in the API ($(echo "$extra" | wc -l)):" $(echo "$extra" | head -20) >&2
  status=1
fi

# What the system libraries define: the dynamic symbols of each shared library, and libgcc.a's symbols.
need=(libc.so.6 libm.so.6 libstdc++.so.6 libgcc_s.so.1 libopenblas.so.0 libturbojpeg.so.0 libpng16.so.16)
optional=(libdl.so.2 libpthread.so.0 ld-linux-x86-64.so.2 ld-linux-aarch64.so.1)
libs=()
for l in "${need[@]}" "${optional[@]}"; do
  p=$("$cc" -print-file-name="$l")
  if [ -f "$p" ]; then
    libs+=("$l")
    nm -D --defined-only "$p" | awk 'NF == 3 { sub(/@.*/, "", $3); print $3 }' >>"$work/system"
  elif [[ " ${need[*]} " == *" $l "* ]]; then
    echo "check-static-lib: $l not found by $cc (scripts/install-deps.sh installs the libraries)" >&2
    exit 1
  fi
done
nm --defined-only "$("$cc" -print-libgcc-file-name)" 2>/dev/null | awk 'NF == 3 { print $3 }' >>"$work/system"
sort -u -o "$work/system" "$work/system"
unresolved=$(join -v1 "$work/undefined" "$work/system" | grep -vE '^(__(start|stop)_psam_swift5_[A-Za-z0-9_]+|__ehdr_start)$' || true)
if [ -n "$unresolved" ]; then
  echo "check-static-lib: undefined symbols that no system library defines ($(echo "$unresolved" | wc -l)):" \
    $(echo "$unresolved" | head -20) >&2
  status=1
fi

echo "check-static-lib: $lib: $(wc -l <"$work/api") API functions in the header, $(wc -l <"$work/global") global symbols," \
  "$(wc -l <"$work/undefined") undefined symbols (system libraries checked: ${libs[*]} libgcc.a):" \
  "$([ $status = 0 ] && echo ok || echo FAILED)"
exit $status
