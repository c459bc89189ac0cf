#!/usr/bin/env bash
# Reproduces the table of docs/results.md end to end: fetches the model and the data
# (scripts/fetch-results-data.sh), trains LoRA and AdaLoRA at matched budgets on Amazon fine-food
# reviews with all-MiniLM-L6-v2 + a classifier head, evaluates each adapter on the held-out test
# split, and prints the markdown table.
#
#   scripts/results.sh                 # all runs (those already finished in $RESULTS_OUT are reused)
#   SEEDS="1 2 3" scripts/results.sh   # more seeds
#   scripts/results.sh --table         # only print the table of the runs finished so far
#
# Settings (environment): SEEDS (default "1 2"), RESULTS_OUT (default .cache/results/runs),
# RESULTS_LR (1e-3), RESULTS_EPOCHS (1), RESULTS_BATCH (16), RESULTS_MAX_LENGTH (128),
# PEFT_NUM_THREADS (2). Every training and evaluation command runs under
# flock /tmp/peft-build.lock, so it never overlaps with the builds and benchmarks of the machine.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEFT="$ROOT/build/peft"
DATA="$ROOT/.cache/results"
OUT="${RESULTS_OUT:-$DATA/runs}"
SEEDS="${SEEDS:-1 2}"
LR="${RESULTS_LR:-1e-3}"
EPOCHS="${RESULTS_EPOCHS:-1}"
BATCH="${RESULTS_BATCH:-16}"
MAXLEN="${RESULTS_MAX_LENGTH:-128}"
LOCK=/tmp/peft-build.lock
export PEFT_NUM_THREADS="${PEFT_NUM_THREADS:-2}"

TABLE_ONLY=0
[ "${1:-}" = "--table" ] && TABLE_ONLY=1
[ -x "$PEFT" ] || { echo "results: error: $PEFT is missing: build it (cmake --build build --target peft_cli)" >&2; exit 1; }
[ $TABLE_ONLY = 1 ] || "$ROOT/scripts/fetch-results-data.sh"

MODEL="$DATA/minilm-cls"
TRAIN="$DATA/train.jsonl"
TEST="$DATA/test.jsonl"
N=$(wc -l <"$TRAIN")
STEPS=$(python3 -c "import math; print(math.ceil($N * $EPOCHS / $BATCH))")
# AdaLoRA's schedule from the step count: 10% warm-up at init_r, budgeting until the last 20%,
# a new mask every 2% of the run.
TINIT=$((STEPS / 10))
TFINAL=$((STEPS / 5))
DELTAT=$((STEPS / 50 > 0 ? STEPS / 50 : 1))
COMMON=(--model "$MODEL" --data "$TRAIN" --target_modules query,key,value,dense --modules_to_save classifier
        --max-length "$MAXLEN" --batch-size "$BATCH" --epochs "$EPOCHS" --lr "$LR" --warmup-steps 10
        --logging-steps 25 --report=false)

# name  method flags (lora_alpha = 2 x the rank the adapter is created with: a scaling of 2 for all)
CONFIGS=(
  "lora-r2|--method lora --r 2 --lora_alpha 4"
  "adalora-3to2|--method adalora --init_r 3 --target_r 2 --lora_alpha 6 --tinit $TINIT --tfinal $TFINAL --deltaT $DELTAT"
  "lora-r8|--method lora --r 8 --lora_alpha 16"
  "adalora-12to8|--method adalora --init_r 12 --target_r 8 --lora_alpha 24 --tinit $TINIT --tfinal $TFINAL --deltaT $DELTAT"
)

mkdir -p "$OUT"
[ $TABLE_ONLY = 1 ] || {
echo "results: $N training examples, $STEPS steps ($EPOCHS epoch(s) x batch $BATCH), lr $LR, max-length $MAXLEN, seeds $SEEDS, PEFT_NUM_THREADS=$PEFT_NUM_THREADS"
echo "results: AdaLoRA schedule: tinit $TINIT, tfinal $TFINAL, deltaT $DELTAT (total_step $STEPS)"

# The model before training (the head as initialised): the same for every run.
if [ ! -s "$OUT/base.eval.json" ]; then
  flock "$LOCK" "$PEFT" eval --model "$MODEL" --data "$TEST" --max-length "$MAXLEN" --batch-size 32 \
    | tail -n 1 >"$OUT/base.eval.json"
fi

for seed in $SEEDS; do
  for entry in "${CONFIGS[@]}"; do
    name="${entry%%|*}"
    read -r -a flags <<<"${entry#*|}"
    run="$OUT/$name-s$seed"
    if [ -s "$run.eval.json" ] && [ -s "$run.time" ]; then
      echo "results: $name seed $seed: done earlier ($run)"
      continue
    fi
    echo "results: $name seed $seed: training"
    # The wall time of `peft train` (loading, training, saving), taken inside the lock.
    flock "$LOCK" bash -c 's=$(date +%s.%N); "$@"; e=$(date +%s.%N); python3 -c "print(round($e - $s, 1))"' _ \
      "$PEFT" train "${COMMON[@]}" "${flags[@]}" --seed "$seed" --output-dir "$run" --overwrite-output-dir \
      >"$run.log.tmp" 2>&1 || { tail -n 20 "$run.log.tmp" >&2; exit 1; }
    tail -n 1 "$run.log.tmp" >"$run.time"
    mv "$run.log.tmp" "$run.log"
    flock "$LOCK" "$PEFT" eval --model "$MODEL" --adapter "$run/adapter" --data "$TEST" --max-length "$MAXLEN" \
      --batch-size 32 | tail -n 1 >"$run.eval.json"
    echo "results: $name seed $seed: $(cat "$run.eval.json"), trained in $(cat "$run.time") s"
  done
done
} >&2

