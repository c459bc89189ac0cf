#!/usr/bin/env bash
# Reproduces models/fortune-llama, the small Llama that `make demo` fine-tunes: writes its config and
# byte-level tokenizer, then pretrains it from random weights with `peft train --method full`.
#
# Usage: scripts/pretrain-demo-model.sh [--init-only]
#   --init-only   write config.json and the tokenizer files to $WORK/init and stop
# Two runs of `peft train --method full`: phase 1 from random weights (600 steps, peak lr 3e-3),
# phase 2 continuing from phase 1's weights (800 steps, peak lr 2e-3, the same held-out split). A phase
# whose model/ already exists under $WORK is not run again.
# Environment: WORK (default out/pretrain), PEFT (default build/peft), DEST (default
# models/fortune-llama; set DEST= to leave it untouched).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PEFT=${PEFT:-build/peft}
WORK=${WORK:-out/pretrain}
DEST=${DEST-models/fortune-llama}
INIT="$WORK/init"
# libgomp's default spin-waiting wastes the cores when other processes share them: sleep instead.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
mkdir -p "$INIT"

# The model: Llama layout, 4 layers of width 256, grouped-query attention (4 heads, 2 KV heads),
# tied input/output embeddings; 257 tokens (256 bytes and <|endoftext|>).
cat > "$INIT/config.json" <<'EOF'
{
  "architectures": ["LlamaForCausalLM"],
  "model_type": "llama",
  "vocab_size": 257,
  "hidden_size": 256,
  "intermediate_size": 688,
  "num_hidden_layers": 4,
  "num_attention_heads": 4,
  "num_key_value_heads": 2,
  "head_dim": 64,
  "hidden_act": "silu",
  "max_position_embeddings": 512,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "attention_bias": false,
  "attention_dropout": 0.0,
  "mlp_bias": false,
  "tie_word_embeddings": true,
  "initializer_range": 0.02,
  "bos_token_id": 256,
  "eos_token_id": 256,
  "pad_token_id": 256,
  "torch_dtype": "float32",
  "use_cache": true
}
EOF

cat > "$INIT/generation_config.json" <<'EOF'
{
  "bos_token_id": 256,
  "eos_token_id": 256,
  "pad_token_id": 256,
  "do_sample": true,
  "temperature": 0.8,
  "top_k": 40,
  "max_new_tokens": 120
}
EOF

cat > "$INIT/tokenizer_config.json" <<'EOF'
{
  "tokenizer_class": "PreTrainedTokenizerFast",
  "bos_token": "<|endoftext|>",
  "eos_token": "<|endoftext|>",
  "pad_token": "<|endoftext|>",
  "unk_token": null,
  "add_prefix_space": false,
  "model_max_length": 512,
  "clean_up_tokenization_spaces": false
}
EOF

# tokenizer.json: GPT-2's byte-level scheme without its regex split and without merges, so each
# byte is one token (ids 0..255 in byte order, spelt with GPT-2's printable byte alphabet), plus
# <|endoftext|> (id 256), which the post-processor puts before every text.
jq -n '
  def byte_char:
    if (. >= 33 and . <= 126) or (. >= 161 and . <= 172) or (. >= 174) then [.] | implode
    else . as $b
      | ([range(0; $b)] | map(select(. < 33 or (. > 126 and . < 161) or . == 173)) | length) as $k
      | [256 + $k] | implode
    end;
  def bytelevel: {type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false};
  {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [{id: 256, content: "<|endoftext|>", single_word: false, lstrip: false, rstrip: false,
                    normalized: false, special: true}],
    normalizer: null,
    pre_tokenizer: bytelevel,
    post_processor: {
      type: "TemplateProcessing",
      single: [{SpecialToken: {id: "<|endoftext|>", type_id: 0}}, {Sequence: {id: "A", type_id: 0}}],
      pair: [{SpecialToken: {id: "<|endoftext|>", type_id: 0}}, {Sequence: {id: "A", type_id: 0}},
             {Sequence: {id: "B", type_id: 1}}],
      special_tokens: {"<|endoftext|>": {id: "<|endoftext|>", ids: [256], tokens: ["<|endoftext|>"]}}
    },
    decoder: bytelevel,
    model: {
      type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null,
      end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false,
      vocab: ([range(0; 256) | {key: byte_char, value: .}] + [{key: "<|endoftext|>", value: 256}] | from_entries),
      merges: []
    }
  }' > "$INIT/tokenizer.json"
echo "pretrain: wrote $INIT (config.json, tokenizer.json, tokenizer_config.json, generation_config.json)"
[ "${1:-}" = "--init-only" ] && exit 0

[ -f data/demo/pretrain.jsonl ] || bash scripts/make-demo-data.sh
[ -x "$PEFT" ] || { echo "pretrain: $PEFT is missing; build it first (make build)" >&2; exit 1; }

# Every step: 16 packed rows of 512 byte tokens (8192 tokens), AdamW with weight decay 0.1,
# clipping at 1, cosine decay after warm-up; 2% of the fortunes held out for evaluation.
COMMON=(--method full --data data/demo/pretrain.jsonl --eval-fraction 0.02 --pack --max-length 512
        --batch-size 16 --lr-scheduler cosine --weight-decay 0.1 --max-grad-norm 1.0
        --logging-steps 10 --eval-steps 200 --save-steps 200 --save-total-limit 1)
if [ ! -f "$WORK/phase1/model/model.safetensors" ]; then
  ( set -x; "$PEFT" train --from-scratch --model "$INIT" "${COMMON[@]}" --max-steps 600 --lr 3e-3 \
      --warmup-ratio 0.05 --seed 1 --output-dir "$WORK/phase1" )
fi
if [ ! -f "$WORK/phase2/model/model.safetensors" ]; then
  ( set -x; "$PEFT" train --model "$WORK/phase1/model" "${COMMON[@]}" --max-steps 800 --lr 2e-3 \
      --warmup-ratio 0.03 --seed 1 --output-dir "$WORK/phase2" )
fi

if [ -n "$DEST" ]; then
  mkdir -p "$DEST"
  cp "$WORK/phase2/model/config.json" "$WORK/phase2/model/model.safetensors" "$INIT/tokenizer.json" \
     "$INIT/tokenizer_config.json" "$INIT/generation_config.json" "$DEST/"
  echo "pretrain: model written to $DEST"
fi
