#!/usr/bin/env bash
# The full form of every reliability campaign, one after the other, against
# the real smithers-host binary (see docs/reliability.md):
#
#   reliability/full.sh            # debug build, as CI
#   reliability/full.sh --release  # optimized build (compiles the tests in release first)
#
# Sizes can be overridden: SCHEMATHESIS_EXAMPLES (default 200 per operation),
# RELIABILITY_FUZZ_CASES (20000), RELIABILITY_KILLS (100),
# RELIABILITY_SOAK_SECS (600); RELIABILITY_SEED replays a fuzz or crash run.
# Each campaign prints its figures; the script stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export RELIABILITY_FUZZ_CASES=${RELIABILITY_FUZZ_CASES:-20000}
export RELIABILITY_KILLS=${RELIABILITY_KILLS:-100}
export RELIABILITY_SOAK_SECS=${RELIABILITY_SOAK_SECS:-600}

reliability/schemathesis.sh "${SCHEMATHESIS_EXAMPLES:-200}"
for campaign in reliability_openapi reliability_fuzz reliability_crash reliability_soak reliability_storage; do
  echo "== $campaign"
  cargo test "$@" -p smithers-host --test "$campaign" -- --nocapture --test-threads 1
done
