#!/usr/bin/env bash
# The GPU check, in two halves.
#
#   scripts/gpu-check.sh build   # here, with the Rust toolchain: builds the GPU test suite
#                                # (tests/gpu.rs), benchmark (benches/gpu.rs) and the DDP and
#                                # FSDP examples with CUDA and NCCL (scripts/cuda-toolchain.sh
#                                # prepares them) into target/gpu-check, then rehearses
#   scripts/gpu-check.sh         # on the GPU machine (no Rust, no network): runs them
#   scripts/gpu-check.sh ops       # on the GPU machine: a training step phase by phase and the
#                                  # op timings, alone (gpu-bench 32-true phases, gpu-bench ops)
#   scripts/gpu-check.sh rehearse  # the run half here, under the driver stub
#
# The run uses the NVIDIA driver there and the CUDA 13 libraries of its Python's nvidia
# packages (PyTorch's: cuBLAS, NVRTC, NCCL, cuDNN); it runs the GPU tests (CPU/GPU parity on
# Iris in 32-true and 16-mixed, conv layers against the CPU, checkpoints GPU → CPU → GPU, DDP
# and FSDP's FULL_SHARD (with and without cpu_offload) over NCCL launched by fulmen itself
# against one GPU alone, a missing CUDA header folder named, cuDNN's convolutions against the
# composed ones, a missing cuDNN named), then ResNet-50 training throughput in 32-true and
# 16-mixed beside PyTorch's on the same GPU (and fulmen's without cuDNN, FULMEN_CUDNN=0), then
# single ops timed in f32 and f16, and prints a table last. Logs go to $OUT when it is set.
# About 3 minutes on an H200.
#
# `build` takes cargo's profile flags (default --release; CI's tests/cuda_build.rs passes
# --profile dev) and honours CARGO_TARGET_DIR; FULMEN_GPU_CHECK_DIR moves target/gpu-check.
set -uo pipefail
cd "$(dirname "$0")/.."
dir=${FULMEN_GPU_CHECK_DIR:-target/gpu-check}
say() { echo "gpu-check: $*"; }

