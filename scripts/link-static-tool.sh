#!/usr/bin/env bash
# Links a command-line tool (pocketsam, pocketsam-quantize) again with the Swift runtime and Foundation linked
# statically (swiftc -static-stdlib), from the objects SwiftPM already compiled, so the installed tool runs where
# no Swift toolchain is installed (it still needs OpenBLAS, libturbojpeg, libpng and libstdc++). A link, not a
# second build: about 2 s a tool.
#
# usage: scripts/link-static-tool.sh BUILD PRODUCT OUT
#   BUILD    SwiftPM's products folder after `swift build -c release --product PRODUCT` (.build/release)
#   PRODUCT  the executable product, e.g. pocketsam
#   OUT      the executable to write
#
# The objects are SwiftPM's list for the product (PRODUCT.product/Objects.LinkFileList). SwiftPM renames an
# executable module's entry point to <module>_main (so tests can link the module); --defsym maps main to it, as
# SwiftPM's own link does. Every static archive of the toolchain is offered to the linker in one group, which takes
# only the members the tool refers to: the objects were compiled against the shared runtime's modules, whose
# autolink entries do not name the helper archives the static Foundation needs (_FoundationCShims, ...).
set -euo pipefail
export LC_ALL=C
if [ $# -ne 3 ]; then
  echo "usage: $0 BUILD PRODUCT OUT" >&2
  exit 64
fi
build=$1
product=$2
out=$3
module=${product//-/_}
list="$build/$product.product/Objects.LinkFileList"
if [ ! -f "$list" ]; then
  echo "link-static-tool: $list not found: build the tool first (swift build -c release --product $product)" >&2
  exit 1
fi
swiftc=$(command -v swiftc) || { echo "link-static-tool: swiftc not on PATH" >&2; exit 1; }
static="$(dirname "$(readlink -f "$swiftc")")/../lib/swift_static/linux"
[ -d "$static" ] || { echo "link-static-tool: $static not found: this toolchain has no static runtime" >&2; exit 1; }

args=()
# <module>_main defined by one of the objects: SwiftPM renamed the entry point.
entry=$(sed -e 's/^"//' -e 's/"$//' "$list" | grep "/$module.build/" | xargs nm --defined-only 2>/dev/null \
  | grep -E " T ${module}_main$" || true)
if [ -n "$entry" ]; then
  args+=(-Xlinker --defsym -Xlinker "main=${module}_main")
fi
args+=(-Xlinker --start-group)
for a in "$static"/*.a; do args+=(-Xlinker "$a"); done
args+=(-Xlinker --end-group)

mkdir -p "$(dirname "$out")"
# The warning about mktemp comes from the toolchain's Foundation, not from PocketSAM.
"$swiftc" -static-stdlib -emit-executable -module-name "$module" -L "$build" -o "$out.tmp" \
  -Xlinker --gc-sections "@$list" "${args[@]}" 2> >(grep -v "the use of \`mktemp' is dangerous" >&2)
mv "$out.tmp" "$out"
echo "link-static-tool: $out ($(du -k "$out" | cut -f1) KiB)"
