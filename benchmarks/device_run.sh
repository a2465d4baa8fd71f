#!/usr/bin/env bash
# The GPU benchmark suite in one command, for a machine with an accelerator (or any machine).
#
#   bash benchmarks/device_run.sh [STAGE ...]     (default: env peer saturation study)
#
# The plan, in order of value (benchmarks/RESULTS.md): one call of at most 9 minutes for
#   env peer saturation study
# (each of the last three stopped at its share of the 9 minutes, keeping the rows it wrote),
# then `best rd` (the shipped models and Balle 2017's full-schedule rate-distortion study),
# then the rest as time allows.
#
# Stages, each one self-contained (a failing stage is reported and the next one runs):
#   env       devices, driver, versions
#   peer      throughput.py at batch 256: BaseCAE, CAE and ImprovedCAE against PyTorch's
#             eager DataLoader loop and its device-resident compiled loop, same device and
#             run, with a CIFAR-10-sized epoch
#   smoke     the numerics tests on this backend at full float32 precision, then
#             launch.py on the embedded default (3 epochs): the whole training path
#             (steps per call, checkpoints, on-device metrics) on this backend
#   steps     steps per device call 1, 4, 16, 64 (benchmarks/steps_per_call.py)
#   float32   throughput.py: the models with a PyTorch copy, batch 64 and 256, float32, vs
#             PyTorch eager and torch.compile on the same device, with a CIFAR-10-sized epoch
#   bfloat16  throughput.py: bfloat16 compute, flax-cae alone (the papers train in float32)
#   levers    throughput.py --variants: XLA's dilated transposed conv and the sub-pixel conv
#             input gradient against the defaults (same function, other formulation)
#   scaling   throughput.py --scaling over the devices present
#   members   benchmarks/members.py: study members trained together (vmapped) vs one by one
#   saturation  benchmarks/saturation.py: where the device saturates, images/s and fraction
#             of peak FLOP/s by batch size (64..4096) and by members trained together (1..16),
#             for improved_cae and cifar10_best256
#   study     benchmarks/study_time.py: S1's optimizer study (tuning runs and members) on
#             50,000 CIFAR-10-sized images, 30 epochs, members together and one by one:
#             wall time, training time and the rest
#   best      configs/studies/best_codes.py (cifar10_best256 and its 64-float sibling,
#             PCA at the same floats beside each) on the CIFAR-10 JPEGs: $CIFAR_JPEGS, else
#             shared/data/ or ../shared/data/cifar10-jpeg-train.tar.gz; 40,000 train / 5,000
#             validation / 5,000 test; BEST_EPOCHS (default: the config's 60)
#   capacity  configs/studies/best_capacity.py (the recipe, one residual
#             block at 8x8, against none, more blocks at the low-resolution stages, and with
#             width, at 256 and 64 floats, PCA beside each) on the same images and split;
#             BEST_EPOCHS as for best
#   rd        configs/studies/rate_distortion.py on the same images (the 256- and
#             64-float codes range-coded, Balle 2017 at four lambdas, PCA, JPEG and WebP):
#             rate_distortion.md/.csv/.png; BEST_EPOCHS shortens every member
#
# On a GPU machine that reaches no package registry, run benchmarks/device_wheels.sh
# here first and carry .whl: the wheels are installed into /tmp/site. Results go to $OUT
# (results.tgz with every table's .md/.csv/.json and each stage's log, summary.md, run.log), or to
# benchmarks/results/device-DATE when OUT is unset. SIZE=tiny runs every stage at a toy size
# (the test suite does, on the CPU).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results/device-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1
R=$(mktemp -d)
finish() {  # summary.md and results.tgz from what the stages left in $R
  [ -z "$STAGE" ] || echo "=== $STAGE: stopped before it ended (a time limit?)" >> "$R/status.txt"
  { cat "$R/status.txt"; for f in "$R"/*.md; do [ -e "$f" ] && { echo; cat "$f"; }; done
    sed -n '/^| data |/,$p' "$R/steps.log" 2>/dev/null; } > "$OUT/summary.md"
  tar czf "$OUT/results.tgz" -C "$R" .
}
# A run stopped by a time limit (timeout, a batch system's call limit) still leaves the
# tables its stages wrote so far (throughput.py rewrites its files after every row).
# SIGPIPE ignored: run.log's tee dies with the run, and writing to it must not end finish.
STAGE=setup  # a limit that lands before the first stage says so too
trap '' PIPE
trap finish EXIT
CHILD=  # the running stage's process (its group's leader under a time limit)
trap '[ -n "$CHILD" ] && { kill -TERM -- "-$CHILD" || kill -TERM "$CHILD"; } 2>/dev/null; exit 143' TERM INT
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
STAGES=("$@")
[ ${#STAGES[@]} -gt 0 ] || STAGES=(env peer saturation study)

imports() { "$PY" -c 'import flax_cae.training.loop, configs.s1' 2>"$R/import.err"; }
if ! imports && ls .whl/*.whl >/dev/null 2>&1; then  # only where the packages are missing
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! imports; then
  tail -3 "$R/import.err"
  echo "flax-cae does not import here; on a machine without a registry, run" \
       "benchmarks/device_wheels.sh where pip works and carry .whl." >&2
  STAGE=
  exit 2
fi

if [ "${SIZE:-full}" = tiny ]; then
  F32=()
  PEER=()
  TP=(--models=base_cae --batch_sizes=8 --steps=2 --rounds=2 --n=64 --image=16,16,1
      --epoch_images=64)
  SPC=(--model=base_cae --batch=8 --steps=2 --ks=1,2 --image=16,16,1 --n=64)
  EPOCHS=1
  TESTS=(tests/models/test_models.py -k equals_the_dilated_reference)
  LEVERS=()
  MEM=(--models=base_cae --members=2 --batch=8 --steps=2 --rounds=1 --n=64)
  SAT=(--models=base_cae --batch_sizes=8,16 --members=1,2 --member_batch=8 --steps=2 --rounds=1
       --image=16,16,1 --matmul=64)
  STUDY=(--images=100 --epochs=1 --config.study.only=adam --config.batch_size=16
         --config.eval_batch_size=16)
  BEST=(--config.num_epochs=2 --config.batch_size=20 --config.eval_batch_size=20
        --config.data.validation_size=20 --config.data.test_size=20)
  BEST_FILES=('train/*/000[0-9].jpg')  # 100 photos
  RD=(--config.study.only=best256,balle2017_lambda0p01 --config.study.evals.rate_distortion.steps="(1.0, 0.25)"
      --config.study.evals.rate_distortion.qualities="(10, 50)"
      --config.study.members.balle2017_lambda0p01.num_epochs=2)
else
  # 160 steps a round: ten 16-step calls on a GPU, long enough to time.
  TP=(--batch_sizes=64,256 --steps=160 --rounds=5 --epoch_images=50000)
  # The models PyTorch has a copy of: torch.compile makes each row ~40 s on an H200 (all 22
  # rows ran past 5 minutes, 2026-12-04); bfloat16 times every model, flax-cae alone.
  F32=(--models=base_cae,cae,improved_cae,improved_cae+skips)
  # The peer table: the three models the GPU target names, the ratio at batch 256.
  PEER=(--models=base_cae,cae,improved_cae --batch_sizes=256 --rounds=3)
  # Seconds each stage of the first call may run (with env, under 9 minutes): a stage past
  # its share is stopped and keeps the rows it wrote. STAGE_LIMITS= (empty) lifts them.
  STAGE_LIMITS=${STAGE_LIMITS-peer=150 saturation=130 study=190}
  SPC=(--ks=1,4,16,64 --steps=256 --n=16384)
  EPOCHS=3
  TESTS=(tests/models/test_models.py tests/measures/test_losses_metrics_optim.py)
  LEVERS=(--models=base_cae,improved_cae --batch_sizes=256)
  MEM=(--models=improved_cae,base_cae --members=2,4,8 --batch=256 --steps=32 --rounds=3)
  # One 16-step call a round; batch 64 to 4,096 in steps of 4x, so both models fit the share.
  SAT=(--steps=16 --rounds=3 --batch_sizes=64,256,1024,4096)
  STUDY=(--images=50000 --epochs=30)
  BEST=(--config.data.validation_size=5000 --config.data.test_size=5000
        ${BEST_EPOCHS:+--config.num_epochs=$BEST_EPOCHS})
  BEST_FILES=()
  RD=()
  for lam in 0p0025 0p01 0p04 0p16; do
    RD+=(${BEST_EPOCHS:+--config.study.members.balle2017_lambda$lam.num_epochs=$BEST_EPOCHS})
  done
fi
declare -A LIMIT=()  # STAGE_LIMITS="stage=seconds ...": a stage's time limit
for kv in ${STAGE_LIMITS:-}; do LIMIT[${kv%%=*}]=${kv#*=}; done
BACKEND=$("$PY" -c 'import jax; print(jax.default_backend())')

STAGE=  # (the stages start)

stage() {  # name, command...: runs it, logs it, reports its status
  local name=$1; shift
  echo "=== $name: $*"
  local t0=$SECONDS
  STAGE=$name
  local limit=()
  [ -n "${LIMIT[$name]:-}" ] && limit=(timeout --kill-after=5 "${LIMIT[$name]}")
  # In the background and waited for: a TERM to this script (a call's own time limit) runs
  # the trap at once, which stops the stage too (`timeout` puts it in a process group of
  # its own, out of reach of a signal to ours).
  "${limit[@]}" "$@" > >(tee "$R/$name.log") 2>&1 &
  CHILD=$!
  wait "$CHILD"
  local rc=$?
  CHILD=
  local line="=== $name: exit $rc after $((SECONDS - t0)) s"
  if [ ${#limit[@]} -gt 0 ] && { [ "$rc" = 124 ] || [ "$rc" = 137 ]; }; then
    line="=== $name: stopped at its limit of ${LIMIT[$name]} s, keeping the rows it wrote"
  fi
  # Builtins only from here: a time limit that lands now cannot kill a writer half-way (a
  # killed `tee` once left status.txt without this line and summary.md empty).
  echo "$line" >> "$R/status.txt"
  STAGE=
  echo "$line"
}

for s in "${STAGES[@]}"; do
  case $s in
    env) stage env bash -c "nvidia-smi || true; $PY -c 'import sys, jax, flax, optax
print(sys.version); print(jax.__version__, flax.__version__, optax.__version__)
print(jax.devices())
try:
  import torch; print(\"torch\", torch.__version__, torch.cuda.is_available())
except ImportError: print(\"no torch\")'; git log -1 --format='commit %h %s' || true" ;;
    smoke)
      platform=$([ "$BACKEND" = gpu ] && echo cuda || echo "$BACKEND")
      stage smoke_tests env JAX_PLATFORMS="$platform" JAX_DEFAULT_MATMUL_PRECISION=highest \
        "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}"
      stage smoke_launch "$PY" launch.py --config=configs/default.py --workdir="$R/default_run" \
        --config.num_epochs=$EPOCHS
      cp "$R"/default_run/results.md "$R"/default_run/reconstructions/*.png "$R"/ 2>/dev/null
      rm -rf "$R/default_run" ;;
    steps) stage steps "$PY" benchmarks/steps_per_call.py "${SPC[@]}" --json="$R/steps_per_call.json" ;;
    peer) stage peer "$PY" benchmarks/throughput.py "${TP[@]}" "${PEER[@]}" --dtypes=float32 \
            --torch=eager,resident --out="$R/${BACKEND}_peer" ;;
    float32) stage float32 "$PY" benchmarks/throughput.py "${TP[@]}" "${F32[@]}" --dtypes=float32 \
               --torch=eager,compile,resident --out="$R/${BACKEND}_float32" ;;
    bfloat16) stage bfloat16 "$PY" benchmarks/throughput.py "${TP[@]}" --dtypes=bfloat16 \
                --torch=none --out="$R/${BACKEND}_bfloat16" ;;
    levers) stage levers "$PY" benchmarks/throughput.py "${TP[@]}" --dtypes=float32 --torch=none \
              --epoch_images=0 "${LEVERS[@]}" --out="$R/${BACKEND}_levers" \
              --variants=default,model.transposed_conv=dilated,model.conv_input_grad=subpixel ;;
    scaling) stage scaling "$PY" benchmarks/throughput.py "${TP[@]}" --dtypes=float32 \
               --scaling=1,2,4,8 --out="$R/${BACKEND}_scaling" ;;
    members) stage members "$PY" benchmarks/members.py "${MEM[@]}" --out="$R/${BACKEND}_members" ;;
    saturation) stage saturation "$PY" benchmarks/saturation.py "${SAT[@]}" \
                  --out="$R/${BACKEND}_saturation" ;;
    study) stage study "$PY" benchmarks/study_time.py "${STUDY[@]}" --out="$R/${BACKEND}_study_time" ;;
    best|capacity|rd)
      jpegs=${CIFAR_JPEGS:-}
      for f in shared/data/cifar10-jpeg-train.tar.gz ../shared/data/cifar10-jpeg-train.tar.gz; do
        [ -n "$jpegs" ] || { [ -f "$f" ] && jpegs=$f; }
      done
      mkdir -p "$R/cifar" && tar xzf "${jpegs:-no CIFAR-10 JPEG tarball: set CIFAR_JPEGS}" \
        -C "$R/cifar" --wildcards "${BEST_FILES[@]:-train/*}"
      case $s in best) study=best_codes ;; capacity) study=best_capacity ;;
                 rd) study=rate_distortion ;; esac
      extra=()
      [ "$s" = rd ] && extra=("${RD[@]}")
      stage "$s" "$PY" launch.py --config=configs/studies/$study.py --workdir="$R/$s" \
        --config.data.name=image_folder --config.data.source_dir="$R/cifar/train" \
        --config.data.data_dir="$R/tfds" --config.data.download=False \
        --config.data.image_size="(32, 32)" --config.data.channels=3 "${BEST[@]}" "${extra[@]}"
      # The stage's name first: each stage writes study.md, and rd's rate_distortion.md too.
      for f in "$R/$s/"*.png "$R/$s/study.md" "$R/$s/study.csv" "$R/$s/rate_distortion.md" \
               "$R/$s/rate_distortion.csv"; do
        [ -e "$f" ] && cp "$f" "$R/${s}_$(basename "$f")"
      done
      rm -rf "$R/cifar" "$R/tfds" "$R/$s/members/"*/checkpoints "$R/$s/groups" ;;
    *) echo "=== $s: exit 2, not a stage (env peer smoke steps float32 bfloat16 levers scaling members saturation study best capacity rd)" \
         | tee -a "$R/status.txt" ;;
  esac
done

finish
trap - EXIT
# The tables last: what a reply that keeps only the end of the output shows.
echo; cat "$OUT/summary.md"
! grep -q 'exit [1-9]' "$R/status.txt"
