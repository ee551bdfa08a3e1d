#!/usr/bin/env bash
# Vendor the browser code the built book needs, so that pages work offline.
#
# Usage: bash tools/vendor_js.sh DEST        (the Makefile uses DEST=_vendor)
#
# By default Jupyter Book pages load require.js, the ipywidgets HTML manager and
# MathJax from CDNs; offline the math stays raw and widgets stay blank. This
# script fetches three pinned npm packages and copies only what the pages load
# into DEST, which _config.yml lists in html_static_path:
#
#   DEST/require.js                      requirejs 2.3.7
#   DEST/widgets/embed-amd.js (+ fonts)  @jupyter-widgets/html-manager 1.0.15
#   DEST/widgets/compat.js               tools/widgets_compat.js (font path, MathJax 3)
#   DEST/mathjax/tex-chtml.js (+ ...)    mathjax 3.2.2, es5 build, trimmed
#
# DEST must not be _static/: Jupyter Book adds every .js under _static/ to every
# page. DEST/.vendored is written last and names the pinned versions; when it is
# already there with the same content the script does nothing (idempotent).
#
# `npm pack` fetches exactly the three tarballs (the dist bundles are
# self-contained, so no dependency tree is installed and no install scripts run)
# through npm's own cache (so a re-run works offline once fetched), and we check
# each against the sha512 pinned below.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 DEST" >&2
    exit 2
fi
DEST=$1

HTML_MANAGER=@jupyter-widgets/html-manager@1.0.15
REQUIREJS=requirejs@2.3.7
MATHJAX=mathjax@3.2.2
# sha512 integrity of each tarball, as published on registry.npmjs.org
declare -A INTEGRITY=(
    [jupyter-widgets-html-manager-1.0.15.tgz]="sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA=="
    [requirejs-2.3.7.tgz]="sha512-DouTG8T1WanGok6Qjg2SXuCMzszOo0eHeH9hDZ5Y4x8Je+9JB38HdTLT4/VA8OaUhBa0JPVHJ0pyBkM1z+pDsw=="
    [mathjax-3.2.2.tgz]="sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="
)
HERE=$(cd "$(dirname "$0")" && pwd)
COMPAT=$HERE/widgets_compat.js
# The stamp names the shim by its content, so an edited shim is copied again.
STAMP="$HTML_MANAGER $REQUIREJS $MATHJAX compat:$(cksum < "$COMPAT" | cut -d' ' -f1)"

if [ -f "$DEST/.vendored" ] && [ "$(cat "$DEST/.vendored")" = "$STAMP" ]; then
    echo "vendor_js: $DEST is up to date ($STAMP)"
    exit 0
fi

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    cat >&2 <<'EOF'
vendor_js: error: npm (with node) was not found.
The book's pages need require.js, the ipywidgets HTML manager and MathJax served
locally (no CDN at view time), and this script fetches them from the npm registry.
Install Node.js and npm (Debian/Ubuntu: apt-get install -y npm), then re-run
`make vendor` (or `bash tools/vendor_js.sh _vendor`).
EOF
    exit 1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vendor_js.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

echo "vendor_js: fetching $STAMP"
(cd "$WORK" && npm pack --silent "$HTML_MANAGER" "$REQUIREJS" "$MATHJAX" >/dev/null)

for tgz in "${!INTEGRITY[@]}"; do
    got=$(node -e 'const c=require("crypto"),f=require("fs");
        process.stdout.write("sha512-"+c.createHash("sha512")
            .update(f.readFileSync(process.argv[1])).digest("base64"))' "$WORK/$tgz")
    if [ "$got" != "${INTEGRITY[$tgz]}" ]; then
        echo "vendor_js: error: $tgz does not match its pinned sha512" >&2
        exit 1
    fi
    mkdir -p "$WORK/${tgz%.tgz}"
    tar -xzf "$WORK/$tgz" -C "$WORK/${tgz%.tgz}"
done

HM=$WORK/jupyter-widgets-html-manager-1.0.15/package
RJ=$WORK/requirejs-2.3.7/package
MJ=$WORK/mathjax-3.2.2/package

# Stage next to DEST and swap in at the end, so a failed run never leaves a
# half-filled DEST that looks complete.
STAGE=$(mktemp -d "$(dirname "$DEST")/.vendor_stage.XXXXXX")
trap 'rm -rf "$WORK" "$STAGE"' EXIT

# require.js: the AMD loader that embed-amd.js registers with.
cp "$RJ/require.js" "$STAGE/require.js"

# Widget manager: embed-amd.js finds its fonts next to itself (webpack public
# path = the module's own URL), so they go in the same folder. The other bundles
# (embed.js, libembed-amd.js, source maps) are not loaded by the pages.
mkdir -p "$STAGE/widgets"
cp "$HM/dist/embed-amd.js" "$STAGE/widgets/"
cp "$HM/dist/"*.woff2 "$HM/dist/"*.woff "$HM/dist/"*.ttf "$HM/dist/"*.eot \
   "$HM/dist/"*.svg "$STAGE/widgets/"
cp "$COMPAT" "$STAGE/widgets/compat.js"
[ -f "$HM/dist/embed.js.LICENSE.txt" ] && cp "$HM/dist/embed.js.LICENSE.txt" "$STAGE/widgets/LICENSES.txt"

# MathJax: the tex-chtml combined component, the extensions that \require or the
# autoloader may fetch, the CHTML woff fonts, and the menu and assistive parts the
# context menu loads on demand. Left out: SVG output, MathML/AsciiMath input,
# other combined components and the 4 MB speech-rule engine.
ES5=$MJ/es5
mkdir -p "$STAGE/mathjax/input/tex" "$STAGE/mathjax/output/chtml/fonts" \
         "$STAGE/mathjax/ui" "$STAGE/mathjax/a11y"
cp "$ES5/tex-chtml.js" "$STAGE/mathjax/"
cp -r "$ES5/input/tex/extensions" "$STAGE/mathjax/input/tex/"
cp -r "$ES5/output/chtml/fonts/woff-v2" "$STAGE/mathjax/output/chtml/fonts/"
cp "$ES5/ui/"*.js "$STAGE/mathjax/ui/"
for f in assistive-mml complexity explorer semantic-enrich; do
    cp "$ES5/a11y/$f.js" "$STAGE/mathjax/a11y/"
done
cp "$MJ/LICENSE" "$STAGE/mathjax/LICENSE"

rm -rf "$DEST"
mv "$STAGE" "$DEST"
chmod 755 "$DEST"
echo "$STAMP" > "$DEST/.vendored"
echo "vendor_js: wrote $DEST ($(du -sh "$DEST" | cut -f1))"