# The run half on this machine, under the driver stub of scripts/cuda-toolchain.sh and
# stand-ins for ldconfig and nvidia-smi. A GPU machine is lent rarely and briefly, so what is
# carried there must be proven here: every test and the benchmark get as far as the driver
# (a binary built without the `cuda` feature has no tests and would "pass"), and the table
# comes out, and the tests' own logic passes on the CPU.
rehearse() {
    local fake rc t bad=""
    fake=$(mktemp -d)
    printf '#!/bin/sh\nprintf "\\tlibcuda.so.1 (libc6,x86-64) => stub\\n"\n' >"$fake/ldconfig"
    printf '#!/bin/sh\ncase "$*" in *-lms*) exec sleep 600 ;; *) echo "driver stub" ;; esac\n' >"$fake/nvidia-smi"
    chmod +x "$fake/ldconfig" "$fake/nvidia-smi"
    rc=0
    OUT=$fake/out PATH="$fake:$PATH" LD_LIBRARY_PATH="$FULMEN_CUDA_STUB_LIBS" \
        scripts/gpu-check.sh >"$fake/run.log" 2>&1 || rc=$?
    [ "$rc" = 1 ] || bad="$bad; the run ended with $rc, not 1 (tests failed)"
    set -- "$fake"/out/test-*.log
    [ -f "$1" ] || bad="$bad; no GPU tests ran: was $dir/gpu-test built with the cuda feature?"
    for t in "$@" "$fake"/out/bench-*.log "$fake"/out/ops.log; do
        [ -f "$t" ] || continue
        grep -q CUDA_ERROR_STUB_LIBRARY "$t" || bad="$bad; $(basename "$t" .log) did not reach the driver"
    done
    # The tests' own logic (settings, files, assertions) on the CPU: tests/gpu.rs trains on
    # "cpu" where it would on "gpu", and skips the tests that need CUDA tensors themselves.
    local cpu_log=$fake/tests-on-cpu.log ran
    FULMEN_GPU_TESTS_ON_CPU=1 LD_LIBRARY_PATH="$FULMEN_CUDA_STUB_LIBS" "$dir/gpu-test" \
        --test-threads 1 --nocapture >"$cpu_log" 2>&1 || bad="$bad; the GPU tests' logic fails on the CPU: $(grep -E '^test .* FAILED|panicked' "$cpu_log" | tr '\n' ' ')"
    ran=$(sed -n 's/^test result: ok\. \([0-9]*\) passed.*/\1/p' "$cpu_log")
    ran=$((${ran:-0} - $(grep -c 'rehearsal on the CPU: skipped' "$cpu_log" || true)))
    # The headers that travel are enough for NVRTC: a kernel like those dfdx compiles at run
    # time, compiled with those include paths alone.
    LD_LIBRARY_PATH="$CUDA_ROOT/lib" python3 - "$dir/nvrtc" <<'PY' || bad="$bad; NVRTC cannot compile with $dir/nvrtc alone"
import ctypes, sys
nvrtc = ctypes.CDLL("libnvrtc.so.13")
src = b'#include "cuda_fp16.h"\n#include "cuda_utils.cuh"\n' \
    b'extern "C" __global__ void k(const __half *x, float *y) { y[0] = x[0]; }'
prog = ctypes.c_void_p()
assert nvrtc.nvrtcCreateProgram(ctypes.byref(prog), src, b"k.cu", 0, None, None) == 0
opts = [f"--include-path={sys.argv[1]}/{d}".encode() for d in ("cuda-include", "dfdx-out")]
rc = nvrtc.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
size = ctypes.c_size_t()
nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
log = ctypes.create_string_buffer(size.value)
nvrtc.nvrtcGetProgramLog(prog, log)
sys.exit(f"NVRTC: {log.value.decode()}" if rc else 0)
PY
    for t in "| GPU tests |" "| ResNet-50 32-true" "| ResNet-50 16-mixed"; do
        grep -qF "$t" "$fake/out/table.md" 2>/dev/null || bad="$bad; the table has no row '$t'"
    done
    if [ -n "$bad" ]; then
        cat "$fake/run.log"
        say "rehearsal failed${bad}"
        return 1
    fi
    say "rehearsed: $# GPU tests, 2 benchmarks and the op timings reach the driver; $ran of the tests pass on the CPU, the others need CUDA; NVRTC compiles with the carried headers; the table comes out"
    rm -rf "$fake"
}

