#!/usr/bin/env bash
# One-shot GPU check: on a machine with a GPU, records the adapter, checks it against the CPU
# backend (`geopath selftest`), and benchmarks it (`geopath bench --json`: matrix products of
# 4096³ in each layout, every VGG11-BN conv layer at batch 128 forward / data / weight
# gradient, a full-width VGG11-BN training step at batch 128, LeNet-300-100's benchmarks), all
# into one JSON. Refuses a CPU adapter (lavapipe) unless --allow-cpu-adapter is given (the
# numbers would say nothing about a GPU).
#
#   scripts/gpu-check.sh [--allow-cpu-adapter] [OUT.json]
#
# GEOPATH_BIN names the binary (default: target/release/geopath, built when missing and cargo
# is there); OUT defaults to bench/gpu-check-DATE.json.
set -euo pipefail
cd "$(dirname "$0")/.."

allow_cpu=0
out=""
for arg in "$@"; do
    case "$arg" in
        --allow-cpu-adapter) allow_cpu=1 ;;
        -*) echo "gpu-check: unknown option $arg" >&2; exit 2 ;;
        *) out="$arg" ;;
    esac
done
out="${out:-bench/gpu-check-$(date -u +%F).json}"
bin="${GEOPATH_BIN:-target/release/geopath}"
if [ ! -x "$bin" ]; then
    command -v cargo >/dev/null || { echo "gpu-check: no $bin and no cargo to build it" >&2; exit 2; }
    cargo build --release
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
start=$(date +%s)

info=$("$bin" --device gpu info --json)
chosen=${info#*\"chosen\": }
name=$(sed -n 's/^{"name": "\([^"]*\)".*/\1/p' <<< "$chosen")
if [[ "$chosen" == *'"device_type": "Cpu"'* ]] && [ "$allow_cpu" = 0 ]; then
    echo "gpu-check: the adapter ($name) is a CPU emulation; not reporting it as a GPU" >&2
    echo "gpu-check: pass --allow-cpu-adapter to run the check on it anyway" >&2
    exit 1
fi

# The self-test's verdict is recorded; a failing one still lets the benchmarks run.
selftest=$("$bin" --device gpu selftest --json) || true
bench_vgg=$("$bin" --device gpu bench --json --model vgg11-bn --batch 128 \
    matmul-4096 matmul-4096-tn matmul-4096-nt conv-layers train-step)
bench_lenet=$("$bin" --device gpu bench --json --model lenet-300-100 --batch 200 \
    train-step mlp-forward mlp-jvp mlp-grad mlp-hvp mlp-gn fip-step)
# f16 operands with f32 accumulation, where the adapter has SHADER_F16 (else recorded as null).
bench_f16=$("$bin" --device gpu bench --json matmul-4096-f16 matmul-4096-tn-f16 matmul-4096-nt-f16) ||
    bench_f16=null

mkdir -p "$(dirname "$out")"
tmp="$out.partial"
{
    printf '{"date": "%s", "commit": "%s", "cpu_adapter_allowed": %s, "seconds": %s,\n' \
        "$(date -u +%FT%TZ)" "$(git describe --always --dirty 2>/dev/null || echo unknown)" \
        "$([ "$allow_cpu" = 1 ] && echo true || echo false)" "$(( $(date +%s) - start ))"
    printf ' "info": %s,\n "selftest": %s,\n "bench_vgg11_bn": %s,\n "bench_lenet": %s,\n "bench_f16": %s}\n' \
        "$info" "${selftest:-null}" "$bench_vgg" "$bench_lenet" "$bench_f16"
} > "$tmp"
mv "$tmp" "$out"
echo "gpu-check: wrote $out in $(( $(date +%s) - start )) s"
case "$selftest" in
    *'"pass": true'*) ;;
    *) echo "gpu-check: the self-test failed (see selftest in $out)" >&2; exit 1 ;;
esac
