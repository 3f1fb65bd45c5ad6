#!/usr/bin/env bash
# Compile time of the CIFAR-10 example (issue 3), in the release profile the README runs it
# with: a clean build of fulmen and the example (registry dependencies already built), a
# rebuild after touching the example, and a rebuild after editing its model (a
# hyperparameter inside the lightning module). The target: rebuilds under 30 s on 2 cores.
#
#   scripts/compile-time.sh
set -euo pipefail
cd "$(dirname "$0")/.."
example=examples/cifar10.rs
backup=$(mktemp)
cp "$example" "$backup"
trap 'cp "$backup" "$example"; rm -f "$backup"' EXIT

# Wall time of one build, in tenths of a second.
tenths() {
    local start end
    start=$(date +%s%N)
    cargo build --release --example cifar10 --quiet
    end=$(date +%s%N)
    echo $(((end - start) / 100000000))
}
show() { printf '%s %d.%d s\n' "$1" $(($2 / 10)) $(($2 % 10)); }

cargo build --release --example cifar10 --quiet  # the dependencies
cargo clean --release --quiet -p fulmen -p fulmen-workspace
clean=$(tenths)
touch "$example"
touched=$(tenths)
sed -i 's/weight_decay(5e-4)/weight_decay(4e-4)/' "$example"
grep -q 'weight_decay(4e-4)' "$example" || { echo "the edit did not apply" >&2; exit 1; }
edited=$(tenths)

printf 'cifar10 example, release, %s cores:\n' "$(nproc)"
show "  clean build (fulmen + example):  " "$clean"
show "  rebuild after touching it:        " "$touched"
show "  rebuild after editing its model:  " "$edited"
