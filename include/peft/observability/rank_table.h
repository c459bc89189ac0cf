// Rank tables of an adapter: kept rank per (layer, module type), built from module paths with the
// layer/type rules of docs/formats.md, and rendered as text (numbers, shading heat-map, compact form).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace peft {

struct AdapterConfig;

// Where a module sits: `layer` is the first integer component of its path (-1 if none), `type` the
// path after the layer index ("self_attn.q_proj", "attention.self.query"); for a path without a
// layer, the path less the model's root name ("bert.pooler.dense" -> "pooler.dense").
// Adapter prefixes and suffixes are dropped first: "base_model.model.", ".lora_E", ".lora_A.weight".
struct ModuleSlot {
  int64_t layer = -1;
  std::string type;
};
ModuleSlot parse_module_path(const std::string& path);

// The module path without the adapter's prefix and parameter suffix
// ("base_model.model.model.layers.0.mlp.up_proj.lora_A.weight" -> "model.layers.0.mlp.up_proj").
std::string module_path(const std::string& path);

struct RankTable {
  std::vector<int64_t> layers;     // ascending; -1 (modules outside the layer stack) last
  std::vector<std::string> types;  // transformer order where known (q, k, v, o, gate, up, down), else first seen
  std::vector<std::vector<int64_t>> rank;  // [layer][type]; -1 where no adapted module sits
  int64_t init_r = 0;    // the colour/shading scale's top (AdaLoRA init_r, LoRA the largest r)
  int64_t target_r = 0;  // AdaLoRA's average target rank; 0 when not applicable
  bool fixed = false;    // LoRA: ranks are set by r / rank_pattern, not allocated

  int64_t n_modules() const;
  int64_t total() const;
  int64_t layer_total(size_t i) const;
  int64_t type_total(size_t j) const;
};

// `ranks` maps module paths (any of the spellings parse_module_path accepts) to kept rank.
RankTable build_rank_table(const std::vector<std::pair<std::string, int64_t>>& ranks, int64_t init_r,
                           int64_t target_r = 0);
// From an AdaLoRA rank_pattern: kept rank = number of true entries of each mask.
RankTable rank_table_from_pattern(const std::map<std::string, std::vector<bool>>& rank_pattern, int64_t init_r,
                                  int64_t target_r = 0);

// The shortest distinct dotted suffix of each type, for column headers ("self_attn.q_proj" -> "q_proj",
// "attention.output.dense" and "output.dense" stay whole).
std::vector<std::string> short_type_labels(const std::vector<std::string>& types);

struct RankTableStyle {
  bool layers_as_columns = false;  // transpose: one row per module type
  bool shade = false;              // shading characters ' ░▒▓█' (0..init_r) instead of numbers
  bool totals = true;              // row/column totals and the budget line
};

// The table as aligned text, one line per row, with a header line; cells without a module show "·".
std::string render_rank_table(const RankTable& t, const RankTableStyle& style = {});

// A form for logs at each allocation that fits `max_width` columns: rows = layers while that fits
// the height budget, else layers as columns; numbers if they fit the width, else shading.
std::string render_rank_table_compact(const RankTable& t, int max_width = 100);

// "kept 96 of 224 (init_r 8 x 28 modules); target 56 (target_r 2 x 28)".
std::string rank_budget_line(const RankTable& t);

// One shading character for `rank` on the scale 0..init_r.
const char* rank_shade(int64_t rank, int64_t init_r);

// The rank table of a saved adapter directory (adapter_config.json, and adapter_model.safetensors for
// the module list when rank_pattern does not name the modules). `note` receives a sentence when the
// table is not an allocation result (no allocation yet, LoRA ranks). Throws std::runtime_error naming
// the file on unreadable input.
RankTable adapter_rank_table(const std::string& adapter_dir, std::string* note = nullptr);

}  // namespace peft