# The table. Parameters are counted from the adapter files (safetensors headers) and, for AdaLoRA,
# the final rank_pattern: a LoRA module of rank r on a d_in -> d_out weight holds r (d_in + d_out)
# numbers; an AdaLoRA module r (d_in + d_out + 1) (A, B and the singular values E).
python3 - "$OUT" "$SEEDS" "$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)" "$TEST" <<'EOF'
import json, math, os, statistics, struct, sys

out, seeds, cpu, test = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4]
labels = [json.loads(line)["label"] for line in open(test)]
majority = max(labels.count(0), labels.count(1)) / len(labels)

def shapes(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}

def count(run):
    # The adapter file holds each module at its final rank (PEFT's format: AdaLoRA's A, E and B cut
    # to the rank_pattern); AdaLoRA trained every module at init_r.
    sh = shapes(os.path.join(run, "adapter", "adapter_model.safetensors"))
    cfg = json.load(open(os.path.join(run, "adapter", "adapter_config.json")))
    adalora = cfg["peft_type"] == "ADALORA"
    head = sum(math.prod(s) for k, s in sh.items() if ".lora_" not in k)
    modules = {}
    for k, s in sh.items():
        if k.endswith(".lora_A") or ".lora_A." in k:
            d = modules.setdefault(k.split(".lora_A")[0], {})
            d["in"], d["r"] = s[1], s[0]
        elif k.endswith(".lora_B") or ".lora_B." in k:
            modules.setdefault(k.split(".lora_B")[0], {})["out"] = s[0]
    trained = live = ranks = 0
    for d in modules.values():
        per_rank = d["in"] + d["out"] + (1 if adalora else 0)
        trained += (cfg["init_r"] if adalora else d["r"]) * per_rank
        live += d["r"] * per_rank
        ranks += d["r"]
    return {"modules": len(modules), "trained": trained, "live": live, "ranks": ranks, "head": head}

rows = [("lora-r2", "LoRA r=2"), ("adalora-3to2", "AdaLoRA init_r 3 → target_r 2"),
        ("lora-r8", "LoRA r=8"), ("adalora-12to8", "AdaLoRA init_r 12 → target_r 8")]
base = json.load(open(os.path.join(out, "base.eval.json")))
print(f"Held-out accuracy on the {len(labels)} test reviews (seeds {', '.join(seeds)}); CPU: {cpu}, PEFT_NUM_THREADS={os.environ.get('PEFT_NUM_THREADS', '2')}.")
print()
lines = []
for name, label in rows:
    accs, times, c = [], [], None
    for s in seeds:
        run = os.path.join(out, f"{name}-s{s}")
        if not os.path.exists(run + ".eval.json"):
            continue
        accs.append(json.load(open(run + ".eval.json"))["eval_accuracy"])
        times.append(float(open(run + ".time").read()))
        c = count(run)
    if not accs:
        continue
    sd = f"{100 * statistics.stdev(accs):.1f}" if len(accs) > 1 else "?"
    modules, head = c["modules"], c["head"]
    lines.append(f"| {label} | {c['ranks']} | {c['trained']:,} | {c['live']:,} | {100 * statistics.mean(accs):.1f} ± {sd} "
                 f"| {' / '.join(f'{100 * a:.1f}' for a in accs)} | {statistics.mean(times):.0f} |")
print(f"| method | final total rank ({modules} modules) | adapter parameters trained | parameters in the final ranks "
      f"| accuracy % (mean ± sd) | accuracy % per seed | train time per run (s) |")
print("|---|---:|---:|---:|---:|---|---:|")
print("\n".join(lines))
print()
print(f"Before training (the classifier head as initialised): accuracy {100 * base['eval_accuracy']:.1f} %; "
      f"predicting \"great\" for every review: {100 * majority:.1f} %. Every run also trains the classifier head "
      f"(modules_to_save, {head} parameters), not counted above.")
EOF
