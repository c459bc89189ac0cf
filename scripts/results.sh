#!/usr/bin/env bash
# Reproduces the tables of docs/results.md end to end: fetches the model and the data
# (scripts/fetch-results-data.sh), picks each method's learning rate on a development split cut from
# the training reviews, trains LoRA and AdaLoRA at matched budgets with it on all the training
# reviews (all-MiniLM-L6-v2 + a classifier head), evaluates each adapter once on the held-out test
# split, runs the AdaLoRA settings in Hugging Face PEFT too, and prints the markdown tables.
#
#   scripts/results.sh                 # everything (runs already finished in $RESULTS_OUT are reused)
#   SEEDS="1 2 3" scripts/results.sh   # more seeds
#   scripts/results.sh --table         # only print the tables of the runs finished so far
#
# Settings (environment): SEEDS (default "1 2"), RESULTS_LRS (the learning rates tried, default
# "1e-3 3e-3 1e-2 3e-2"), RESULTS_PEFT (1: also run PEFT, the default; 0: not), RESULTS_OUT (default
# .cache/results/runs), RESULTS_EPOCHS (1), RESULTS_BATCH (16), RESULTS_MAX_LENGTH (128),
# PEFT_NUM_THREADS (2). Every training and evaluation command runs under flock /tmp/peft-build.lock,
# so it never overlaps with the builds and benchmarks of the machine.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEFT="$ROOT/build/peft"
PY="$ROOT/.venv/bin/python"
DATA="$ROOT/.cache/results"
OUT="${RESULTS_OUT:-$DATA/runs}"
SEEDS="${SEEDS:-1 2}"
LRS="${RESULTS_LRS:-1e-3 3e-3 1e-2 3e-2}"
WITH_PEFT="${RESULTS_PEFT:-1}"
EPOCHS="${RESULTS_EPOCHS:-1}"
BATCH="${RESULTS_BATCH:-16}"
MAXLEN="${RESULTS_MAX_LENGTH:-128}"
LOCK=/tmp/peft-build.lock
export PEFT_NUM_THREADS="${PEFT_NUM_THREADS:-2}"

TABLE_ONLY=0
[ "${1:-}" = "--table" ] && TABLE_ONLY=1
[ -x "$PEFT" ] || { echo "results: error: $PEFT is missing: build it (cmake --build build --target peft_cli)" >&2; exit 1; }
[ $TABLE_ONLY = 1 ] || "$ROOT/scripts/fetch-results-data.sh" >&2

MODEL="$DATA/minilm-cls"
TRAIN="$DATA/train.jsonl"
TEST="$DATA/test.jsonl"
# The development split: the last 500 training reviews (the file is in modeldata's order, with the
# same share of "great" in every block of 500); the learning rates are tried on the first 3500.
FIT="$DATA/fit.jsonl"
DEV="$DATA/dev.jsonl"
if [ $TABLE_ONLY = 0 ]; then
  head -n 3500 "$TRAIN" >"$FIT.tmp" && mv "$FIT.tmp" "$FIT"
  tail -n +3501 "$TRAIN" >"$DEV.tmp" && mv "$DEV.tmp" "$DEV"
fi
mkdir -p "$OUT/sweep"

steps_for() { python3 -c "import math; print(math.ceil($(wc -l <"$1") * $EPOCHS / $BATCH))"; }

# method_flags NAME STEPS: the method's flags. lora_alpha = 2 x the rank the adapter is created with
# (a scaling of 2 for all); AdaLoRA's schedule from the step count: 10% warm-up at init_r, budgeting
# until the last 20%, a new mask every 2% of the run.
method_flags() {
  local steps=$2 tinit=$(($2 / 10)) tfinal=$(($2 / 5)) deltat=$(($2 / 50 > 0 ? $2 / 50 : 1))
  local sched="--tinit $tinit --tfinal $tfinal --deltaT $deltat"
  case "$1" in
    lora-r2) echo "--method lora --r 2 --lora_alpha 4" ;;
    adalora-3to2) echo "--method adalora --init_r 3 --target_r 2 --lora_alpha 6 $sched" ;;
    lora-r8) echo "--method lora --r 8 --lora_alpha 16" ;;
    adalora-12to8) echo "--method adalora --init_r 12 --target_r 8 --lora_alpha 24 $sched" ;;
  esac
}

