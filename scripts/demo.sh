#!/usr/bin/env bash
# `make demo`: AdaLoRA fine-tunes a real pretrained model, SmolLM2-135M-Instruct read straight from its
# llama.cpp GGUF file, to answer with a citation as JSON; eval loss, a reply before and after, the ranks.
#
# Environment (all optional; the test runs the tiny shipped models/fortune-llama on definitions):
#   DEMO_OUT     output directory (default out/demo; a previous demo there is replaced)
#   DEMO_STEPS   optimizer steps (default 60); the AdaLoRA schedule scales with it
#   DEMO_BATCH   examples per step (default 4)       DEMO_LR   peak learning rate (default 2e-3)
#   DEMO_MODEL, DEMO_TRAIN, DEMO_EVAL   model (directory or .gguf file) and JSONL files
#   DEMO_CHAT    1 (default): the prompt is a user message in the model's chat format; 0: plain text
#   DEMO_PROMPT  the prompt answered before and after, \n read as a newline (default: the first
#                held-out chat's question)
#   PEFT         the peft binary (default build/peft)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

PEFT=${PEFT:-build/peft}
MODEL=${DEMO_MODEL:-.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf}
TRAIN=${DEMO_TRAIN:-data/demo/citations-train.jsonl}
EVAL=${DEMO_EVAL:-data/demo/citations-eval.jsonl}
OUT=${DEMO_OUT:-out/demo}
STEPS=${DEMO_STEPS:-60}
BATCH=${DEMO_BATCH:-4}
LR=${DEMO_LR:-2e-3}
CHAT=${DEMO_CHAT:-1}
# libgomp's default spin-waiting wastes the cores when other processes share them: sleep instead.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

for f in "$PEFT" "$MODEL" "$TRAIN" "$EVAL"; do
  [ -e "$f" ] || { echo "demo: $f is missing (run it with: make demo, which fetches the model)" >&2; exit 1; }
done
if [ -n "${DEMO_PROMPT+x}" ]; then
  printf -v PROMPT '%b' "$DEMO_PROMPT"
else  # the user's message of the first held-out conversation
  PROMPT=$(head -n 1 "$EVAL" | jq -r '.messages[0].content')
fi

# AdaLoRA schedule from the step count: 15% warm-up at full rank, a budgeting phase with about a
# dozen masks taking every module from rank 12 towards an average of 4, then 20% with the ranks fixed.
TINIT=$((STEPS * 15 / 100))
TFINAL=$((STEPS * 20 / 100))
[ "$TFINAL" -ge 1 ] || TFINAL=1
DELTAT=$(((STEPS - TINIT - TFINAL) / 12))
[ "$DELTAT" -ge 1 ] || DELTAT=1
LOGEVERY=$((STEPS / 30))
[ "$LOGEVERY" -ge 1 ] || LOGEVERY=1

if [ -e "$OUT" ]; then
  if [ -f "$OUT/demo.log" ] || [ -z "$(ls -A "$OUT")" ]; then
    rm -rf "$OUT"
  else
    echo "demo: $OUT exists and is not a previous demo's output; set DEMO_OUT to another directory" >&2
    exit 1
  fi
fi
mkdir -p "$OUT"
START=$(date +%s)

section() { printf '\n== %s\n' "$*"; }
sample() {  # sample LABEL [peft generate options]: the same prompt and settings each time
  local label=$1
  shift
  printf -- '--- %s\n' "$label"
  if [ "$CHAT" = 1 ]; then  # greedy: the reply the model finds most likely
    "$PEFT" generate --model "$MODEL" "$@" --chat --prompt "$PROMPT" --max-new-tokens 48 --temperature 0
  else
    "$PEFT" generate --model "$MODEL" "$@" --prompt "$PROMPT" --max-new-tokens 160 --temperature 0.7 --top-k 40 --seed 1
  fi
  printf '\n'
}

