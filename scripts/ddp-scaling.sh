#!/usr/bin/env bash
# Data-parallel scaling on this machine's CPUs: the small CIFAR ResNet (78 k parameters)
# trained by the CIFAR-10 example on synthetic CIFAR-format data, with each strategy (ddp,
# fsdp1 = FSDP's SHARD_GRAD_OP, fsdp = FULL_SHARD) on 1, 2 and 3 processes under mpirun, in
# the same run (2 threads split between the processes). Prints images/s, its ratio to one
# process of the same strategy, the largest peak resident memory of a rank, and rank 0's share
# of time in collectives. Needs OpenMPI (apt-get install openmpi-bin libopenmpi-dev
# libclang-dev) and GNU time (/usr/bin/time).
#
#   scripts/ddp-scaling.sh [EPOCHS] [IMAGES_PER_FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-3}
per_file=${2:-512}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# The build tests/slurm.rs makes too.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/mpi-build}

cargo build --release --features mpi --example cifar10 >&2
bin=$CARGO_TARGET_DIR/release/examples/cifar10
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
        --num-workers 1 --accelerator cpu --enable-progress-bar false --enable-checkpointing false --enable-model-summary false)

printf '%-6s %5s %10s %7s %16s %14s\n' strategy ranks images/s ratio "peak MiB/rank" collectives
for strategy in ddp fsdp:SHARD_GRAD_OP fsdp; do
    base=""
    for n in 1 2 3; do
        threads=$((n == 1 ? 2 : 1))
        out=$(RAYON_NUM_THREADS=$threads mpirun --oversubscribe --bind-to none -n "$n" \
            /usr/bin/time -f "peak %M KB" "$bin" "${common[@]}" --strategy "$strategy" \
            --devices "$n" --default-root-dir "$data/$strategy-$n" 2>&1)
        # The mean seconds of the epochs after the first, rank 0's (only it prints them).
        secs=$(echo "$out" | grep -o '[0-9.]* s$' | awk 'NR > 1 { s += $1; k++ } END { printf "%.3f", s / k }')
        peak=$(echo "$out" | grep -o 'peak [0-9]* KB' | awk '{ if ($2 > m) m = $2 } END { printf "%.0f", m / 1024 }')
        share=$(echo "$out" | grep -o '([0-9.]*%)' | tr -d '()' || true)
        rate=$(python3 -c "print(f'{$train / $secs:.0f}')")
        base=${base:-$rate}
        name=$strategy
        [ "$strategy" = fsdp:SHARD_GRAD_OP ] && name=fsdp1
        printf '%-8s %3s %10s %7.2f %16s %14s\n' "$name" "$n" "$rate" \
            "$(python3 -c "print($rate / $base)")" "$peak" "${share:--}"
    done
done
