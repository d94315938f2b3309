#!/usr/bin/env bash
# On a lent GPU machine, in one call (benches/gpu/prepare.sh packed .gl and .gpu here first):
# the test suite (on the first adapter; GL tried once), `noiseshift devices` and `profile`, the kernel,
# transformer, calibration, FLUX, VAE and text-encoder benches, and PyTorch's reference timings
# (torch_baseline.py, and torch_models.py for FLUX and the VAE) on the same card.
# Everything goes to $OUT/log.txt, ours.json and torch.json; a summary ends the output.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/noiseshift-gpu}
mkdir -p "$OUT"
LOG=$OUT/log.txt
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/*.whl && export PYTHONPATH=/tmp/site
tar -xJf .gpu/bin.tar.xz -C .gpu
ROOT=$(cat .gpu/root)
if [ "$PWD" != "$ROOT" ]; then
    mkdir -p "$(dirname "$ROOT")"
    ln -sfn "$PWD" "$ROOT"
fi
mkdir -p target/release
cp .gpu/bin/noiseshift target/release/
BIN=.gpu/bin

# step NAME SECONDS COMMAND...: run with a time limit, output to the log, one summary line.
step() {
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    echo "=== $name" >>"$LOG"
    timeout "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    echo "=== $name: rc=$rc in $((SECONDS - start)) s" | tee -a "$LOG"
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee -a "$LOG"
step devices 60 $BIN/noiseshift devices
# wgpu's GL backend cannot open NVIDIA's GL adapter ("Parent device is lost", wgpu issue
# 7068): the suite runs on the first adapter (Vulkan), and one GL test shows whether that holds.
for t in ${TESTS:-$BIN/tests/*}; do
    NOISESHIFT_TEST_ADAPTERS=0 step "test $(basename "$t")" 120 "$t" --test-threads 4
done
NOISESHIFT_TEST_ADAPTERS=Gl step "GL test" 60 $BIN/tests/ops-test activations
step profile 180 sh -c "$BIN/noiseshift profile --json >$OUT/ours.json"
step bench-kernels 180 $BIN/bench-kernels
for kernel in ${LINEAR:-auto tiled wide coop}; do
    NOISESHIFT_BENCH_LINEAR=$kernel NOISESHIFT_BENCH_1024=1 step "bench-transformer $kernel" 300 $BIN/bench-transformer
done
NOISESHIFT_BENCH_256=1 NOISESHIFT_BENCH_SAMPLES=${SAMPLES:-2} step bench-calibration 300 $BIN/bench-calibration
PYTHONUNBUFFERED=1 step torch 400 python3 .gpu/torch_baseline.py --json "$OUT/torch.json"
# FLUX.1-dev-shaped forward at 1024 px (2 + 4 blocks, scaled), the VAE decode at 1024 px, the
# text encoders, and diffusers' FLUX and VAE on the same card.
NOISESHIFT_BENCH_FLUX_SIDE=1024 NOISESHIFT_BENCH_FLUX_BLOCKS=2,4 step bench-flux 240 $BIN/bench-flux
step bench-vae 180 $BIN/bench-vae
step bench-text_encoders 240 $BIN/bench-text_encoders
PYTHONUNBUFFERED=1 step torch-models 240 python3 benches/gpu/torch_models.py --json "$OUT/torch_models.json"

echo "--- summary"
grep -E "^(=== bench|diffusers|FLUX|VAE|clip|t5|[0-9]+x[0-9]+ px|resident|streamed|test result|adapter|ceilings|linear|attention|layer_norm|modulate|conv2d|CPU|matmul ceiling|weights on|[0-9]+x[0-9]+|    split|    slowest|forwards against|failures:|    [a-z_:]+$|thread .* panicked)" "$LOG" | grep -v ": rc=" | cut -c1-160