demo() {
if [ "$CHAT" = 1 ]; then
  section "peft.cpp demo: AdaLoRA teaches a real pretrained model a new answer format"
  echo "model: $MODEL"
  echo "       read directly from llama.cpp's GGUF format (dequantized to float32 in memory)"
  echo "task:  an attributed quotation -> its citation as JSON {\"author\", \"source\"};"
  echo "       $(wc -l < "$TRAIN") training and $(wc -l < "$EVAL") held-out chats (data/demo/, from Debian's fortunes)"
  section "the prompt (a held-out example), answered before and after"
  printf '%s\n' "$PROMPT"
else
  section "peft.cpp demo: AdaLoRA fine-tunes $MODEL"
  echo "task: $TRAIN, $(wc -l < "$TRAIN") training and $(wc -l < "$EVAL") held-out records"
fi

section "before fine-tuning: the base model"
sample "base model"

section "AdaLoRA fine-tuning: $STEPS steps, init_r 12 -> target_r 4 on all 7 linear types of every layer"
"$PEFT" train --model "$MODEL" --data "$TRAIN" --eval-data "$EVAL" --method adalora \
  --target_modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj \
  --init_r 12 --target_r 4 --lora_alpha 32 --tinit "$TINIT" --tfinal "$TFINAL" --deltaT "$DELTAT" \
  --max-steps "$STEPS" --batch-size "$BATCH" --max-length 256 --lr "$LR" --lr-scheduler linear \
  --warmup-steps "$TINIT" --seed 1 --logging-steps "$LOGEVERY" --output-dir "$OUT"

section "after fine-tuning: the same prompt, with the adapter"
sample "base model + AdaLoRA adapter" --adapter "$OUT/adapter"

section "final rank allocation (kept rank of each layer x module type)"
"$PEFT" ranks "$OUT/adapter"

if [[ "$MODEL" == *.gguf ]]; then
  section "the adapter for llama.cpp"
  "$PEFT" export --gguf "$OUT/adapter" --model "$MODEL" --output "$OUT/adapter.gguf" > "$OUT/export-gguf.log"
  tail -n 3 "$OUT/export-gguf.log"  # its per-module table stays in export-gguf.log
  LLAMA_CPP=$ROOT/.cache/llama-cpp
  if [ "$CHAT" = 1 ] && [ -d "$LLAMA_CPP/python/llama_cpp" ]; then
    printf -- '--- llama.cpp (llama-cpp-python, %s): the base + adapter.gguf, greedy\n' "$LLAMA_CPP"
    printf '%s' "$PROMPT" | PYTHONPATH="$LLAMA_CPP/python:$LLAMA_CPP/deps" "$ROOT/.venv/bin/python" \
      "$ROOT/scripts/llama-cpp-reply.py" "$MODEL" "$OUT/adapter.gguf"
  fi
fi

section "summary"
jq -rs --arg steps "$STEPS" '
  [.[] | select(.type == "eval")] as $e
  | ($e | first) as $b | ($e | last) as $a
  | "eval loss on \($e | first | .eval_tokens) held-out completion tokens:",
    "  before \($b.eval_loss * 1000 | round / 1000)  (perplexity \($b.eval_ppl * 100 | round / 100))",
    "  after  \($a.eval_loss * 1000 | round / 1000)  (perplexity \($a.eval_ppl * 100 | round / 100))  after \($steps) AdaLoRA steps",
    "  change \((($a.eval_loss - $b.eval_loss) / $b.eval_loss * 1000 | round) / 10)% loss, perplexity x\(($a.eval_ppl / $b.eval_ppl) * 100 | round / 100)"
' "$OUT/metrics.jsonl"
END=$(date +%s)
CHATFLAG="" GGUF_FILE="" GGUF_TRY=""
[ "$CHAT" = 1 ] && CHATFLAG="--chat "
if [ -f "$OUT/adapter.gguf" ]; then
  GGUF_FILE="  $OUT/adapter.gguf     the adapter in llama.cpp's LoRA format"$'\n'
  GGUF_TRY="      llama-cli -m $MODEL --lora $OUT/adapter.gguf    (llama.cpp)"$'\n'
fi
cat <<EOF
files:
  $OUT/adapter/        the adapter in PEFT's format (adapter_config.json, adapter_model.safetensors)
  $OUT/report.html     rank heat-maps, budget and loss curves (open it in a browser)
  $OUT/metrics.jsonl   one JSON line per logged step and evaluation
  $OUT/ranks.jsonl     the rank allocation at every mask
  $OUT/demo.log        this output
${GGUF_FILE}try:  $PEFT generate --model $MODEL --adapter $OUT/adapter ${CHATFLAG}--prompt "..."
${GGUF_TRY}demo: done in $(((END - START) / 60))m $(((END - START) % 60))s
EOF
}

# Everything goes to the terminal and to $OUT/demo.log; the exit status is the demo's.
demo 2>&1 | tee "$OUT/demo.log"
exit "${PIPESTATUS[0]}"
