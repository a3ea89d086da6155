#!/usr/bin/env bash
# The README's main command: installs dependencies, builds the example trainer
# against Debian's LibTorch and runs the demo preset (CE with its cRT stage,
# LDAM-DRW and the default DRO-LT recipe on Fashion-MNIST-LT, from Debian's
# dataset-fashion-mnist). Extra arguments go to drolt_train, e.g.
# `scripts/demo.sh --out-dir out/demo`.
#
# DEMO_RECORD=1: also keep the run (summary.json, table.md) and its timing in
# docs/data/demo/ and regenerate the README's demo lines from them
# (scripts/results_table.py). Time it on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s.%N)
bash scripts/install-deps.sh
source scripts/lib/configure.sh
build=${BUILD_DIR:-build/demo}
BUILD_TYPE=Release drolt_configure_debian "$build" -DDROLT_BUILD_TESTS=OFF -DDROLT_BUILD_EXAMPLES=ON
cmake --build "$build" -j "${JOBS:-2}" --target drolt_train
if [[ "${DEMO_RECORD:-}" != 1 ]]; then
  exec "$build/examples/drolt_train" --preset demo "$@"
fi
out=out/demo
"$build/examples/drolt_train" --preset demo --out "$out" "$@"
t1=$(date +%s.%N)
dst=docs/data/demo
mkdir -p "$dst"
cp "$out/summary.json" "$out/table.md" "$dst/"
source scripts/lib/host.sh
cpu=$(drolt_cpu_model)
python3 - "$dst" "$cpu" "$t0" "$t1" "$(git rev-parse --short HEAD)" "$*" <<'PY'
import datetime, json, os, sys
dst, cpu, t0, t1, commit, extra = sys.argv[1:7]
s = json.load(open(os.path.join(dst, "summary.json")))
j = dict(cpu=cpu, threads=s.get("threads"), commit=commit, date=datetime.date.today().isoformat(),
         train_s=s["wall_seconds"], total_s=float(t1) - float(t0),
         command="DEMO_RECORD=1 bash scripts/demo.sh" + (" " + extra if extra else ""))
json.dump(j, open(os.path.join(dst, "timing.json"), "w"), indent=1)
PY
python3 scripts/results_table.py --data docs/data/results --out docs/results.md --figures docs/figures \
  --readme README.md --demo-data "$dst"
echo "demo kept in $dst; README.md's demo lines regenerated"
