#!/usr/bin/env bash
# Build the policy plugins in plugins/ as WebAssembly components (wasm32-wasip2, release).
#
#   scripts/build-plugins.sh          build; components land in target/plugins/wasm32-wasip2/release/
#   scripts/build-plugins.sh --test   also run the plugins' unit tests (natively)
#
# It also builds the Python and JavaScript policy examples (scripts/build-lang-plugins.sh),
# into target/plugins/examples/.
#
# host/build.rs runs the same build (same target dir and flags), so after this script the
# host build finds everything up to date. RUSTFLAGS are not passed to the plugin build:
# flags meant for the host (say -C target-cpu=native) do not belong in a wasm component.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

run_tests=false
for arg in "$@"; do
    case "$arg" in
        --test) run_tests=true ;;
        -h | --help)
            sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "build-plugins.sh: unknown argument: $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

libdir=$(rustc --print target-libdir --target wasm32-wasip2 2>/dev/null || true)
if [ -z "$libdir" ] || [ ! -d "$libdir" ]; then
    echo "error: the wasm32-wasip2 target is not installed; run: rustup target add wasm32-wasip2" >&2
    exit 1
fi

export CARGO_TARGET_DIR="$root/target/plugins"
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS

cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml --workspace

# A wasm32-wasip2 cdylib or binary is linked into a component by wasm-component-ld. A
# component starts with `\0asm` and the version/layer bytes 0d 00 01 00 (a core module has
# 01 00 00 00).
out="$CARGO_TARGET_DIR/wasm32-wasip2/release"
for name in ampersand env workdir deny npm_ci faulty_trap faulty_spin faulty_hog faulty_wrong_world faulty_sleep faulty_filesystem faulty_questions tool_serve tool_test_summary faulty_tool; do
    file="$out/$name.wasm"
    if [ ! -f "$file" ]; then
        echo "error: $file was not built" >&2
        exit 1
    fi
    magic=$(head -c 8 "$file" | od -An -tx1 | tr -d ' \n')
    if [ "$magic" != "0061736d0d000100" ]; then
        echo "error: $file is not a WebAssembly component (header $magic)" >&2
        exit 1
    fi
    printf '%-22s %8d bytes  %s\n' "$name.wasm" "$(wc -c <"$file")" "$file"
done

# The Python and JavaScript examples (plugins/examples/), with toolchains cached under target/.
scripts/build-lang-plugins.sh

if $run_tests; then
    # Native target: the decision logic is plain Rust; the wasm glue compiles to nothing.
    cargo test --manifest-path plugins/Cargo.toml --workspace
fi
