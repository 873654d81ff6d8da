#!/usr/bin/env bash
# The GPU edition in one call on a remote GPU machine that returns only a few small files: chapter 10's GPU run
# (tools/gpu_run.py: train, evaluate at N = 10 000, figures), packed into $OUT as at most 8 files of at most 15 MiB
# (tools/gpu_pack.py), then the throughput target's row (tools/bench.py --target) in the time left, with the log.
#
#   mkdir -p .carry/fmnist && cp /usr/share/datasets/fashion-mnist/*.gz .carry/fmnist/     # once, on this machine
#   OUT=/where/files/come/back bash tools/gpu_device.sh        # on the GPU machine, from the repository's root
#   python tools/gpu_pack.py unpack /where/files/came/back runs/gpu     # back here: checks and extracts
#
# $OUT receives log.txt, bench.json, MANIFEST.json, results.json and bundle.tar.NN (the model folder, the figures and
# results.json; the sample cache and the 250 MB training state stay behind). Fashion-MNIST comes from $DDPM_NB_DATA,
# else .carry/fmnist, else the Debian package. SMOKE=1 runs the same steps at tiny sizes on a CPU in a minute or two
# (tests/test_gpu_run.py runs it so);
# GPU_RUN_MINUTES (default 5.5) is gpu_run's wall-clock budget; the bench gets at most BENCH_SECONDS (default 150) and
# ends by DEADLINE seconds after the start (default 540: give the device call a limit of about 580 s); and
# WORK (default: a new temporary folder) holds gpu_run's whole output folder, $WORK/gpu.
set -uo pipefail
OUT=${OUT:?set OUT to the folder whose files come back}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
DATA_ARGS=()                            # $DDPM_NB_DATA, else .carry/fmnist, else gpu_run looks for the Debian package
[ -z "${DDPM_NB_DATA:-}" ] && [ -d .carry/fmnist ] && DATA_ARGS=(--data_root "$(pwd)/.carry/fmnist")
WORK=${WORK:-$(mktemp -d)}              # gpu_run's whole output folder is $WORK/gpu
if [ "${SMOKE:-0}" = 1 ]; then RUN_ARGS=(--smoke); BENCH_ARGS=(--presets tiny --iters 1 --warmup 1 --no-compile --no-amp --batch 8 --channels_last on)
else RUN_ARGS=(--minutes "${GPU_RUN_MINUTES:-5.5}"); BENCH_ARGS=(--target); fi
{
  echo "# gpu_device: $(date -u +%FT%TZ) on $(hostname)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch, torchvision; print('torch', torch.__version__, '| torchvision', torchvision.__version__, '| cuda', torch.cuda.is_available())"
  python tools/gpu_run.py --out "$WORK/gpu" "${DATA_ARGS[@]}" "${RUN_ARGS[@]}"
  run_rc=$?
  echo "# gpu_run exit status $run_rc after $SECONDS s"
  if [ -d "$WORK/gpu/model" ]; then python tools/gpu_pack.py pack "$WORK/gpu" "$OUT" --max_files 6; pack_rc=$?
  else echo "# no model folder: nothing to pack"; pack_rc=1; fi
  bench_s=$(( ${DEADLINE:-540} - SECONDS )); [ "$bench_s" -gt "${BENCH_SECONDS:-150}" ] && bench_s=${BENCH_SECONDS:-150}
  if [ "$bench_s" -ge 30 ]; then                       # the results are packed first: a bench cut short loses nothing else
    timeout "$bench_s" python tools/bench.py "${BENCH_ARGS[@]}" --json "$OUT/bench.json"
    echo "# bench exit status $? (124: stopped at $bench_s s)"
  else echo "# bench skipped: $bench_s s left of DEADLINE=${DEADLINE:-540}"; fi
  echo "# gpu_device done after $SECONDS s: gpu_run $run_rc, pack $pack_rc; files in $OUT:"; ls -l "$OUT"
  [ "$run_rc" = 0 ] && [ "$pack_rc" = 0 ]
} 2>&1 | tee "$OUT/log.txt"
