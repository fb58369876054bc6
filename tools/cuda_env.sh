# Set up a CUDA 13.0 toolkit from Python wheels and export what `cargo build --features cuda`
# needs, on a machine with or without a GPU. Source it from the repository root:
#
#     source tools/cuda_env.sh            # installs on first use (about 1.2 GB), then exports
#     cargo build --release --features cuda
#
# What it does, and why:
# - candle compiles its kernels to PTX with nvcc at build time, and the driver JIT-compiles that
#   PTX at run time. PTX from an nvcc newer than the driver's CUDA version does not load, so the
#   compiler is pinned to 13.0 (the GPU machines this project targets run driver 580 = CUDA 13.0).
# - The toolkit comes from NVIDIA's wheels on the Python package index, installed with pip into
#   a prefix of its own ($LVLMSCOPE_CUDA_PREFIX, default ~/.cache/lvlmscope/cuda13), never into
#   the Python environment.
# - libcuda.so ships only with a driver. Without one, the linker gets a stub with the driver's
#   soname whose functions all report "no device" (CUDA_ERROR_NO_DEVICE), so a binary that is
#   run against it by mistake fails with one sentence instead of misbehaving. The stub is only on
#   the link path, never on LD_LIBRARY_PATH.
# - The wheels ship versioned libraries only (libcublas.so.13, ...); the unversioned names the
#   linker looks for are added as symlinks.
# Variables: LVLMSCOPE_CUDA_PREFIX (install prefix), CUDA_COMPUTE_CAP (default 90: H100/H200;
# set it for your GPU, e.g. 80 for A100, 89 for L4/RTX 4090).

_lvlmscope_cuda_setup() {
    local prefix="${LVLMSCOPE_CUDA_PREFIX:-$HOME/.cache/lvlmscope/cuda13}"
    local py="$prefix/wheels"
    local root="$py/nvidia/cu13"
    local stub="$prefix/stub"
    local python="${PYTHON:-python3}"
    if [ ! -e "$prefix/.installed" ]; then
        echo "cuda_env: installing the CUDA 13.0 toolkit wheels into $prefix (about 1.2 GB) ..." >&2
        mkdir -p "$py" || return 1
        "$python" -m pip install --quiet --disable-pip-version-check --no-deps --target "$py" \
            "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-crt==13.0.*" \
            "nvidia-nvvm==13.0.*" "nvidia-cuda-nvrtc==13.0.*" "nvidia-cuda-cccl==13.0.*" \
            "nvidia-cublas==13.0.2.14" "nvidia-curand" || {
            echo "cuda_env: pip could not install the CUDA wheels" >&2
            return 1
        }
        if [ ! -x "$root/bin/nvcc" ]; then
            echo "cuda_env: the wheels did not provide $root/bin/nvcc" >&2
            return 1
        fi
        local lib
        for lib in "$root"/lib/lib*.so.*; do
            local base="${lib%%.so.*}.so"
            [ -e "$base" ] || ln -s "$(basename "$lib")" "$base"
        done
        mkdir -p "$stub" || return 1
        {
            echo '/* Link-time stand-in for the driver library: every call reports no device. */'
            echo 'int cuGetErrorString(int e, const char **s) { (void)e; *s = "no CUDA driver (link stub)"; return 0; }'
            echo 'int cuGetErrorName(int e, const char **s) { (void)e; *s = "CUDA_ERROR_NO_DEVICE"; return 0; }'
            grep -oE '\bcu[A-Z][A-Za-z0-9_]*\b' "$root/include/cuda.h" | sort -u \
                | grep -vxE 'cuGetErrorString|cuGetErrorName' \
                | sed 's/.*/int &(void) { return 100; }/'
        } > "$stub/libcuda_stub.c"
        gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub/libcuda.so.1" "$stub/libcuda_stub.c" \
            || { echo "cuda_env: could not build the libcuda link stub" >&2; return 1; }
        ln -sf libcuda.so.1 "$stub/libcuda.so"
        touch "$prefix/.installed"
    fi
    export CUDA_ROOT="$root"
    export CUDA_PATH="$root"
    export CUDA_TOOLKIT_ROOT_DIR="$root"
    export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
    case ":$PATH:" in *":$root/bin:"*) ;; *) export PATH="$root/bin:$PATH" ;; esac
    # The driver's own libcuda wins where one is installed; the stub is only a fallback.
    local link_path="$root/lib"
    if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\b'; then
        link_path="$link_path:$stub"
    fi
    export LIBRARY_PATH="$link_path${LIBRARY_PATH:+:$LIBRARY_PATH}"
    echo "cuda_env: nvcc $("$root/bin/nvcc" --version | grep -oE 'release [0-9.]+'), compute capability $CUDA_COMPUTE_CAP" >&2
}
_lvlmscope_cuda_setup