# train_eval NAME DATA EVAL_DATA LR SEED RUN: trains into RUN/, evaluates on EVAL_DATA into RUN.eval.json
# and records the wall time of `peft train` (loading, training, saving; taken inside the lock) in RUN.time.
train_eval() {
  local name=$1 data=$2 evaldata=$3 lr=$4 seed=$5 run=$6
  if [ -s "$run.eval.json" ] && [ -s "$run.time" ]; then
    echo "results: $(basename "$run"): done earlier"
    return
  fi
  local flags
  read -r -a flags <<<"$(method_flags "$name" "$(steps_for "$data")")"
  echo "results: $(basename "$run"): training (${flags[*]} --lr $lr --seed $seed on $(basename "$data"))"
  flock "$LOCK" bash -c 's=$(date +%s.%N); "$@"; e=$(date +%s.%N); python3 -c "print(round($e - $s, 1))"' _ \
    "$PEFT" train --model "$MODEL" --data "$data" --target_modules query,key,value,dense \
    --modules_to_save classifier --max-length "$MAXLEN" --batch-size "$BATCH" --epochs "$EPOCHS" \
    --lr "$lr" --warmup-steps 10 --logging-steps 25 --report=false "${flags[@]}" --seed "$seed" \
    --output-dir "$run" --overwrite-output-dir >"$run.log.tmp" 2>&1 || { tail -n 20 "$run.log.tmp" >&2; exit 1; }
  tail -n 1 "$run.log.tmp" >"$run.time"
  mv "$run.log.tmp" "$run.log"
  flock "$LOCK" "$PEFT" eval --model "$MODEL" --adapter "$run/adapter" --data "$evaldata" \
    --max-length "$MAXLEN" --batch-size 32 | tail -n 1 >"$run.eval.json.tmp"
  mv "$run.eval.json.tmp" "$run.eval.json"
  echo "results: $(basename "$run"): $(cat "$run.eval.json"), trained in $(cat "$run.time") s"
}

# best_lr FAMILY: the learning rate with the highest development accuracy for the family's small
# budget (ties: the lower development loss); it is used for both budgets of the family.
best_lr() {
  python3 - "$OUT/sweep" "$1" $LRS <<'EOF2'
import json, os, sys
d, name, lrs = sys.argv[1], sys.argv[2], sys.argv[3:]
runs = [(lr, json.load(open(os.path.join(d, f"{name}-lr{lr}.eval.json")))) for lr in lrs
        if os.path.exists(os.path.join(d, f"{name}-lr{lr}.eval.json"))]
if not runs:
    sys.exit(1)
print(max(runs, key=lambda r: (r[1]["eval_accuracy"], -r[1]["eval_loss"]))[0])
EOF2
}

LORA_LR=""; ADA_LR=""
if [ $TABLE_ONLY = 0 ]; then
  echo "results: $(wc -l <"$TRAIN") training reviews ($(steps_for "$TRAIN") steps of $BATCH), learning rates tried on $(wc -l <"$FIT") of them and scored on $(wc -l <"$DEV") ($(steps_for "$FIT") steps): $LRS; seeds $SEEDS; PEFT_NUM_THREADS=$PEFT_NUM_THREADS" >&2
  # The model before training (the head as initialised): the same for every run.
  for split in test dev; do
    f="$OUT/base.$split.eval.json"
    [ -s "$f" ] || flock "$LOCK" "$PEFT" eval --model "$MODEL" --data "$DATA/$split.jsonl" \
      --max-length "$MAXLEN" --batch-size 32 | tail -n 1 >"$f"
  done
  for lr in $LRS; do
    for name in lora-r2 adalora-3to2; do
      train_eval "$name" "$FIT" "$DEV" "$lr" 1 "$OUT/sweep/$name-lr$lr" >&2
    done
  done
