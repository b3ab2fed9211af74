#!/usr/bin/env bash
# One-shot GPU benchmark of fslens's WGSL engine, for a person on a machine with a GPU (an
# NVIDIA H100 takes well under 8 minutes). Needs no network: it builds offline from the
# vendored/cached crates, or uses prebuilt binaries.
#
#   1. builds `fslens` in release (or uses $FSLENS_BIN) and runs the GPU parity tests
#      (tests/engine_gpu.rs and tests/score_gpu.rs with FSLENS_REQUIRE_GPU=1, so a missing
#      adapter is a failure);
#   2. times the fsr step (`fslens bench --backend gpu --json`) for B ∈ {16, 64, 256,
#      1024}, N = 60000, D = 784 (Fashion-MNIST when installed, else random 8-bit atoms) and
#      one 64×64×3 case (N = 20000, D = 12288, random atoms), for each atom storage type;
#   3. where python3 imports torch with CUDA, times the same step in PyTorch float32
#      (benches/fsr_step_torch.py: chunked, online log-sum-exp, TF32 off, CUDA events);
#   4. prints a table: time/step (wall, and on the device from timestamp queries), TFLOP/s, % of
#      the GPU's nominal fp32 peak, ratio to PyTorch; then the σ-DPS step's cost over the fsr
#      step's (`fslens bench --dps`, first storage type, B ∈ {16, 256}; target ≤ 2.2); then
#      the fsr step on two devices opened on the one GPU (`--devices I,I`, the atoms split in
#      two halves, merged exactly) beside the one-device time: the overhead of the split.
#
# Environment (all optional):
#   FSLENS_BIN        prebuilt fslens binary (skips the build)
#   FSLENS_TEST_BIN   prebuilt test binaries, space-separated (`cargo test --release --test
#                     engine_gpu --test score_gpu --no-run` prints their paths); score_gpu runs
#                     the fslens binary it was built with. Without them and without cargo, the
#                     parity tests count as failed
#   SKIP_TESTS=1      skip the parity tests;   SKIP_TORCH=1  skip PyTorch
#   BENCH_BATCHES     comma-separated B for the D = 784 case (default 16,64,256,1024)
#   BENCH_N, BENCH_D  the first case's N and D (default 60000, 784)
#   BENCH_BIG         "N D B" of the second case (default "20000 12288 256"; "" skips it)
#   BENCH_STORAGES    storage types (default "f32 u8 f16")
#   BENCH_REPEATS     timed repeats per case, best reported (default 10)
#   BENCH_T           diffusion time of the step (default 0.3)
#   BENCH_TILE_DIMS   dimensions the distances kernel stages per step (default 16)
#   BENCH_TILE_ROWS   rows per tile of the GEMM-shaped kernels, 16 or 64 (default: by B)
#   BENCH_WORKGROUPS  workgroups the weighted-sums dispatch aims for (default 1024)
#   BENCH_SUMS_BLOCK  rows per thread of the weighted-sums register block, 4 or 8 (default 4)
#   BENCH_DEVICES     the device list of the split run (default: the preferred adapter twice,
#                     "I,I"; "" skips it)
#   BENCH_TUNE=0      skip the tuning table (B = 256, f32: tile dims, rows, workgroups and
#                     sums block, one factor at a time around the defaults)
#   BENCH_OUT         folder for logs and JSON lines (default gpu-bench-<date>)
#   FSLENS_GPU_PEAK_GFLOPS  the GPU's fp32 peak, when fslens does not know the adapter
#   FSLENS_ADAPTER    substring of the adapter name to use
#   PYTHON            python interpreter (default python3)
set -uo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
out=${BENCH_OUT:-gpu-bench-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
batches=${BENCH_BATCHES:-16,64,256,1024}
n=${BENCH_N:-60000}
d=${BENCH_D:-784}
big=${BENCH_BIG-20000 12288 256}
storages=${BENCH_STORAGES:-f32 u8 f16}
repeats=${BENCH_REPEATS:-10}
t=${BENCH_T:-0.3}
python=${PYTHON:-python3}
fm=${FSLENS_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
tile=()
[[ -n ${BENCH_TILE_DIMS:-} ]] && tile+=(--tile-dims "$BENCH_TILE_DIMS")
[[ -n ${BENCH_TILE_ROWS:-} ]] && tile+=(--tile-rows "$BENCH_TILE_ROWS")
[[ -n ${BENCH_WORKGROUPS:-} ]] && tile+=(--workgroups "$BENCH_WORKGROUPS")
[[ -n ${BENCH_SUMS_BLOCK:-} ]] && tile+=(--sums-block-rows "$BENCH_SUMS_BLOCK")
status=0
log() { echo "[$(($(date +%s) - started))s] $*" >&2; }

# 1. Build and parity tests.
if [[ -n ${FSLENS_BIN:-} ]]; then
  bin=$FSLENS_BIN
else
  log "building fslens (release, offline)"
  cargo build --release --offline --bin fslens >"$out/build.log" 2>&1 ||
    { log "build failed: see $out/build.log"; tail -20 "$out/build.log" >&2; exit 1; }
  bin=${CARGO_TARGET_DIR:-target}/release/fslens
fi
[[ -x $bin ]] || { log "no fslens binary at $bin"; exit 1; }
parity="skipped"
if [[ ${SKIP_TESTS:-0} != 1 ]]; then
  log "GPU parity tests (FSLENS_REQUIRE_GPU=1)"
  : >"$out/tests.log"
  if [[ -n ${FSLENS_TEST_BIN:-} ]]; then
    ok=0
    for tb in $FSLENS_TEST_BIN; do
      FSLENS_REQUIRE_GPU=1 "$tb" >>"$out/tests.log" 2>&1 || ok=1
    done
    [[ $ok == 0 ]]
  elif command -v cargo >/dev/null; then
    FSLENS_REQUIRE_GPU=1 cargo test --release --offline --test engine_gpu --test score_gpu \
      >"$out/tests.log" 2>&1
  else
    echo "no FSLENS_TEST_BIN and no cargo" >"$out/tests.log"; false
  fi
  if [[ $? == 0 ]]; then parity="passed"; else parity="FAILED (see $out/tests.log)"; status=1; fi
  grep -E "^test result|FAILED|panicked" "$out/tests.log" >&2
  log "parity tests: $parity"
fi

# 2. fslens on the GPU.
"$bin" info >"$out/info.txt" 2>&1
data_arg=(--random)
[[ $d == 784 && -e $fm/train-images-idx3-ubyte.gz ]] && data_arg=(--data "$fm")
jsonl=$out/fslens.jsonl
: >"$jsonl"
for st in $storages; do
  log "fslens bench: storage $st, N = $n, D = $d, B = $batches"
  "$bin" --json bench --backend gpu --storage "$st" --batch "$batches" --atoms "$n" --dim "$d" \
    --t "$t" --repeats "$repeats" --no-baseline "${data_arg[@]}" "${tile[@]}" >>"$jsonl" 2>>"$out/bench.log" ||
    { log "bench failed (storage $st): see $out/bench.log"; status=1; }
  if [[ -n $big ]]; then
    read -r bn bd bb <<<"$big"
    log "fslens bench: storage $st, N = $bn, D = $bd, B = $bb"
    "$bin" --json bench --backend gpu --storage "$st" --batch "$bb" --atoms "$bn" --dim "$bd" \
      --t "$t" --repeats "$repeats" --no-baseline --random "${tile[@]}" >>"$jsonl" 2>>"$out/bench.log" ||
      { log "bench failed (storage $st, D = $bd): see $out/bench.log"; status=1; }
  fi
done

# Tile sizes at B = 256 (f32), for tuning the defaults on this GPU: one factor at a time
# around the defaults (tile dims 16, tile rows by batch = 64 here, 1024 workgroups, sums block
# of 4 rows per thread), then two combinations.
tune_jsonl=$out/tune.jsonl
: >"$tune_jsonl"
if [[ ${BENCH_TUNE:-1} != 0 ]]; then
  for combo in "16 64 1024 4" "32 64 1024 4" "64 64 1024 4" "16 16 1024 4" "16 64 256 4" \
    "16 64 4096 4" "16 64 1024 8" "32 64 4096 8" "64 64 4096 8"; do
    read -r dk rows wg block <<<"$combo"
    log "tuning: tile dims $dk, tile rows $rows, workgroups $wg, sums block $block rows"
    "$bin" --json bench --backend gpu --storage f32 --batch 256 --atoms "$n" --dim "$d" \
      --t "$t" --repeats 3 --no-baseline "${data_arg[@]}" --tile-dims "$dk" \
      --tile-rows "$rows" --workgroups "$wg" --sums-block-rows "$block" 2>>"$out/bench.log" |
      tail -1 | sed "s/^{/{\"tune\": \"$combo\", /" >>"$tune_jsonl"
  done
fi

# The σ-DPS step (prior pass + C·g pass with the kept distances) against the fsr step.
dps_jsonl=$out/dps.jsonl
: >"$dps_jsonl"
dps_storage=${storages%% *}
log "fslens bench --dps: storage $dps_storage, N = $n, D = $d, B = 16,256"
"$bin" --json bench --backend gpu --dps --storage "$dps_storage" --batch 16,256 --atoms "$n" \
  --dim "$d" --t "$t" --repeats "$repeats" --no-baseline "${data_arg[@]}" "${tile[@]}" \
  >>"$dps_jsonl" 2>>"$out/bench.log" || { log "bench --dps failed: see $out/bench.log"; status=1; }

# The same fsr step on two devices of the one GPU: what splitting the atoms costs.
split_jsonl=$out/split.jsonl
: >"$split_jsonl"
preferred=$("$bin" --json info 2>/dev/null | "$python" -c \
  'import json, sys; print(next(a["index"] for a in json.load(sys.stdin)["adapters"] if a["preferred"]))' \
  2>/dev/null || echo 0)
devices=${BENCH_DEVICES-$preferred,$preferred}
if [[ -n $devices ]]; then
  log "fslens bench --devices $devices: storage $dps_storage, N = $n, D = $d, B = 16,256"
  "$bin" --json bench --backend gpu --devices "$devices" --storage "$dps_storage" --batch 16,256 \
    --atoms "$n" --dim "$d" --t "$t" --repeats "$repeats" --no-baseline "${data_arg[@]}" "${tile[@]}" \
    >>"$split_jsonl" 2>>"$out/bench.log" || { log "bench --devices failed: see $out/bench.log"; status=1; }
fi

# 3. PyTorch float32.
tjsonl=$out/torch.jsonl
: >"$tjsonl"
if [[ ${SKIP_TORCH:-0} != 1 ]] &&
  "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  idx=()
  [[ $d == 784 && -e $fm/train-images-idx3-ubyte.gz ]] && idx=(--idx "$fm/train-images-idx3-ubyte.gz")
  cases=()
  for b in ${batches//,/ }; do cases+=("$n $d $b"); done
  [[ -n $big ]] && cases+=("$big")
  for c in "${cases[@]}"; do
    read -r cn cd cb <<<"$c"
    extra=()
    [[ $cd == "$d" ]] && extra=("${idx[@]}")
    log "torch: N = $cn, D = $cd, B = $cb"
    "$python" benches/fsr_step_torch.py --B "$cb" --N "$cn" --D "$cd" --t "$t" \
      --repeats "$repeats" "${extra[@]}" >>"$tjsonl" 2>>"$out/torch.log" ||
      log "torch failed: see $out/torch.log"
  done
else
  log "PyTorch with CUDA not available: no PyTorch column"
fi

# 4. Table.
field() { sed -n "s/.*\"$1\":\(\"[^\"]*\"\|[^,}]*\).*/\1/p" <<<"$2" | tr -d '"'; }
adapter=$(head -1 "$jsonl" 2>/dev/null)
echo
echo "fslens fsr step on the GPU — $(field backend "$adapter" | sed 's/, [a-z0-9]* atom storage.*//')"
peak=$(field peak_gflops "$adapter")
[[ $peak == null || -z $peak ]] && peak="unknown (set FSLENS_GPU_PEAK_GFLOPS)" || peak="$peak GFLOP/s (nominal)"
echo "parity tests: $parity; t = $t; best of $repeats; fp32 peak: $peak"
printf "%-7s %6s %6s %6s %12s %10s %9s %8s %12s %9s\n" storage B N D "ms/step" "device ms" "TFLOP/s" "% peak" "torch ms" "vs torch"
while IFS= read -r r; do
  [[ -z $r ]] && continue
  st=$(field storage "$r"); b=$(field B "$r"); rn=$(field N "$r"); rd=$(field D "$r")
  secs=$(field seconds_per_step "$r"); g=$(field gflops "$r"); p=$(field peak_gflops "$r")
  dev=$(field device_seconds_per_step "$r")
  tr=$(grep "\"B\": $b, \"N\": $rn, \"D\": $rd," "$tjsonl" 2>/dev/null | head -1)
  tsecs=$( [[ -n $tr ]] && field seconds_per_step "$tr" )
  awk -v st="$st" -v b="$b" -v n="$rn" -v d="$rd" -v s="$secs" -v g="$g" -v p="$p" -v ts="$tsecs" -v dv="$dev" 'BEGIN {
    pk = (p == "null" || p == "") ? "-" : sprintf("%.1f", 100 * g / p);
    tm = (ts == "") ? "-" : sprintf("%.3f", 1000 * ts);
    ra = (ts == "") ? "-" : sprintf("%.2fx", ts / s);
    dm = (dv == "null" || dv == "") ? "-" : sprintf("%.3f", 1000 * dv);
    printf "%-7s %6d %6d %6d %12.3f %10s %9.2f %8s %12s %9s\n", st, b, n, d, 1000 * s, dm, g / 1000, pk, tm, ra }'
done <"$jsonl"
echo "(vs torch = PyTorch time / fslens time: above 1 means fslens is faster)"
if command -v "$python" >/dev/null; then
  echo
  echo "device time per kernel (ms per step, from timestamp queries):"
  "$python" - "$jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
kernels = ["distances", "split_weights", "weighted_sums", "merge_partials"]
print("%-7s %6s %6s %6s " % ("storage", "B", "N", "D") + " ".join("%14s" % k for k in kernels))
for r in rows:
    split = r.get("device_seconds_by_kernel") or {}
    if not split:
        continue
    print("%-7s %6d %6d %6d " % (r["storage"], r["B"], r["N"], r["D"])
          + " ".join("%14.3f" % (1000 * split.get(k, 0.0)) for k in kernels))
PY
fi
echo
echo "σ-DPS step (prior pass + C·g pass) over the fsr step, storage $dps_storage, t = $t:"
printf "%6s %12s %12s %10s\n" B "fsr ms" "σ-DPS ms" "ratio"
fsr_ms=""
while IFS= read -r r; do
  [[ -z $r ]] && continue
  k=$(field kernel "$r"); b=$(field B "$r"); secs=$(field seconds_per_step "$r")
  if [[ $k == fsr-step ]]; then fsr_ms=$secs; continue; fi
  awk -v b="$b" -v f="$fsr_ms" -v s="$secs" 'BEGIN {
    printf "%6d %12.3f %12.3f %9.2fx\n", b, 1000 * f, 1000 * s, s / f }'
done <"$dps_jsonl"
if [[ -s $split_jsonl ]]; then
  echo
  echo "fsr step on $(awk -F'"devices":' 'NR == 1 { print gsub(/"adapter"/, "", $2) }' "$split_jsonl") devices ($devices) vs one device, storage $dps_storage, t = $t (device ms: summed over the devices):"
  printf "%6s %12s %12s %10s %12s\n" B "one ms" "split ms" "ratio" "device ms"
  while IFS= read -r r; do
    [[ -z $r ]] && continue
    b=$(field B "$r"); secs=$(field seconds_per_step "$r"); dev=$(field device_seconds_per_step "$r")
    one=$(grep "\"storage\":\"$dps_storage\"" "$jsonl" | grep "\"B\":$b,\"N\":$n,\"D\":$d," | head -1)
    osecs=$( [[ -n $one ]] && field seconds_per_step "$one" )
    awk -v b="$b" -v o="$osecs" -v s="$secs" -v dv="$dev" 'BEGIN {
      om = (o == "") ? "-" : sprintf("%.3f", 1000 * o);
      ra = (o == "") ? "-" : sprintf("%.2fx", s / o);
      dm = (dv == "null" || dv == "") ? "-" : sprintf("%.3f", 1000 * dv);
      printf "%6d %12s %12.3f %10s %12s\n", b, om, 1000 * s, ra, dm }'
  done <"$split_jsonl"
fi
if [[ -s $tune_jsonl ]]; then
  echo
  echo "tuning, f32, B = 256, N = $n, D = $d (best of 3):"
  printf "%9s %9s %10s %10s %12s %10s %9s\n" "tile dims" "tile rows" workgroups "sums block" "ms/step" "device ms" "TFLOP/s"
  while IFS= read -r r; do
    [[ -z $r ]] && continue
    read -r dk rows wg block <<<"$(field tune "$r")"
    secs=$(field seconds_per_step "$r"); g=$(field gflops "$r"); dev=$(field device_seconds_per_step "$r")
    awk -v dk="$dk" -v rows="$rows" -v wg="$wg" -v bl="$block" -v s="$secs" -v g="$g" -v dv="$dev" 'BEGIN {
      dm = (dv == "null" || dv == "") ? "-" : sprintf("%.3f", 1000 * dv);
      printf "%9s %9s %10s %10s %12.3f %10s %9.2f\n", dk, rows, wg, bl, 1000 * s, dm, g / 1000 }'
  done <"$tune_jsonl"
fi
echo "logs and JSON lines in $out/; total $(($(date +%s) - started)) s"
exit $status
