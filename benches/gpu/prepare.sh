#!/usr/bin/env bash
# Packs what benches/gpu/run.sh needs on a lent GPU machine (../shared/gpu/README.md) into the
# git-ignored folders .gl (the Vulkan and GL loader packages that machine lacks) and .gpu
# (stripped release builds of the CLI, the benches and the tests, PyTorch's reference script,
# the diffusers wheel). Then the device call: `bash benches/gpu/run.sh`, carrying .gl and .gpu.
set -euo pipefail
cd "$(dirname "$0")/../.."
for d in .gl .gpu; do
    grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >>.git/info/exclude
done
mkdir -p .gl .gpu
if ! ls .gl/*.deb >/dev/null 2>&1; then
    mkdir -p /tmp/amd64/partial
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    apt-get $o update -q
    (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
if ! ls .gpu/diffusers-*.whl >/dev/null 2>&1; then
    python3 -m pip download --no-deps --only-binary=:all: -d .gpu diffusers==0.42.1 importlib_metadata
fi
cp ../shared/gpu/torch_baseline.py .gpu/

# Every executable of a release build: "kind name path" per line.
list() {
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        kind = "test" if m["profile"]["test"] and m["target"]["kind"] != ["bench"] else m["target"]["kind"][0]
        print(kind, m["target"]["name"] + "-" + m["target"]["kind"][0], m["executable"])
'
}
rm -rf .gpu/bin && mkdir -p .gpu/bin/tests
{
    cargo build --release --bins --benches --message-format=json
    cargo test --release --workspace --no-run --message-format=json
} | list | sort -u | while read -r kind name path; do
    case $kind in
    bin) cp "$path" .gpu/bin/noiseshift ;;
    bench) cp "$path" ".gpu/bin/bench-${name%-bench}" ;;
    test) cp "$path" ".gpu/bin/tests/$name" ;;
    esac
done
strip .gpu/bin/* .gpu/bin/tests/* 2>/dev/null || true
tar -cJf .gpu/bin.tar.xz -C .gpu bin
rm -r .gpu/bin
# Test and bench binaries reach fixtures, the CLI and target/ through this build's paths.
pwd >.gpu/root
du -sh .gl .gpu