fi
LORA_LR="$(best_lr lora-r2 || true)"
ADA_LR="$(best_lr adalora-3to2 || true)"
lr_of() { case "$1" in lora-*) echo "$LORA_LR" ;; adalora-*) echo "$ADA_LR" ;; esac; }
if [ $TABLE_ONLY = 0 ]; then
  echo "results: chosen on the development split: LoRA lr $LORA_LR, AdaLoRA lr $ADA_LR" >&2
  for seed in $SEEDS; do
    for name in lora-r2 adalora-3to2 lora-r8 adalora-12to8; do
      train_eval "$name" "$TRAIN" "$TEST" "$(lr_of "$name")" "$seed" "$OUT/$name-lr$(lr_of "$name")-s$seed" >&2
    done
  done
  # The same runs in Hugging Face PEFT (seed 1): the small budgets at the chosen learning rates, and
  # AdaLoRA at the lowest rate tried too.
  if [ "$WITH_PEFT" = 1 ]; then
    first_lr="${LRS%% *}"
    for spec in "lora-r2 $LORA_LR --method lora --r 2 --lora_alpha 4" \
                "adalora-3to2 $ADA_LR --method adalora --init_r 3 --target_r 2 --lora_alpha 6" \
                "adalora-3to2 $first_lr --method adalora --init_r 3 --target_r 2 --lora_alpha 6"; do
      read -r name lr flags <<<"$spec"
      out="$OUT/peft-$name-lr$lr-s1.eval.json"
      [ -s "$out" ] && continue
      echo "results: PEFT $name lr $lr seed 1: training" >&2
      # shellcheck disable=SC2086
      flock "$LOCK" "$PY" "$ROOT/scripts/results-peft.py" --model "$MODEL" --train "$TRAIN" --test "$TEST" \
        $flags --lr "$lr" --seed 1 --epochs "$EPOCHS" --batch-size "$BATCH" --max-length "$MAXLEN" \
        --out "$out" >"$OUT/peft-$name-lr$lr-s1.log" 2>&1 || { tail -n 20 "$OUT/peft-$name-lr$lr-s1.log" >&2; exit 1; }
      echo "results: PEFT $name lr $lr seed 1: $(cat "$out")" >&2
    done
  fi
fi

# The tables. Parameters are counted from the adapter files (safetensors headers) and, for AdaLoRA,
# the final rank_pattern: a LoRA module of rank r on a d_in -> d_out weight holds r (d_in + d_out)
# numbers; an AdaLoRA module r (d_in + d_out + 1) (A, B and the singular values E).
python3 - "$OUT" "$SEEDS" "$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)" "$TEST" "$LORA_LR" "$ADA_LR" "$LRS" <<'EOF2'
import json, math, os, statistics, struct, sys

out, seeds, cpu, test, lora_lr, ada_lr, lrs = sys.argv[1:8]
seeds, lrs = seeds.split(), lrs.split()
labels = [json.loads(line)["label"] for line in open(test)]
majority = max(labels.count(0), labels.count(1)) / len(labels)
lr_of = lambda name: lora_lr if name.startswith("lora") else ada_lr
load = lambda path: json.load(open(path)) if os.path.exists(path) else None

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
pct = lambda v: f"{100 * v:.1f}"

print(f"CPU: {cpu}, PEFT_NUM_THREADS={os.environ.get('PEFT_NUM_THREADS', '2')}.")
print()
print("**Learning rate**, seed 1, trained on the first 3500 training reviews, accuracy % on the other 500 "
      "(development split; the chosen rate in bold):")
