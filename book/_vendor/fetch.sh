#!/bin/sh
# Re-create book/_vendor/ from the npm registry (`make vendor`). Needs npm; the result is committed, so building
# the book never needs npm or a network. Only the files the site loads are kept, with their licences.
set -eu
MATHJAX=mathjax@3.2.2
HTML_MANAGER=@jupyter-widgets/html-manager@1.0.15
FONT_AWESOME=@fortawesome/fontawesome-free@5.15.4   # the version bundled in embed.js; only its licence is kept

here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
for spec in "$MATHJAX" "$HTML_MANAGER" "$FONT_AWESOME"; do
  name=$(echo "$spec" | sed 's/^@//; s/@.*//; s,/,-,')
  mkdir "$name"
  tar xzf "$(npm pack --silent "$spec")" -C "$name"
done

# html-manager's npm package ships no licence file: keep ours (ipywidgets' BSD-3-Clause LICENSE, same project).
cp "$here/html-manager/LICENSE" html-manager-LICENSE
rm -rf "$here/mathjax" "$here/html-manager"
mkdir -p "$here/mathjax/output/chtml/fonts" "$here/html-manager"
# MathJax 3: the TeX-to-CHTML component with every TeX extension built in (nothing is loaded on demand),
# and the CHTML fonts it loads relative to itself.
cp mathjax/package/es5/tex-chtml-full.js mathjax/package/LICENSE "$here/mathjax/"
cp -r mathjax/package/es5/output/chtml/fonts/woff-v2 "$here/mathjax/output/chtml/fonts/"
# The widget manager for static pages (no require.js needed), the Font Awesome fonts it loads relative to
# itself (woff2 only: every browser that runs embed.js takes the woff2 source), and the licences.
hm=jupyter-widgets-html-manager/package/dist
cp "$hm/embed.js" "$hm/embed.js.LICENSE.txt" "$hm"/*.woff2 "$here/html-manager/"
cp fortawesome-fontawesome-free/package/LICENSE.txt "$here/html-manager/fontawesome-LICENSE.txt"
cp html-manager-LICENSE "$here/html-manager/LICENSE"
echo "book/_vendor: $MATHJAX, $HTML_MANAGER, licence of $FONT_AWESOME"
