// `peft merge`: folds an adapter into its base model and writes a plain Hugging Face checkpoint
// (config.json, model.safetensors, tokenizer files) that loads without PEFT.
#include <iostream>

#include "command.h"
#include "peft/core/flags.h"
#include "peft/adapters/merge.h"

namespace {

int run_merge(const std::vector<std::string>& argv) {
  peft::MergeOptions o;
  peft::Flags args(
      "merge", "peft merge --model DIR --adapter DIR --output DIR [--dtype float32|bfloat16]",
      "Adds the adapter's weight deltas (LoRA: B A * scaling; AdaLoRA: B (A * E) * scaling) to the\n"
      "base weights in float32 and writes the result as a Hugging Face checkpoint: config.json,\n"
      "model.safetensors with the base checkpoint's key names and shapes (a tied lm_head is not\n"
      "written), and copies of tokenizer.json, tokenizer_config.json, special_tokens_map.json and\n"
      "generation_config.json when the model has them. Weights trained in full with the adapter\n"
      "(modules_to_save, e.g. a classifier) are taken from the adapter. A merged weight that is not\n"
      "finite stops the merge before anything is written.",
      "  peft merge --model models/fortune-llama --adapter out/demo/adapter --output out/fortune-llama-merged\n"
      "  peft merge --model models/fortune-llama --adapter out/demo/adapter --output out/fortune-llama-bf16 --dtype bfloat16");
  args.flag("model", "DIR|FILE.gguf", "base model directory (config.json + model.safetensors) or llama.cpp GGUF file", &o.model_dir);
  args.flag("adapter", "DIR", "PEFT adapter directory (adapter_config.json + adapter_model.safetensors)", &o.adapter_dir);
  args.flag("output", "DIR", "directory for the merged checkpoint (created; files in it are replaced)", &o.output_dir);
  args.flag("dtype", "NAME", "dtype of the written weights: float32 (default) or bfloat16", &o.dtype);
  if (!args.parse(argv)) return 0;
  args.require("model", o.model_dir);
  args.require("adapter", o.adapter_dir);
  args.require("output", o.output_dir);
  auto r = peft::merge_to_checkpoint(o);
  std::cout << "merged " << r.merged_modules << " adapted modules of " << o.adapter_dir << " into " << o.model_dir;
  if (!r.modules_to_save.empty()) {
    std::cout << "; modules_to_save taken from the adapter:";
    for (auto& m : r.modules_to_save) std::cout << " " << m;
  }
  std::cout << "\nwrote " << o.output_dir << ": config.json, model.safetensors (" << r.tensors << " tensors, " << o.dtype << ")";
  for (auto& f : r.copied_files) std::cout << ", " << f;
  std::cout << "\n";
  return 0;
}

}  // namespace

PEFT_COMMAND("merge", "fold an adapter into its base model: a plain Hugging Face checkpoint", run_merge);