print()
print("| method | " + " | ".join(f"lr {lr}" for lr in lrs) + " |")
print("|---|" + "---:|" * len(lrs))
for name, label in rows[:2]:
    cells = []
    for lr in lrs:
        e = load(os.path.join(out, "sweep", f"{name}-lr{lr}.eval.json"))
        cell = pct(e["eval_accuracy"]) if e else "–"
        cells.append(f"**{cell}**" if e and lr == lr_of(name) else cell)
    print(f"| {label} | " + " | ".join(cells) + " |")
base_dev = load(os.path.join(out, "base.dev.eval.json"))
if base_dev:
    print()
    print(f"Before training: {pct(base_dev['eval_accuracy'])} % on the development split.")
print()
print(f"**Held-out accuracy** on the {len(labels)} test reviews, trained on all 4000 training reviews at the "
      f"chosen rates (seeds {', '.join(seeds)}; runs at rates not chosen, where there are any, are marked):")
print()
lines, modules, head = [], 37, 770
for name, label, lr in [(n, l, lr) for n, l in rows for lr in lrs]:
    accs, times, c = [], [], None
    for s in seeds:
        run = os.path.join(out, f"{name}-lr{lr}-s{s}")
        e = load(run + ".eval.json")
        if not e:
            continue
        accs.append(e["eval_accuracy"])
        times.append(float(open(run + ".time").read()))
        c = count(run)
    if not accs:
        continue
    sd = f"{100 * statistics.stdev(accs):.1f}" if len(accs) > 1 else "?"
    modules, head = c["modules"], c["head"]
    lines.append(f"| {label} | {lr if lr == lr_of(name) else lr + ' (not chosen)'} | {c['ranks']} | {c['trained']:,} | {c['live']:,} "
                 f"| {pct(statistics.mean(accs))} ± {sd} | {' / '.join(pct(a) for a in accs)} | {statistics.mean(times):.0f} |")
print(f"| method | lr | final total rank ({modules} modules) | adapter parameters trained | parameters in the final ranks "
      f"| accuracy % (mean ± sd) | accuracy % per seed | train time per run (s) |")
print("|---|---:|---:|---:|---:|---:|---|---:|")
print("\n".join(lines))
print()
base = load(os.path.join(out, "base.test.eval.json"))
if base:
    print(f"Before training (the classifier head as initialised): accuracy {pct(base['eval_accuracy'])} %; "
          f"predicting \"great\" for every review: {pct(majority)} %. Every run also trains the classifier head "
          f"(modules_to_save, {head} parameters), not counted above.")
peft_rows = []
for name, label in rows[:2]:
    for lr in lrs:
        p = load(os.path.join(out, f"peft-{name}-lr{lr}-s1.eval.json"))
        if not p:
            continue
        ours = load(os.path.join(out, f"{name}-lr{lr}-s1.eval.json"))
        t = os.path.join(out, f"{name}-lr{lr}-s1.time")
        peft_rows.append(f"| {label} | {lr} | {pct(ours['eval_accuracy']) if ours else '–'} | {pct(p['eval_accuracy'])} "
                         f"| {ours['eval_loss']:.3f} / {p['eval_loss']:.3f} | " if ours else
                         f"| {label} | {lr} | – | {pct(p['eval_accuracy'])} | – / {p['eval_loss']:.3f} | ")
        peft_rows[-1] += f"{float(open(t).read()):.0f} / {p['train_seconds']:.0f} |" if os.path.exists(t) else f"– / {p['train_seconds']:.0f} |"
if peft_rows:
    print()
    print("**The same runs in Hugging Face PEFT** (scripts/results-peft.py: transformers + PEFT, seed 1, all 4000 "
          "training reviews, test accuracy; each side shuffles with its own generator):")
    print()
    print("| method | lr | peft.cpp accuracy % | PEFT accuracy % | test loss peft.cpp / PEFT | train time (s) peft.cpp / PEFT |")
    print("|---|---:|---:|---:|---:|---:|")
    print("\n".join(peft_rows))
EOF2
