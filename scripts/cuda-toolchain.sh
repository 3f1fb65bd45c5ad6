#!/usr/bin/env bash
# Prepares what `cargo build --features cuda` needs on a machine with no CUDA install and no
# GPU, from PyPI, and prints the environment for the build:
#
#     eval "$(scripts/cuda-toolchain.sh)"       # into target/cuda-13.0 (or the first argument)
#     cargo build --release --features cuda ...
#
# - CUDA 13.0, one minor version throughout (the lent GPUs run driver 580, which is CUDA 13.0:
#   PTX from a newer nvcc or NVRTC will not load there): nvcc with its parts, the headers,
#   cuBLAS, NVRTC, and NCCL for the CUDA 13 series.
# - A link stub for the driver library: cudarc links `-lcuda` at build time, and the driver
#   (`libcuda.so.1`) exists only where a GPU is. The stub defines every driver function
#   cudarc's bindings name, each returning CUDA_ERROR_STUB_LIBRARY (34); its soname is
#   libcuda.so.1, so the binaries load the real driver on a GPU machine.
# - An `nvidia-smi` stand-in: dfdx's build script asks nvidia-smi for the compute capability
#   its kernels are compiled for. It reports $FULMEN_CUDA_COMPUTE_CAP (default 90: sm_90, the
#   H100 and H200).
# - cuDNN 9, whose library the unit tests load (describing a convolution needs no GPU).
#
# Downloads about 1.1 GB once; later runs only print the environment. Progress goes to stderr,
# the environment to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=$(realpath -m "${1:-target/cuda-13.0}")
cap=${FULMEN_CUDA_COMPUTE_CAP:-90}
packages=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-cccl==13.0.85
    nvidia-cublas==13.0.2.14
    nvidia-cuda-nvrtc==13.0.88
    nvidia-nccl-cu13==2.32.3
)

say() { echo "cuda-toolchain: $*" >&2; }

if [ ! -x "$dir/venv/bin/python" ]; then
    say "creating $dir/venv"
    mkdir -p "$dir"
    python3 -m venv "$dir/venv" >&2
fi
stamp="$dir/installed"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${packages[*]}" ]; then
    say "installing ${packages[*]}"
    "$dir/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}" >&2
    echo "${packages[*]}" >"$stamp"
fi

# cuDNN 9 (fulmen loads it at run time, kernels/cudnn/): its descriptors need no GPU, so the
# unit tests check fulmen's against it. Without its dependencies: it names a newer cuBLAS than
# the one above, which it does not need to load.
cudnn=nvidia-cudnn-cu13==9.28.1.4
if [ ! -f "$dir/cudnn-installed" ] || [ "$(cat "$dir/cudnn-installed")" != "$cudnn" ]; then
    say "installing $cudnn"
    "$dir/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "$cudnn" >&2
    echo "$cudnn" >"$dir/cudnn-installed"
fi

site=$("$dir/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
root="$site/nvidia/cu13"
[ -f "$root/include/cuda.h" ] || { say "no include/cuda.h under $root"; exit 1; }

# The unversioned names the linker looks for.
for lib in cublas cublasLt nvrtc cudart; do
    ln -sf "lib$lib.so.13" "$root/lib/lib$lib.so"
done
ln -sf "$site/nvidia/nccl/lib/libnccl.so.2" "$root/lib/libnccl.so"

# The driver stub, from the functions cudarc's driver bindings declare.
stub="$root/lib64/stubs/libcuda.so"
if [ ! -f "$stub" ]; then
    cudarc=$(cargo metadata --format-version 1 --features cuda 2>/dev/null |
        "$dir/venv/bin/python" -c '
import json, sys
meta = json.load(sys.stdin)
print(next(p["manifest_path"] for p in meta["packages"] if p["name"] == "cudarc").rsplit("/", 1)[0])')
    symbols=$(grep -oE 'pub fn cu[A-Za-z0-9_]+' "$cudarc/src/driver/sys.rs" | cut -c8- | sort -u)
    [ -n "$symbols" ] || { say "no driver functions found in $cudarc/src/driver/sys.rs"; exit 1; }
    mkdir -p "$(dirname "$stub")"
    for s in $symbols; do echo "int $s(void) { return 34; }"; done >"$dir/libcuda-stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub" "$dir/libcuda-stub.c"
    say "driver stub with $(echo "$symbols" | wc -l) functions: $stub"
fi
# The name the loader looks for when a binary runs here ($FULMEN_CUDA_STUB_LIBS below).
ln -sf libcuda.so "$(dirname "$stub")/libcuda.so.1"

mkdir -p "$dir/bin"
cat >"$dir/bin/nvidia-smi" <<EOF
#!/bin/sh
# fulmen's stand-in for nvidia-smi on a build machine without a GPU (scripts/cuda-toolchain.sh).
case "\$*" in
    *compute_cap*) printf 'compute_cap\n%s.%s\n' "${cap%?}" "${cap#"${cap%?}"}" ;;
    *) echo "nvidia-smi: fulmen's build stand-in; this machine has no GPU" >&2; exit 9 ;;
esac
EOF
chmod +x "$dir/bin/nvidia-smi"

echo "export CUDA_ROOT='$root'"
echo "export CUDA_COMPUTE_CAP='$cap'"
echo "export PATH='$dir/bin:$root/bin':\"\$PATH\""
# Where the binaries find their libraries on this machine: they load and start, and the stub
# answers their first driver call with CUDA_ERROR_STUB_LIBRARY.
# The cuDNN the unit tests load (kernels/cudnn/library.rs names the variable).
echo "export FULMEN_CUDNN_LIBRARY='$site/nvidia/cudnn/lib/libcudnn.so.9'"
echo "export FULMEN_CUDA_STUB_LIBS='$root/lib64/stubs:$root/lib:$site/nvidia/nccl/lib'"
