#!/usr/bin/env bash
# Finish the method benchmarks on a CUDA machine prepared by benchmarks/gpu/prepare.sh. Each
# benchmark resumes from its results file (finished runs are kept), so a cut-off run loses only
# the run in flight. Results are copied to $OUT when it is set.
#
#   bash benchmarks/gpu/run.sh gguf_a     # call 1: carry .gguf_a, keep the half on the machine
#   bash benchmarks/gpu/run.sh bbt        # call 2: carry .gguf_b, .whl, .data_gpu; BBT / BBTv2 (1,200 calls)
#   bash benchmarks/gpu/run.sh bdpl       # call 3 (same machine): BDPL, three variants (1,200 calls)
#   bash benchmarks/gpu/run.sh rlprompt   # RLPrompt, sst2 seeds 13, 21, 42 (1,200 calls); long run: --budget 4000 --runs sst2:13 --out benchmarks/results/rlprompt-4000.json
#   bash benchmarks/gpu/run.sh rlprompt --runs agnews:13 agnews:21 agnews:42   # the AG News rows (issue 21)
#   bash benchmarks/gpu/run.sh leaderboard --tasks agnews --seeds 13 --methods bbtv2 bdpl --baselines \
#       --task-eval-limit agnews=2000 --out benchmarks/results/leaderboard-agnews.json   # runs it still misses
#   bash benchmarks/gpu/run.sh all        # call 2 instead of bbt and bdpl: the runs bbt.json and
#                                         # bdpl.json name as missing, side by side, one process each,
#                                         # into $OUT; benchmarks/gpu/merge.py DIR --verify folds them in
#
# Arguments after the first go to the benchmark (e.g. --seeds 13 --out /tmp/x.json for a try);
# PYTHON and DEVICE override the interpreter (python3) and the server's device (cuda).
set -uo pipefail
cd "$(dirname "$0")/../.."
what=${1:?gguf_a, bbt or bdpl}
shift
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
store=/tmp/bbox_lfm_gpu
mkdir -p $store
if [[ $what == gguf_a ]]; then cp .gguf_a/part $store/a && echo "first half kept in $store"; exit 0; fi
[[ -f .gguf_b/part && ! -f $store/model.gguf ]] && cat $store/a .gguf_b/part > $store/model.gguf
$PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $store/site .whl/*.whl \
    2>/dev/null || true
export PYTHONPATH=$store/site:$PWD PYTHONUNBUFFERED=1
[[ -d .data_gpu ]] && export BBOX_LFM_DATA=$PWD/.data_gpu
gguf=$store/SmolLM2-135M-Instruct.Q4_1.gguf   # the file name is the served model's name
$PYTHON -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
ln -sf $store/model.gguf $gguf
case $what in
  bbt)  $PYTHON benchmarks/bbt.py --budget 1200 --model $gguf --device "$DEVICE" --cache-mode off --throughput-reps 0 "$@" ;;
  bdpl) $PYTHON benchmarks/bdpl.py --budget 1200 --local-model $gguf --max-concurrency 64 "$@" ;;
  rlprompt) $PYTHON benchmarks/rlprompt.py --local-model $gguf --runs sst2:13 sst2:21 sst2:42 "$@" ;;
  leaderboard) $PYTHON benchmarks/leaderboard.py --local-model $gguf "$@" ;;
  all)
    # One process per run that bbt.json and bdpl.json name as missing (benchmarks/gpu/missing.py
    # groups them by method when there are more than 7), all at once: one process keeps neither
    # the GPU nor this machine's 16 cores busy. Each writes its own results file into $OUT after
    # every finished run, and stops after T seconds, so a cut-off call still brings back what
    # finished. DRY=1 only prints the processes.
    o=${OUT:-$store/out}; mkdir -p "$o" $store/logs
    export OMP_NUM_THREADS=2
    job() { local name=$1; shift; echo "$name: $*"; [[ -n ${DRY:-} ]] || timeout "${T:-470}" "$@" > $store/logs/$name.log 2>&1 & }
    bbt=(benchmarks/bbt.py --budget 1200 --model $gguf --device "$DEVICE" --cache-mode off --throughput-reps 0)
    lines=$($PYTHON benchmarks/gpu/missing.py) || exit 1
    while read -r kind name seeds; do
      [[ -z $kind ]] && continue
      tag=$kind-$name-${seeds// /-}
      if [[ $kind == bbt ]]; then
        job $tag $PYTHON "${bbt[@]}" --methods $name --seeds $seeds --out "$o/$tag.json" --plot $store/$tag.png "$@"
      else
        job $tag $PYTHON benchmarks/bdpl.py --budget 1200 --local-model $gguf --max-concurrency 64 --variants $name \
            --seeds $seeds --cache $store/$tag.sqlite --out "$o/$tag.json" "$@"
      fi
    done <<< "$lines"
    [[ -n ${DRY:-} ]] && exit 0
    wait
    for f in $store/logs/*.log; do echo "== $f"; tr "\r" "\n" < "$f" | grep -v "Loading weights\|Writing model\|Converting and\|^ *$" | tail -n 12; done | tee "$o/logs.txt"
    exit 0 ;;
esac
rc=$?
[[ -n ${OUT:-} ]] && cp benchmarks/results/bbt.json benchmarks/results/bbt.png benchmarks/results/bdpl.json \
    benchmarks/results/rlprompt.json benchmarks/results/rlprompt.png benchmarks/results/leaderboard*.json "$OUT"/ \
    2>/dev/null
exit $rc
