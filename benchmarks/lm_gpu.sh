#!/usr/bin/env bash
# Issue 20's language-model runs on one GPU host: benchmarks/lm.py's own runs, on CUDA, many at a time
# (a GPT of 1-16M parameters leaves an H200 mostly idle; one process per run fills it).
#
#   benchmarks/lm_gpu.sh [SECONDS] [PLAN]   # stops SECONDS after its start; every finished run is already saved
#
# PLAN `next` (the default) runs what docs/language-models.md's "What is left" leaves to a GPU: first, alone
# on the GPU, EWC's step cost (benchmarks/lm_cost.py measure at 1,024 and 8,192 tokens a step, sizes LM_COST);
# then gpt-16m's own validation, `choose` and 3 test seeds of every domains method, and `facts-wide` at
# gpt-4m with gpt-1m's dose. PLAN `ran` is what the H200 ran in earlier sessions (facts at gpt-1m, the scaling runs), kept as
# the record; every run resumes, so either plan skips what the result files already hold.
#
# The host needs no Debian text packages: the corpora travel as snapshots made where they are installed
# (`python benchmarks/lm.py snapshot --dir .gpu/corpora`), and the cached pre-trained gpt-1m of the CPU runs
# in .gpu/cache/lm (so that gpt-1m's GPU seeds continue from the same model). Runs are merged into
# results/lm-<setting>[-valid].json; on the machine they came from: `python benchmarks/lm.py merge`.
#
# On a lent GPU (the device tool's `run`, 10 minutes a command): at home, once,
#   python benchmarks/lm.py snapshot --dir .gpu/corpora && mkdir -p .gpu/cache/lm
#   cp ~/.cache/lifelong/lm/pretrain-gpt-{1m,4m}-*.pt .gpu/cache/lm/ && echo /.gpu/ >> .git/info/exclude
# then run `bash benchmarks/lm_gpu.sh 540` with carry [".gpu"] and timeout_s 600; $OUT/lm-gpu.tgz comes
# back: `tar xzf lm-gpu.tgz -C /tmp/gpu`, `python benchmarks/lm.py merge --setting S [--split valid]
# /tmp/gpu/results/lm-S[-valid].json` per setting, the new results/tuning files copied in, and
# /tmp/gpu/results/lm-cost.json copied over results/lm-cost.json (the committed rows and the GPU's).
#
# A rehearsal on a CPU, in a clone (its result files are the clone's), with small GPTs in place of plan
# `next`'s sizes: LM_DEVICE=cpu LM_BIG=gpt-0.2m LM_WIDE=gpt-0.2m LM_COST=gpt-0.2m benchmarks/lm_gpu.sh 3000
set -u
cd "$(dirname "$0")/.."
export LIFELONG_CORPORA=${LIFELONG_CORPORA:-$PWD/.gpu/corpora} LIFELONG_CACHE=${LIFELONG_CACHE:-$PWD/.gpu/cache}
export OMP_NUM_THREADS=1 PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
budget=${1:-480}
plan=${2:-next}
py=${PYTHON:-python3}
device=${LM_DEVICE:-cuda}
big=${LM_BIG:-gpt-16m}  # plan next: the size that gets options of its own
wide=${LM_WIDE:-gpt-4m}  # plan next: the size that facts-wide runs at
mkdir -p logs/gpu
left() { echo $((budget - SECONDS > 5 ? budget - SECONDS : 5)); }
lm() { [ $((budget - SECONDS)) -gt 20 ] && timeout "$(left)" "$py" benchmarks/lm.py run --device "$device" --resume "$@"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
# every method on the device first, in seconds: a device bug stops the script here, not minutes later
timeout "$(left)" "$py" -m pytest -q -x -p no:cacheprovider tests/test_lm.py -k "where_its_model and $device" 2>&1 \
    | tail -n 5
[ "${PIPESTATUS[0]}" = 0 ] || exit 1

if [ "$plan" = next ]; then
# the step's cost first and alone: a training run beside it would share the GPU's time (resumes per size)
for b in 8 64; do
    [ $((budget - SECONDS)) -gt 60 ] && timeout "$(left)" "$py" benchmarks/lm_cost.py measure --device "$device" \
        --sizes "${LM_COST:-gpt-100m,gpt-350m,gpt-760m}" --batch "$b" --steps 20 --resume
done
(   # gpt-16m: validation at its own size (seed 0), the choices, then 3 test seeds with equal-bytes controls
    v() { lm --setting domains --split valid --sizes "$big" --seeds 0 "$@"; }
    v --methods naive  # alone first: it pre-trains gpt-16m once, for every run after it (the cache)
    v --methods replay &
    v --methods ewc --set strength=0.003,0.01,0.03 --jobs 3 &
    v --methods online-kfac-ewc --set strength=0.01,0.03,0.1 --jobs 3 &
    v --methods gpm --set threshold=0.97,0.99 --jobs 2 &
    v --methods distill+replay --set weight=0.1,0.3,1 --jobs 3 &
    v --methods lora --set lora=64,128,256 --jobs 3 &
    wait
    for m in ewc online-kfac-ewc gpm distill+replay lora; do
        "$py" benchmarks/lm.py choose --setting domains --method "$m" --sizes "$big"; done
    v --methods lora-ewc --set strength=0.003,0.01,0.03 --jobs 3 &
    v --methods olora --set mode=inputs,loss --jobs 2 &
    wait
    for m in lora-ewc olora; do "$py" benchmarks/lm.py choose --setting domains --method "$m" --sizes "$big"; done
    lm --setting domains --sizes "$big" --seeds 0,1,2 --equal-bytes --jobs 12 --methods \
       naive,replay,ewc+replay,distill+replay,online-kfac-ewc,online-kfac-ewc+replay,gpm,lora,lora-ewc,olora
) > logs/gpu/"$big".log 2>&1 &
(   # facts-wide at gpt-4m: naive, and gpt-1m's dose (everything replayed, 64 windows a step) alone and
    # under the teacher at 0.03 (docs/lm-facts.md, "facts-wide: validation on facts of its own")
    w() { lm --setting facts-wide --sizes "$wide" --seeds 0,1,2 --jobs 3 "$@"; }
    w --methods naive --seeds 0 && w --methods naive  # seed 0 alone first: it pre-trains gpt-4m once
    w --methods replay --set replay=1 --set select=distinct --set replay_batch=64 &
    w --methods distill+replay --set replay=1 --set select=distinct --set replay_batch=64 --set weight=0.03 &
    wait
) > logs/gpu/facts-wide.log 2>&1 &
else
(   # facts at gpt-1m: the validation grid, the choice, then 3 seeds on the test questions
    lm --setting facts --split valid --sizes gpt-1m --methods naive,replay --jobs 2 &
    lm --setting facts --split valid --sizes gpt-1m --methods ewc --set strength=0.001,0.003,0.01 --jobs 3 &
    lm --setting facts --split valid --sizes gpt-1m --methods distill+replay --set weight=0.3,1 --jobs 2 &
    wait
    "$py" benchmarks/lm.py choose --setting facts --method ewc --sizes gpt-1m
    "$py" benchmarks/lm.py choose --setting facts --method distill+replay --sizes gpt-1m
    lm --setting facts --sizes gpt-1m --methods naive,replay,ewc,ewc+replay,distill+replay --seeds 0,1,2 --jobs 6
) > logs/gpu/facts.log 2>&1 &
(   # scaling: gpt-1m's missing seeds, then gpt-4m and gpt-16m (each pre-trained once first), then the probe
    lm --setting domains --sizes gpt-4m,gpt-16m --methods naive --seeds 0 --jobs 2
    lm --setting domains --sizes gpt-1m,gpt-4m --methods naive,replay,distill+replay,ewc+replay --seeds 0,1,2 \
       --equal-bytes --jobs 8
    lm --setting domains --sizes gpt-16m --methods naive,replay,distill+replay,ewc+replay --seeds 0,1,2 \
       --equal-bytes --jobs 8
    lm --setting probe --sizes gpt-1m --methods naive,replay,joint --seeds 0,1,2 --jobs 8
    lm --setting probe --sizes gpt-1m --methods ewc,ewc+replay --set strength=0.01,0.1 --seeds 0,1,2 --jobs 8
) > logs/gpu/domains.log 2>&1 &
fi
while [ -n "$(jobs -r)" ]; do sleep 20; echo "[$SECONDS s] $(cat logs/gpu/*.log | grep -c ': done') jobs done"; done
wait
grep -h "FAILED\|failed\|Error" logs/gpu/*.log | head -20
echo "finished at $SECONDS s"
# on the device tool's machine: everything back in one file (it returns at most 8), merged at home
if [ -n "${OUT:-}" ]; then
    tar czf "$OUT/lm-gpu.tgz" results/lm-*.json results/tuning/lm-*.json logs/gpu && ls -l "$OUT/lm-gpu.tgz"
fi
