// `peft inspect DIR`: what a model directory or an adapter directory holds (architecture, sizes,
// dtypes, tokenizer and chat format; or adapter type, schedule, ranks and parameters).
#include <iostream>

#include "command.h"
#include "peft/core/flags.h"
#include "peft/observability/inspect.h"

namespace {

int run_inspect(const std::vector<std::string>& argv) {
  std::string path;
  bool json = false;
  peft::Flags args(
      "inspect", "peft inspect DIR|FILE.gguf [--json]",
      "Describes a directory from its JSON files and safetensors headers, without loading weights.\n"
      "A model directory (config.json): architecture, family, layers, hidden size, heads and\n"
      "key/value heads, vocabulary, dtypes and parameter count of the safetensors, tied embeddings,\n"
      "the tokenizer (vocabulary, special tokens, eos ids) and whether its chat format is recognised.\n"
      "An adapter directory (adapter_config.json): peft_type, task_type, target modules and those\n"
      "found in the weights, AdaLoRA's init_r/target_r/total_step/tinit/tfinal/deltaT or LoRA's r,\n"
      "the kept rank total from the tensor shapes, trainable parameters and modules_to_save.\n"
      "A llama.cpp GGUF file: the same facts as for a model directory, from its metadata, with the\n"
      "tensor types it stores.",
      "  peft inspect models/fortune-llama\n"
      "  peft inspect SmolLM2-135M-Instruct.Q4_1.gguf\n"
      "  peft inspect out/demo/adapter --json");
  args.positional("DIR", &path);
  args.toggle("json", "print the facts as one JSON object instead of text", &json);
  if (!args.parse(argv)) return 0;
  args.require("DIR", path);
  auto r = peft::inspect_path(path);
  if (json) {
    nlohmann::ordered_json j;
    j["path"] = r.path;
    j["kind"] = r.kind;
    for (auto& [k, v] : r.json.items()) j[k] = v;
    j["notes"] = r.notes;
    std::cout << j.dump() << "\n";
  } else {
    std::cout << r.render();
  }
  return 0;
}

}  // namespace

PEFT_COMMAND("inspect", "what a model or adapter directory holds", run_inspect);
