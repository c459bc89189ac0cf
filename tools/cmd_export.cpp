// `peft export`: an AdaLoRA adapter as a plain PEFT LoRA adapter (per-module ranks and alphas), or any
// adapter as a llama.cpp LoRA GGUF; prints the rank each module keeps and how it is scaled.
#include <algorithm>
#include <iomanip>
#include <iostream>
#include <map>
#include <stdexcept>

#include "command.h"
#include "peft/adapters/gguf_lora.h"
#include "peft/formats/adapter_config.h"
#include "peft/core/flags.h"
#include "peft/observability/inspect.h"
#include "peft/adapters/peft_model.h"

namespace {

// --gguf: the adapter as llama.cpp's LoRA file, with the scale of each module.
int export_gguf(const std::string& src, const std::string& model, const std::string& dtype, const std::string& dst) {
  peft::GgufLoraOptions o;
  o.adapter_dir = src;
  o.model = model;
  o.output = dst;
  if (dtype == "f32" || dtype == "float32") o.dtype = peft::GgmlType::F32;
  else if (dtype == "f16" || dtype == "float16") o.dtype = peft::GgmlType::F16;
  else throw std::invalid_argument("--dtype: expected f32 or f16, got \"" + dtype + "\"");
  auto r = peft::export_gguf_lora(o);
  size_t width = 6;
  for (auto& m : r.modules) width = std::max(width, m.tensor.size());
  std::cout << std::left << std::setw(static_cast<int>(width)) << "tensor" << "  rank  scale\n";
  int64_t kept = 0, pruned = 0, baked = 0;
  for (auto& m : r.modules) {
    std::cout << std::setw(static_cast<int>(width)) << m.tensor << "  " << std::setw(4) << m.rank << "  ";
    if (m.rank == 0) {
      std::cout << "(pruned: left out)\n";
      ++pruned;
      continue;
    }
    ++kept;
    std::cout << m.scale;
    if (m.baked != 1) {
      std::cout << " (x" << m.baked << " in lora_b)";
      ++baked;
    }
    if (m.rope_rows) std::cout << " (lora_b rows in llama.cpp's rotary order)";
    std::cout << "\n";
  }
  std::cout << "exported " << kept << " modules";
  if (pruned) std::cout << " (" << pruned << " pruned to rank 0 left out)";
  std::cout << " to " << dst << " for llama.cpp's \"" << r.architecture << "\" base " << r.base
            << ", adapter.lora.alpha = " << r.alpha << "\n";
  if (baked)
    std::cout << "note: " << baked << " modules have a scale other than alpha / rank; it is multiplied into their lora_b\n";
  std::cout << "use: llama-cli -m BASE.gguf --lora " << dst << "\n";
  return 0;
}

int run_export(const std::vector<std::string>& argv) {
  std::string src, gguf, model, dtype = "f32", dst;
  peft::Flags args(
      "export", "peft export --lora ADAPTER_DIR --output DIR\n       peft export --gguf ADAPTER_DIR [--model DIR|FILE.gguf] --output FILE.gguf",
      "--lora converts an AdaLoRA adapter into a plain PEFT LoRA adapter that gives the same outputs:\n"
      "for each module, A' = (A * E) over the kept triplets and B' = B over the same columns, with\n"
      "rank_pattern holding each module's kept rank and alpha_pattern the matching lora_alpha (so\n"
      "alpha / r stays AdaLoRA's lora_alpha / init_r). Modules pruned to rank 0 are left out;\n"
      "modules_to_save weights are copied. The result loads with PEFT's LoraConfig, vLLM and other\n"
      "LoRA tools that read rank_pattern and alpha_pattern.\n"
      "\n"
      "--gguf writes a LoRA or AdaLoRA adapter of a Llama-family (Llama, Mistral, SmolLM) or Qwen2\n"
      "model as a llama.cpp LoRA adapter file, to run with the base converted to GGUF:\n"
      "  llama-cli -m base.gguf --lora adapter.gguf\n"
      "Tensors are named as llama.cpp names the base's (blk.N.attn_q.weight.lora_a, .lora_b), lora_b of\n"
      "q and k has its rows in llama.cpp's rotary order, and since llama.cpp scales every module by one\n"
      "adapter.lora.alpha / rank, each module's own scale (AdaLoRA's kept ranks, rsLoRA, rank_pattern,\n"
      "alpha_pattern) is multiplied into its lora_b. The base (--model, by default the adapter's\n"
      "base_model_name_or_path) gives the architecture and head counts; a .gguf base is also checked to\n"
      "hold every adapted tensor. Refused, naming the module: modules other than the attention and MLP\n"
      "projections, modules_to_save, classification adapters, GPT-2 and BERT models.",
      "  peft export --lora out/demo/adapter --output out/demo/adapter-lora\n"
      "  peft export --gguf out/demo/adapter --model models/fortune-llama --output out/demo/adapter.gguf");
  args.flag("lora", "ADAPTER_DIR", "the AdaLoRA adapter directory to convert to a PEFT LoRA adapter", &src);
  args.flag("gguf", "ADAPTER_DIR", "the LoRA or AdaLoRA adapter directory to write as a llama.cpp GGUF adapter", &gguf);
  args.flag("model", "DIR|FILE.gguf", "--gguf: the base model (default: the adapter's base_model_name_or_path)", &model);
  args.flag("dtype", "f32|f16", "--gguf: the type of the lora_a / lora_b tensors (default f32)", &dtype);
  args.flag("output", "DIR|FILE.gguf", "--lora: directory for the LoRA adapter (created; its adapter files are replaced); "
            "--gguf: the file to write (replaced); never the input", &dst);
  if (!args.parse(argv)) return 0;
  if (!src.empty() && !gguf.empty()) throw std::invalid_argument("give one of --lora and --gguf, not both (see peft export --help)");
  if (src.empty() && gguf.empty()) throw std::invalid_argument("give --lora ADAPTER_DIR or --gguf ADAPTER_DIR (see peft export --help)");
  args.require("output", dst);
  if (!gguf.empty()) return export_gguf(gguf, model, dtype, dst);
  if (!model.empty() || dtype != "f32") throw std::invalid_argument("--model and --dtype apply to --gguf only");

  auto before = peft::adapter_modules(src);
  peft::export_adalora_as_lora(src, dst);
  auto config = peft::AdapterConfig::from_file(dst + "/adapter_config.json");
  std::map<std::string, int64_t> kept;
  for (auto& m : peft::adapter_modules(dst)) kept[m.path] = m.rank;

  size_t width = 6;
  for (auto& m : before) width = std::max(width, m.path.size());
  std::cout << std::left << std::setw(static_cast<int>(width)) << "module" << "  rank kept\n";
  int64_t total = 0, dropped = 0, differ = 0;
  for (auto& m : before) {
    auto it = kept.find(m.path);
    std::cout << std::setw(static_cast<int>(width)) << m.path << "  ";
    if (it == kept.end()) {
      std::cout << "0 (pruned: left out)\n";
      ++dropped;
    } else {
      std::cout << it->second << "\n";
      total += it->second;
      differ += it->second != config.r;
    }
  }
  std::cout << "exported " << kept.size() << " modules (rank total " << total << ")";
  if (dropped) std::cout << ", " << dropped << " pruned to rank 0 left out";
  std::cout << " to " << dst << " as LoRA with r = " << config.r << ", lora_alpha = " << config.lora_alpha << "\n";
  if (differ)
    std::cout << "note: " << differ << " modules have a rank other than r = " << config.r
              << "; their scaling is set through alpha_pattern (and rank_pattern). Tools that ignore\n"
                 "alpha_pattern would scale those modules by lora_alpha / r instead and give wrong outputs.\n";
  return 0;
}

}  // namespace

PEFT_COMMAND("export", "convert an AdaLoRA adapter into a plain PEFT LoRA adapter, or an adapter into a llama.cpp GGUF", run_export);
