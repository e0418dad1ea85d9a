#!/usr/bin/env bash
# The side-by-side benchmark against the real Smithers server, in one command:
#
#   bench/peer/run.sh            # full run, prints the table
#   bench/peer/run.sh --write    # ... and records it in bench/README.md + bench/peer/results.svg
#   bench/peer/run.sh --quick    # smoke run with tiny samples
#
# 1. installs the pinned Smithers (smithers-orchestrator 0.32.0 and bun 1.3.14 from
#    npm, the tree locked in package-lock.json) into bench/peer/node_modules (git-ignored),
#    only when missing or out of date;
# 2. builds smithers-host and the benchmark in release mode (the example guests are
#    built by the benchmark itself);
# 3. runs `server --peer`: both servers on 127.0.0.1, the same workloads through the
#    same Rust client, one server after the other. Bounded: a full run takes ~6 min.
#
# Needs: node + npm (for the install only), cargo with the wasm32-wasip2 target.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

stamp="$here/node_modules/.installed-lock"
if [[ ! -x "$here/node_modules/.bin/bun" ]] || ! cmp -s "$here/package-lock.json" "$stamp"; then
  echo "== installing the pinned Smithers into bench/peer/node_modules" >&2
  # `npm install --no-save` installs the locked tree and leaves the lock file
  # as committed (`npm ci` refuses it: it lacks entries for other platforms'
  # optional packages).
  (cd "$here" && npm install --no-save --no-audit --no-fund --loglevel=error)
  cp "$here/package-lock.json" "$stamp"
fi
echo "== $("$here/node_modules/.bin/bun" --version | sed 's/^/bun /'), smithers-orchestrator $(node -p "require('$here/node_modules/smithers-orchestrator/package.json').version")" >&2

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
echo "== building smithers-host and the benchmark (release, $CARGO_TARGET_DIR)" >&2
(cd "$repo" && cargo build --release -p smithers-host --bin smithers-host -p smithers-bench --bin server)

exec "$CARGO_TARGET_DIR/release/server" --peer "$@"
