#!/usr/bin/env bash
# Finish the method benchmarks on a CUDA machine prepared by benchmarks/gpu/prepare.sh. Each
# benchmark resumes from its results file (finished runs are kept), so a cut-off run loses only
# the run in flight. Results are copied to $OUT when it is set.
#
#   bash benchmarks/gpu/run.sh gguf_a     # call 1: carry .gguf_a, keep the half on the machine
#   bash benchmarks/gpu/run.sh bbt        # call 2: carry .gguf_b, .whl, .data_gpu; BBT / BBTv2 (1,200 calls)
#   bash benchmarks/gpu/run.sh bdpl       # call 3 (same machine): BDPL, three variants (1,200 calls)
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
ln -sf $store/model.gguf $gguf
case $what in
  bbt)  $PYTHON benchmarks/bbt.py --budget 1200 --model $gguf --device "$DEVICE" --cache-mode off --throughput-reps 0 "$@" ;;
  bdpl) $PYTHON benchmarks/bdpl.py --budget 1200 --local-model $gguf --max-concurrency 64 "$@" ;;
esac
rc=$?
[[ -n ${OUT:-} ]] && cp benchmarks/results/bbt.json benchmarks/results/bbt.png benchmarks/results/bdpl.json "$OUT"/ 2>/dev/null
exit $rc
