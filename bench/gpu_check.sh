#!/usr/bin/env bash
# The GPU check, time-boxed to 8 minutes: the test suite, the toy recipe (seed 0), an SFT throughput probe and a
# GRPO step probe (bench/gpu_probe.py), then bench/results/gpu.{json,md}. Run from anywhere:
#
#   bash bench/gpu_check.sh                      # on a GPU machine; installs .whl/*.whl first when present
#   bash bench/gpu_check.sh --dry-run --out DIR  # CPU, tiny shapes, every part stops after one step (a test)
#   bash bench/gpu_check.sh --fetch-wheels       # where pip reaches an index: the tested versions into .whl/
#
# The GPU machine has torch but no package index: the project's other dependencies travel as wheels in the
# ignored folder .whl/ (fetched here with --fetch-wheels for CPython 3.12 / manylinux x86_64, without torch) and
# are installed into /tmp/site, ahead of the machine's own packages. Time boxes (seconds) can be changed with
# TESTS_S, TOY_S, SFT_S, GRPO_S and the whole with BUDGET_S; a part that hits its box is reported "timed out".
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
DRY=0
OUT=bench/results
FETCH=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT=$2; shift ;;
    --fetch-wheels) FETCH=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
PYTHON=${PYTHON:-python3}
START=$(date +%s)

# The versions this project is tested with (pyproject.toml ranges; the CPU venv's exact versions), minus torch.
WHEELS="transformers==5.24.0 trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0
math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2 liger-kernel==0.8.5"
if [ $FETCH = 1 ]; then
  mkdir -p .whl
  # shellcheck disable=SC2086
  exec "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $WHEELS
fi

if [ $DRY = 1 ]; then
  export CUDA_VISIBLE_DEVICES=""  # the dry run is a CPU run, even on a GPU machine
  # boxes only catch hangs here: a busy 2-core machine can take minutes for what an idle one does in 40 s
  BUDGET_S=${BUDGET_S:-600}; TESTS_S=${TESTS_S:-480}; TOY_S=${TOY_S:-480}; SFT_S=${SFT_S:-240}; GRPO_S=${GRPO_S:-240}
  DRYFLAG=--dry-run
else
  BUDGET_S=${BUDGET_S:-470}; TESTS_S=${TESTS_S:-200}; TOY_S=${TOY_S:-260}; SFT_S=${SFT_S:-90}; GRPO_S=${GRPO_S:-90}
  DRYFLAG=
fi
if [ $DRY = 0 ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || { echo "gpu_check.sh: installing .whl/*.whl failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/site:$ROOT/src
else
  export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 MATHRECIPE_GPU_CHECK=1 TOKENIZERS_PARALLELISM=false GPU_CHECK_START=$START
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
echo "gpu_check.sh: work folder $WORK, results to $OUT$([ $DRY = 1 ] && echo ' (dry run)')"

# run_part NAME SECONDS COMMAND...: run it in its time box (cut to what the budget has left), log and status in WORK
run_part() {
  local name=$1 box=$2; shift 2
  local left=$(( START + BUDGET_S - $(date +%s) - 20 ))
  [ "$left" -lt "$box" ] && box=$left
  if [ "$box" -lt 10 ]; then echo "124 0" > "$WORK/$name.status"; echo "[$name] skipped: budget spent"; return; fi
  local t0; t0=$(date +%s.%N)
  timeout -k 10 "$box" "$@" > "$WORK/$name.log" 2>&1
  local rc=$?
  echo "$rc $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t0 }")" > "$WORK/$name.status"
  echo "[$name] exit $rc after $(cut -d' ' -f2 "$WORK/$name.status") s (box $box s); last lines:"
  tail -n 3 "$WORK/$name.log" | sed "s/^/  [$name] /"
}

run_part env 60 "$PYTHON" bench/gpu_probe.py env --work "$WORK"

if [ $DRY = 1 ]; then
  # Dry run: timings mean nothing, so everything runs at once (about 40 s on 2 idle cores).
  run_part tests "$TESTS_S" "$PYTHON" -m pytest --collect-only -q -p no:cacheprovider &
  run_part toy "$TOY_S" "$PYTHON" -m mathrecipe.cli run recipes/toy.yaml "output_dir=$WORK/toy" seed=0 \
    data.toy.n_sft=16 data.toy.n_test=4 data.toy.n_grpo=16 sft.epochs=1 sft.per_device_train_batch_size=16 grpo.max_steps=1 \
    grpo.per_device_train_batch_size=8 grpo.max_completion_length=32 rewards.cosine.max_len=32 eval.samples=1 \
    eval.max_new_tokens=32 eval.generate_batch_size=8 &
  { run_part sft "$SFT_S" "$PYTHON" bench/gpu_probe.py sft --work "$WORK" --dry-run
    run_part grpo "$GRPO_S" "$PYTHON" bench/gpu_probe.py grpo --work "$WORK" --dry-run; } &
  wait
else
  # The suite and the toy recipe check correctness, not speed: they share the machine; the probes then run alone.
  XDIST=
  "$PYTHON" -c "import xdist" 2>/dev/null && XDIST="-n 8"
  # shellcheck disable=SC2086
  run_part tests "$TESTS_S" "$PYTHON" -m pytest -q -p no:cacheprovider --junitxml="$WORK/junit.xml" $XDIST &
  run_part toy "$TOY_S" "$PYTHON" -m mathrecipe.cli run recipes/toy.yaml "output_dir=$WORK/toy" seed=0 &
  wait
  run_part sft "$SFT_S" "$PYTHON" bench/gpu_probe.py sft --work "$WORK"
  run_part grpo "$GRPO_S" "$PYTHON" bench/gpu_probe.py grpo --work "$WORK"
fi

"$PYTHON" bench/gpu_probe.py report --work "$WORK" --out "$OUT" $DRYFLAG || exit 1
echo "gpu_check.sh: $(( $(date +%s) - START )) s in all; wrote $OUT/gpu.json and $OUT/gpu.md"
for part in env tests toy sft grpo; do
  [ "$(cut -d' ' -f1 "$WORK/$part.status" 2>/dev/null)" = 0 ] || { echo "gpu_check.sh: part '$part' did not pass"; exit 1; }
done