case "${1:-}" in
build)
    set -e
    shift
    [ $# -gt 0 ] || set -- --release
    eval "$(scripts/cuda-toolchain.sh)"
    mkdir -p "$dir"
    targets=(--features nccl --test gpu --bench gpu --example iris_ranks --example fsdp)
    # JSON on stdout names the binaries and dfdx's build-script folder (printed); the
    # compiler's messages still go to stderr as text.
    out_dir=$(cargo build "$@" "${targets[@]}" --message-format=json-render-diagnostics |
        python3 -c '
import json, os, shutil, sys
dfdx = None
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "build-script-executed" and "#dfdx@" in m["package_id"] and not dfdx:
        dfdx = m["out_dir"]
        print(dfdx)
    exe = m.get("executable") if m.get("reason") == "compiler-artifact" else None
    if exe and m["target"]["name"] in ("gpu", "iris_ranks", "fsdp"):
        name = m["target"]["name"]
        name = "gpu-" + m["target"]["kind"][0] if name == "gpu" else name
        dest = os.path.join(sys.argv[1], name)
        if os.path.exists(dest):
            os.remove(dest)
        try:
            os.link(exe, dest)  # a file of its own name, without copying (debug builds are large)
        except OSError:
            shutil.copy(exe, dest)
        print("gpu-check:", exe, "->", dest, file=sys.stderr)
' "$dir")
    # dfdx compiles a few kernels at run time with NVRTC (dtype conversion, concatenation,
    # reshapes), with include paths fixed at build time: the CUDA headers here and its build
    # script's output folder. Those folders do not exist on the GPU machine, so the files
    # NVRTC reads travel in $dir/nvrtc and the run half links the build's paths to them.
    rm -rf "$dir/nvrtc"
    mkdir -p "$dir/nvrtc/cuda-include" "$dir/nvrtc/dfdx-out"
    (cd "$CUDA_ROOT/include" && tar cf - --exclude=cccl .) | tar xf - -C "$dir/nvrtc/cuda-include"
    cp "$out_dir"/*.cuh "$dir/nvrtc/dfdx-out/"
    printf '%s %s\n' "$CUDA_ROOT/include" nvrtc/cuda-include "$out_dir" nvrtc/dfdx-out >"$dir/nvrtc/paths"
    du -sh "$dir"/*
    rehearse
    exit
    ;;
rehearse)
    eval "$(scripts/cuda-toolchain.sh)"
    rehearse
    exit
    ;;
esac

out=${OUT:-$dir/out}
mkdir -p "$out"
python=$(command -v python3 || true)

if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
    say "no NVIDIA driver here: libcuda.so.1 is not in the loader's cache (ldconfig -p)"
    exit 2
fi
if [ ! -x "$dir/gpu-test" ] || [ ! -x "$dir/gpu-bench" ] || [ ! -x "$dir/iris_ranks" ] || [ ! -x "$dir/fsdp" ] || [ ! -f "$dir/nvrtc/paths" ]; then
    say "no binaries in $dir: run 'scripts/gpu-check.sh build' on the build machine and carry $dir"
    exit 2
fi
libs=$("$python" - <<'EOF'
import glob, os, site
dirs = []
for sp in site.getsitepackages():
    for lib in ("libcublas.so.13", "libnvrtc.so.13", "libnccl.so.2", "libcudnn.so.9"):
        for p in glob.glob(os.path.join(sp, "nvidia", "**", lib), recursive=True):
            d = os.path.dirname(p)
            if d not in dirs:
                dirs.append(d)
print(":".join(dirs))
EOF
)
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
say "CUDA libraries from $libs"
# A binary whose NVRTC include folders are missing says so before training (fulmen's
# device::open_cuda), rather than panicking inside dfdx at its first batch.
headers="not checked: the build's include folders exist here"
missing=""
while read -r baked _; do [ -e "$baked" ] || missing=1; done <"$dir/nvrtc/paths"
if [ -n "$missing" ]; then
    "$dir/gpu-test" --exact iris_on_the_gpu_follows_the_cpu_run >"$out/no-headers.log" 2>&1
    if grep -q "could not compile its run-time kernels with NVRTC" "$out/no-headers.log"; then
        headers="named before training"
    else
        headers="NOT named (see no-headers.log)"
    fi
fi
# NVRTC's include paths, as the build fixed them (see `build`).
while read -r baked local; do
    if [ ! -e "$baked" ]; then
        mkdir -p "$(dirname "$baked")" && ln -s "$(realpath "$dir/$local")" "$baked" &&
            say "NVRTC includes: $baked -> $dir/$local"
    fi
done <"$dir/nvrtc/paths"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
if [ "${1:-}" = ops ]; then
    say "phases of a training step and op timings, alone"
    for p in 32-true 16-mixed; do
        timeout 150 "$dir/gpu-bench" "$p" phases | tee -a "$out/ops.log"
    done
    timeout 150 "$dir/gpu-bench" ops | tee -a "$out/ops.log"
    exit "${PIPESTATUS[0]}"
fi

say "GPU tests"
# The DDP test runs the example, which launches its own ranks over NCCL. Each test runs in a
# process of its own, so a test that aborts (a panic inside a CUDA call that panics again while
# unwinding) does not take the others with it; --nocapture lets passing tests print their
# GPU-CHECK lines.
export FULMEN_GPU_IRIS_RANKS=$dir/iris_ranks FULMEN_GPU_FSDP=$dir/fsdp
: >"$out/tests.log"
passed=0
failed=""
for t in $("$dir/gpu-test" --list 2>/dev/null | sed -n 's/: test$//p'); do
    say "test $t"
    timeout 150 "$dir/gpu-test" --exact "$t" --nocapture >"$out/test-$t.log" 2>&1
    rc=$?
    cat "$out/test-$t.log" | tee -a "$out/tests.log"
    if [ "$rc" = 0 ]; then passed=$((passed + 1)); else failed="$failed $t (exit $rc)"; fi
done
tests_rc=0
[ -z "$failed" ] && [ "$passed" -gt 0 ] || tests_rc=1
case $headers in NOT*) tests_rc=1 ;; esac

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
print(f"allocated_mib={torch.cuda.max_memory_allocated() / 2**20:.0f}")
EOF

for p in 32-true 16-mixed; do
    say "ResNet-50 in $p: fulmen"
    with_peak "$out/bench-$p.log" timeout 150 "$dir/gpu-bench" "$p" >"$out/bench-$p.log" 2>&1
    cat "$out/bench-$p.log"
    say "ResNet-50 in $p: fulmen without cuDNN (the composed convolutions)"
    FULMEN_CUDNN=0 with_peak "$out/bench-composed-$p.log" timeout 150 "$dir/gpu-bench" "$p" >"$out/bench-composed-$p.log" 2>&1
    cat "$out/bench-composed-$p.log"
    say "ResNet-50 in $p: PyTorch"
    with_peak "$out/torch-$p.log" timeout 90 "$python" "$out/torch_resnet50.py" "$p" >"$out/torch-$p.log" 2>&1
    cat "$out/torch-$p.log"
done

say "where a step's time goes, op by op, in f32 and AMP<f16>"
timeout 150 "$dir/gpu-bench" ops >"$out/ops.log" 2>&1
cat "$out/ops.log"

value() { grep -ho "$2=[^ ]*" "$1" 2>/dev/null | tail -1 | cut -d= -f2; }
{
    echo
    echo "| check | result |"
    echo "| --- | --- |"
    echo "| GPU | $(cat "$out/gpu.txt") |"
    echo "| GPU tests | $passed passed; failed:${failed:- none} |"
    echo "| missing CUDA headers | $headers |"
    grep -h '^GPU-CHECK' "$out/tests.log" | sed 's/^GPU-CHECK \([^ ]*\) \(.*\)/| \1 | \2 |/'
    for p in 32-true 16-mixed; do
        ours=$(value "$out/bench-$p.log" images_per_s)
        theirs=$(value "$out/torch-$p.log" images_per_s)
        ratio=$("$python" -c "print(f'{float(\"$ours\") / float(\"$theirs\"):.2f}')" 2>/dev/null || echo "?")
        echo "| ResNet-50 $p, batch 128, without cuDNN | fulmen $(value "$out/bench-composed-$p.log" images_per_s) images/s (GPU memory peak $(value "$out/bench-composed-$p.log" peak_mib) MiB) |"
        echo "| ResNet-50 $p, batch 128 | fulmen ${ours:-failed} images/s (GPU memory peak $(value "$out/bench-$p.log" peak_mib) MiB, loss $(value "$out/bench-$p.log" loss_first) → $(value "$out/bench-$p.log" loss_last)), PyTorch ${theirs:-failed} images/s (peak $(value "$out/torch-$p.log" peak_mib) MiB, of it allocated $(value "$out/torch-$p.log" allocated_mib) MiB), ratio $ratio |"
    done
    awk '/^GPU-OPS/ { split($4, v, "="); ms[$2] = ms[$2] " " $3 " " v[2] " ms" }
        END { for (op in ms) print "| " op " |" ms[op] " |" }' "$out/ops.log" | sort
} | tee "$out/table.md"
exit "$tests_rc"
