// `peft export`: an AdaLoRA adapter as a plain PEFT LoRA adapter (per-module ranks and alphas),
// printing the rank each module keeps and what tools must honour to scale it correctly.
#include <iomanip>
#include <iostream>
#include <map>

#include "command.h"
#include "peft/formats/adapter_config.h"
#include "peft/core/flags.h"
#include "peft/observability/inspect.h"
#include "peft/adapters/peft_model.h"

namespace {

int run_export(const std::vector<std::string>& argv) {
  std::string src, dst;
  peft::Flags args(
      "export", "peft export --lora ADAPTER_DIR --output DIR",
      "Converts an AdaLoRA adapter into a plain PEFT LoRA adapter that gives the same outputs:\n"
      "for each module, A' = (A * E) over the kept triplets and B' = B over the same columns, with\n"
      "rank_pattern holding each module's kept rank and alpha_pattern the matching lora_alpha (so\n"
      "alpha / r stays AdaLoRA's lora_alpha / init_r). Modules pruned to rank 0 are left out;\n"
      "modules_to_save weights are copied. The result loads with PEFT's LoraConfig, vLLM and other\n"
      "LoRA tools that read rank_pattern and alpha_pattern.",
      "  peft export --lora out/demo/adapter --output out/demo/adapter-lora");
  args.flag("lora", "ADAPTER_DIR", "the AdaLoRA adapter directory to convert", &src);
  args.flag("output", "DIR", "directory for the LoRA adapter (created; its adapter files are replaced; never the input)", &dst);
  if (!args.parse(argv)) return 0;
  args.require("lora", src);
  args.require("output", dst);

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

PEFT_COMMAND("export", "convert an AdaLoRA adapter into a plain PEFT LoRA adapter", run_export);
