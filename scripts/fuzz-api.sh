#!/usr/bin/env bash
# Fuzz the HTTP API from docs/openapi.json with schemathesis, bounded in time (FUZZ_SECONDS,
# default 120). Fails on any 5xx, any error body that is not JSON, or any response that does
# not match the description. Needs the release binary (cargo build --release -p procwarden).
# Extra arguments go to `schemathesis run` (e.g. `--report har --report-dir DIR`).
#
# Besides examples, coverage and random fuzzing per operation, the stateful phase follows the
# links in the description from a start reply's `id` to output/input/resize/signal, so those
# routes are exercised on real processes rather than only on random ids (404).
#
# Fuzzed starts run `sh -c` with random strings, so the agent runs in a throw-away directory
# (its workdir and HOME), with a small process limit, a short wait cap and only PATH inherited,
# and is stopped at the end, which kills every process tree it started.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-120}
venv=target/schemathesis-venv
# Cached under target/: reinstalled only when missing or broken (a venv names its own
# absolute path, so a moved checkout leaves one that no longer runs).
if ! "$venv/bin/schemathesis" --version >/dev/null 2>&1; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'schemathesis==4.*'
fi
work=$(mktemp -d)
agent_pid=
cleanup() {
    if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
        kill -TERM "$agent_pid"
        wait "$agent_pid" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/home" "$work/project"
cat >"$work/procwarden.toml" <<TOML
workdir = "$work/project"
wait_cap_seconds = 2
request_timeout_seconds = 10
max_processes = 16
max_processes_per_chat = 8
shutdown_grace_seconds = 1
reap_age_seconds = 5

[env]
inherit = ["PATH"]
TOML
# Stateful testing starts its scenarios from operations it deems likely to succeed; links it
# infers on its own (GET /api/v0/tools -> POST /api/v0/tools/{name}) would take that role from
# POST /api/v0/processes/start, so only the links in the description are followed.
cat >"$work/schemathesis.toml" <<TOML
[phases.stateful.inference]
algorithms = []
TOML
HOME="$work/home" target/release/procwarden serve --listen 127.0.0.1:0 --config "$work/procwarden.toml" \
    >"$work/stdout" 2>"$work/stderr" &
agent_pid=$!
url=
for _ in $(seq 100); do
    url=$(sed -n 's/^procwarden listening on //p' "$work/stdout")
    [ -n "$url" ] && break
    kill -0 "$agent_pid" 2>/dev/null || { cat "$work/stderr"; exit 1; }
    sleep 0.1
done
[ -n "$url" ] || { echo "fuzz-api: the agent did not start"; cat "$work/stderr"; exit 1; }
echo "fuzz-api: fuzzing $url for at most ${seconds}s"
"$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" run docs/openapi.json --url "$url" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing,stateful \
    --max-time "$seconds" --request-timeout 20 --generation-allow-x00 false \
    --no-color "$@"
