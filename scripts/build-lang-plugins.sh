#!/usr/bin/env bash
# Build the policy plugin examples written in Python and JavaScript (plugins/examples/) as
# WebAssembly components, installing their toolchains into a cache under target/ first.
#
#   scripts/build-lang-plugins.sh     components land in target/plugins/examples/
#
# componentize-py goes into a pip venv (target/lang-toolchains/py) and componentize-js into an
# npm prefix (target/lang-toolchains/js), each installed once at a pinned version; a component
# is rebuilt only when its source or WIT is newer than it. When python3/pip or node/npm (or
# their registries) are not available the step says why and builds nothing: the tests that
# need the components then skip with that reason (tests/suite/languages.rs).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

COMPONENTIZE_PY_VERSION=0.25.1
COMPONENTIZE_JS_VERSION=0.23.0

tools="$root/target/lang-toolchains"
out="$root/target/plugins/examples"
mkdir -p "$tools" "$out"

# Whether $1 is missing or older than any of the remaining paths (files or directories).
stale() {
    local target=$1
    shift
    [ -f "$target" ] || return 0
    [ -n "$(find "$@" -newer "$target" -print -quit 2>/dev/null)" ]
}

# Why a language was skipped, for the tests to print (one line; removed on success).
skip() {
    local lang=$1 reason=$2
    echo "build-lang-plugins.sh: skipping the $lang policy example: $reason" >&2
    echo "$reason" >"$out/$lang.skipped"
}

# Run a componentizer (the remaining arguments, in directory $3, given "-o OUT" last) and
# install its component as $2; on failure say why and return 1.
componentize() {
    local lang=$1 wasm=$2 dir=$3
    shift 3
    if ! (cd "$dir" && "$@" -o "$wasm.tmp") >"$tools/$lang-build.log" 2>&1; then
        rm -f "$wasm.tmp"
        skip "$lang" "$(basename "$1") failed (see $tools/$lang-build.log)"
        return 1
    fi
    mv "$wasm.tmp" "$wasm"
}

# A language's component is ready: clear its skip reason and show where it is.
built() {
    local lang=$1 wasm=$2
    rm -f "$out/$lang.skipped"
    printf '%-22s %8d bytes  %s\n' "$(basename "$wasm")" "$(wc -c <"$wasm")" "$wasm"
}

build_python() {
    local venv="$tools/py" wasm="$out/python_policy.wasm"
    if ! "$venv/bin/componentize-py" --version 2>/dev/null | grep -q "$COMPONENTIZE_PY_VERSION"; then
        if ! command -v python3 >/dev/null 2>&1; then
            skip python "python3 is not installed"
            return
        fi
        if ! { [ -x "$venv/bin/pip" ] || python3 -m venv "$venv" >"$tools/py-venv.log" 2>&1; }; then
            skip python "python3 -m venv failed (see $tools/py-venv.log)"
            return
        fi
        if ! "$venv/bin/pip" install --quiet "componentize-py==$COMPONENTIZE_PY_VERSION" >"$tools/pip.log" 2>&1; then
            skip python "pip could not install componentize-py $COMPONENTIZE_PY_VERSION (see $tools/pip.log)"
            return
        fi
    fi
    if stale "$wasm" plugins/examples/python-policy wit/policy/v0.2.0; then
        # --stub-wasi: policy plugins are granted no files, and componentize-py's runtime imports
        # wasi:filesystem; the stubs trap if the plugin ever touches WASI.
        componentize python "$wasm" plugins/examples/python-policy \
            "$venv/bin/componentize-py" -d "$root/wit/policy/v0.2.0" -w policy-plugin \
            componentize --stub-wasi app || return
    fi
    built python "$wasm"
}

build_js() {
    local prefix="$tools/js" wasm="$out/js_policy.wasm"
    local bin="$prefix/node_modules/.bin/componentize-js"
    if ! "$bin" --version 2>/dev/null | grep -q "$COMPONENTIZE_JS_VERSION"; then
        if ! command -v npm >/dev/null 2>&1; then
            skip js "node/npm is not installed"
            return
        fi
        if ! npm install --silent --no-audit --no-fund --prefix "$prefix" \
            "@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION" >"$tools/npm.log" 2>&1; then
            skip js "npm could not install @bytecodealliance/componentize-js $COMPONENTIZE_JS_VERSION (see $tools/npm.log)"
            return
        fi
    fi
    if stale "$wasm" plugins/examples/js-policy wit/policy/v0.1.0; then
        # --disable all: no stdio, clocks, random or HTTP imports, which policy plugins do not
        # need (and are mostly not granted).
        componentize js "$wasm" plugins/examples/js-policy \
            "$bin" policy.js --wit "$root/wit/policy/v0.1.0" -n policy-plugin \
            -d stdio random clocks http fetch-event || return
    fi
    built js "$wasm"
}

build_python
build_js
# Never fails the build: a missing toolchain is reported above and by the tests that skip.
exit 0
