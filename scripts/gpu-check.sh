#!/usr/bin/env bash
# The GPU check, in two halves.
#
#   scripts/gpu-check.sh build   # here, with the Rust toolchain: builds the GPU test suite
#                                # (tests/gpu.rs), benchmark (benches/gpu.rs) and the DDP
#                                # example with CUDA and NCCL (scripts/cuda-toolchain.sh
#                                # prepares them) into target/gpu-check
#   scripts/gpu-check.sh         # on the GPU machine (no Rust, no network): runs them
#
# The run uses the NVIDIA driver there and the CUDA 13 libraries (cuBLAS, NVRTC) of its
# Python's nvidia packages (PyTorch's: cuBLAS, NVRTC, NCCL); it runs the GPU tests (CPU/GPU
# parity on Iris in 32-true and 16-mixed, conv layers against the CPU, checkpoints GPU → CPU
# → GPU, DDP over NCCL launched by fulmen itself against one GPU alone), then
# ResNet-50 training throughput in 32-true and 16-mixed beside PyTorch's on the same GPU, and
# prints a table last. Logs go to $OUT when it is set. Budget: under 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
dir=target/gpu-check

if [ "${1:-}" = build ]; then
    set -e
    eval "$(scripts/cuda-toolchain.sh)"
    mkdir -p "$dir"
    cargo build --release --features nccl --test gpu --bench gpu --example iris_ddp
    cargo build --release --features nccl --test gpu --bench gpu --example iris_ddp --message-format=json |
        python3 -c '
import json, shutil, sys
for line in sys.stdin:
    m = json.loads(line)
    exe = m.get("executable") if m.get("reason") == "compiler-artifact" else None
    if exe and m["target"]["name"] in ("gpu", "iris_ddp"):
        name = m["target"]["name"]
        name = "gpu-" + m["target"]["kind"][0] if name == "gpu" else name
        shutil.copy(exe, sys.argv[1] + "/" + name)
        print("gpu-check:", exe, "->", sys.argv[1] + "/" + name, file=sys.stderr)
' "$dir"
    ls -la "$dir"
    exit 0
fi

out=${OUT:-$dir/out}
mkdir -p "$out"
say() { echo "gpu-check: $*"; }
python=$(command -v python3 || true)

if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
    say "no NVIDIA driver here: libcuda.so.1 is not in the loader's cache (ldconfig -p)"
    exit 2
fi
if [ ! -x "$dir/gpu-test" ] || [ ! -x "$dir/gpu-bench" ] || [ ! -x "$dir/iris_ddp" ]; then
    say "no binaries in $dir: run 'scripts/gpu-check.sh build' on the build machine and carry $dir"
    exit 2
fi
libs=$("$python" - <<'EOF'
import glob, os, site
dirs = []
for sp in site.getsitepackages():
    for lib in ("libcublas.so.13", "libnvrtc.so.13", "libnccl.so.2"):
        for p in glob.glob(os.path.join(sp, "nvidia", "**", lib), recursive=True):
            d = os.path.dirname(p)
            if d not in dirs:
                dirs.append(d)
print(":".join(dirs))
EOF
)
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
say "CUDA libraries from $libs"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"

say "GPU tests"
# The DDP test runs the example, which launches its own ranks over NCCL.
export FULMEN_GPU_IRIS_DDP=$dir/iris_ddp
timeout 240 "$dir/gpu-test" --test-threads 1 2>&1 | tee "$out/tests.log"
tests_rc=${PIPESTATUS[0]}

# Peak GPU memory while a command runs, in MiB, polled by nvidia-smi.
with_peak() {
    local log=$1
    shift
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$log.mem" &
    local poll=$!
    "$@"
    local rc=$?
    kill "$poll" 2>/dev/null
    wait "$poll" 2>/dev/null
    echo "peak_mib=$(sort -n "$log.mem" | tail -1)" >>"$log"
    return $rc
}

cat >"$out/torch_resnet50.py" <<'EOF'
# PyTorch's ResNet-50 with the same CIFAR stem (3x3 conv, no max pool), batch 128, SGD
# momentum 0.9, random 3x32x32 images: the anchor fulmen's GPU numbers are measured against.
import sys, time, torch, torchvision
precision = sys.argv[1]
torch.manual_seed(0)
m = torchvision.models.resnet50(num_classes=10)
m.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
m.maxpool = torch.nn.Identity()
m = m.cuda()
opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
scaler = torch.amp.GradScaler("cuda", enabled=precision == "16-mixed")
x = torch.randn(128, 3, 32, 32, device="cuda")
y = torch.arange(128, device="cuda") % 10
stamps = []
for _ in range(13):
    opt.zero_grad()
    with torch.autocast("cuda", dtype=torch.float16, enabled=precision == "16-mixed"):
        loss = torch.nn.functional.cross_entropy(m(x), y)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    torch.cuda.synchronize()
    stamps.append(time.perf_counter())
print(f"TORCH-BENCH resnet50 {precision} images_per_s={10 * 128 / (stamps[-1] - stamps[2]):.1f}")
print(f"peak_mib={torch.cuda.max_memory_allocated() / 2**20:.0f}")
EOF

for p in 32-true 16-mixed; do
    say "ResNet-50 in $p: fulmen"
    with_peak "$out/bench-$p.log" timeout 150 "$dir/gpu-bench" "$p" >"$out/bench-$p.log" 2>&1
    cat "$out/bench-$p.log"
    say "ResNet-50 in $p: PyTorch"
    timeout 90 "$python" "$out/torch_resnet50.py" "$p" >"$out/torch-$p.log" 2>&1
    cat "$out/torch-$p.log"
done

value() { grep -ho "$2=[^ ]*" "$1" 2>/dev/null | tail -1 | cut -d= -f2; }
{
    echo
    echo "| check | result |"
    echo "| --- | --- |"
    echo "| GPU | $(cat "$out/gpu.txt") |"
    echo "| GPU tests | $(grep -h '^test result' "$out/tests.log" | tail -1) |"
    grep -h '^GPU-CHECK' "$out/tests.log" | sed 's/^GPU-CHECK \([^ ]*\) \(.*\)/| \1 | \2 |/'
    for p in 32-true 16-mixed; do
        ours=$(value "$out/bench-$p.log" images_per_s)
        theirs=$(value "$out/torch-$p.log" images_per_s)
        ratio=$("$python" -c "print(f'{float(\"$ours\") / float(\"$theirs\"):.2f}')" 2>/dev/null || echo "?")
        echo "| ResNet-50 $p, batch 128 | fulmen ${ours:-failed} images/s (peak $(value "$out/bench-$p.log" peak_mib) MiB), PyTorch ${theirs:-failed} images/s (peak allocated $(value "$out/torch-$p.log" peak_mib) MiB), ratio $ratio |"
    done
} | tee "$out/table.md"
exit "$tests_rc"
