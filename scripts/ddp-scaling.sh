#!/usr/bin/env bash
# DDP scaling on this machine's CPUs: the small CIFAR ResNet (78 k parameters) trained by the
# CIFAR-10 example on synthetic CIFAR-format data, on 1 process and on 2 processes under
# mpirun (one thread each, so that 2 processes use what 1 process with 2 threads would), in
# the same run. Prints images/s of each, their ratio, and rank 0's share of time in
# collectives. Needs OpenMPI (apt-get install openmpi-bin libopenmpi-dev libclang-dev).
#
#   scripts/ddp-scaling.sh [EPOCHS] [IMAGES_PER_FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-3}
per_file=${2:-512}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

cargo build --release --features mpi --example cifar10 >&2
bin=target/release/examples/cifar10
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
python3 - "$data" "$per_file" <<'PY'
import os, random, sys
out, n = sys.argv[1], int(sys.argv[2])
random.seed(0)
d = os.path.join(out, "cifar-10-batches-bin"); os.makedirs(d)
def records(k):
    return b"".join(bytes([i % 10]) + random.randbytes(3072) for i in range(k))
for f in range(1, 6):
    open(os.path.join(d, f"data_batch_{f}.bin"), "wb").write(records(n))
open(os.path.join(d, "test_batch.bin"), "wb").write(records(64))
PY
train=$((5 * per_file - 64))
common=(--data-dir "$data" --arch small --epochs "$epochs" --batch-size 64 --val-size 64
        --num-workers 1 --accelerator cpu --no-progress-bar --no-checkpointing --no-model-summary)

run() { # prints the mean seconds of the epochs after the first
    grep -o '[0-9.]* s$' | awk 'NR > 1 { s += $1; n++ } END { printf "%.3f", s / n }'
}
one=$(RAYON_NUM_THREADS=2 "$bin" "${common[@]}" --default-root-dir "$data/one" | run)
out2=$(RAYON_NUM_THREADS=1 mpirun --oversubscribe --bind-to none -n 2 "$bin" "${common[@]}" \
    --strategy ddp --devices 2 --default-root-dir "$data/two")
two=$(echo "$out2" | run)
share=$(echo "$out2" | grep -o '([0-9.]*%)' | tr -d '()')
python3 - "$train" "$one" "$two" "$share" <<'PY'
import sys
n, one, two, share = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
a, b = n / one, n / two
print(f"1 process,  2 threads : {a:8.0f} images/s")
print(f"2 processes, 1 thread : {b:8.0f} images/s  (ratio {b / a:.2f}; rank 0 in collectives: {share} of fit)")
PY
