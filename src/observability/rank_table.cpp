// Rank tables: module paths -> (layer, type) grid of kept ranks, and its text renderings
// (full table with totals, shading heat-map, a compact form for training logs).
#include "peft/observability/rank_table.h"
#include "peft/core/strings.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "peft/formats/adapter_config.h"
#include "peft/formats/safetensors.h"

namespace peft {

namespace {

std::vector<std::string> split_dots(const std::string& s) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : s) {
    if (c == '.') {
      parts.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  parts.push_back(cur);
  return parts;
}

std::string join_dots(const std::vector<std::string>& parts, size_t from) {
  std::string s;
  for (size_t i = from; i < parts.size(); ++i) s += (i > from ? "." : "") + parts[i];
  return s;
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

// Adapted modules in the order they appear inside one transformer block.
const std::vector<std::string>& known_type_order() {
  static const std::vector<std::string> order = {
      "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
      "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
      "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj",
      "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
      "intermediate.dense", "output.dense"};
  return order;
}

// Display width of a UTF-8 string (each code point counts one column).
size_t display_width(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

std::string pad_left(const std::string& s, size_t w) {
  size_t d = display_width(s);
  return d >= w ? s : std::string(w - d, ' ') + s;
}

std::string pad_right(const std::string& s, size_t w) {
  size_t d = display_width(s);
  return d >= w ? s : s + std::string(w - d, ' ');
}

std::string repeat(const std::string& s, size_t n) {
  std::string r;
  for (size_t i = 0; i < n; ++i) r += s;
  return r;
}

std::string layer_label(int64_t layer) { return layer < 0 ? "-" : std::to_string(layer); }

// Header line: each label placed at its column's start, skipped when it would touch the previous one.
std::string sparse_header(const std::vector<std::string>& labels, const std::vector<size_t>& starts,
                          const std::vector<size_t>& widths, size_t lead) {
  std::string line(lead, ' ');
  size_t pos = lead;  // display columns written so far
  for (size_t j = 0; j < labels.size(); ++j) {
    size_t w = display_width(labels[j]);
    size_t at = starts[j] + (widths[j] > w ? widths[j] - w : 0);  // right-align within the cell
    if (at < pos + (j > 0 ? 1 : 0)) continue;
    line += std::string(at - pos, ' ') + labels[j];
    pos = at + w;
  }
  return line;
}

struct Grid {
  std::vector<std::string> row_labels, col_labels;
  std::vector<std::vector<int64_t>> cell;  // -1 = no module
  std::vector<int64_t> row_total, col_total;
};

Grid make_grid(const RankTable& t, bool layers_as_columns) {
  Grid g;
  auto types = short_type_labels(t.types);
  std::vector<std::string> layers;
  for (auto l : t.layers) layers.push_back(layers_as_columns ? layer_label(l) : (l < 0 ? "other" : "L" + std::to_string(l)));
  size_t nl = t.layers.size(), nt = t.types.size();
  if (!layers_as_columns) {
    g.row_labels = layers;
    g.col_labels = types;
    g.cell = t.rank;
    for (size_t i = 0; i < nl; ++i) g.row_total.push_back(t.layer_total(i));
    for (size_t j = 0; j < nt; ++j) g.col_total.push_back(t.type_total(j));
  } else {
    g.row_labels = types;
    g.col_labels = layers;
    for (size_t j = 0; j < nt; ++j) {
      std::vector<int64_t> row;
      for (size_t i = 0; i < nl; ++i) row.push_back(t.rank[i][j]);
      g.cell.push_back(std::move(row));
    }
    for (size_t j = 0; j < nt; ++j) g.row_total.push_back(t.type_total(j));
    for (size_t i = 0; i < nl; ++i) g.col_total.push_back(t.layer_total(i));
  }
  return g;
}

struct Layout {
  bool shade = false;
  bool totals = true;
  size_t sep = 1;     // spaces between cells
  size_t min_w = 0;   // least cell width
  bool fit_labels = true;  // widen cells to their column label
};

std::string render_grid(const RankTable& t, const Grid& g, const Layout& lay) {
  size_t digits = std::to_string(std::max<int64_t>(t.init_r, 1)).size();
  for (auto& row : g.cell)
    for (auto v : row) digits = std::max(digits, std::to_string(std::max<int64_t>(v, 0)).size());
  size_t lead = 0;
  for (auto& l : g.row_labels) lead = std::max(lead, display_width(l));
  lead = std::max<size_t>(lead, 3) + 1;  // room for "sum", same with and without totals

  std::vector<size_t> widths, starts;
  size_t pos = lead;
  for (size_t j = 0; j < g.col_labels.size(); ++j) {
    size_t w = std::max(lay.shade ? lay.min_w : std::max(digits, lay.min_w), size_t(1));
    if (lay.fit_labels) w = std::max(w, display_width(g.col_labels[j]));
    if (j > 0) pos += lay.sep;
    starts.push_back(pos);
    widths.push_back(w);
    pos += w;
  }
  size_t total_digits = std::to_string(std::max<int64_t>(t.total(), 1)).size();
  size_t total_w = std::max<size_t>(total_digits, 3);

  std::ostringstream out;
  std::string header = sparse_header(g.col_labels, starts, widths, lead);
  if (lay.totals) header = pad_right(header, pos) + "  " + pad_left("sum", total_w);
  out << header << "\n";
  auto cell_text = [&](int64_t v, size_t w) {
    if (v < 0) return pad_left("·", w);
    if (lay.shade) return repeat(rank_shade(v, t.init_r), w);
    return pad_left(std::to_string(v), w);
  };
  for (size_t i = 0; i < g.row_labels.size(); ++i) {
    std::string line = pad_right(g.row_labels[i], lead);
    for (size_t j = 0; j < g.col_labels.size(); ++j)
      line += (j > 0 ? std::string(lay.sep, ' ') : "") + cell_text(g.cell[i][j], widths[j]);
    if (lay.totals) line += "  " + pad_left(std::to_string(g.row_total[i]), total_w);
    out << line << "\n";
  }
  if (lay.totals) {
    if (lay.shade) {
      // Column totals do not fit shading cells; the row totals and the budget line carry the numbers.
    } else {
      std::string line = pad_right("sum", lead);
      for (size_t j = 0; j < g.col_labels.size(); ++j)
        line += (j > 0 ? std::string(lay.sep, ' ') : "") + pad_left(std::to_string(g.col_total[j]), widths[j]);
      line += "  " + pad_left(std::to_string(t.total()), total_w);
      out << line << "\n";
    }
    if (lay.shade)
      out << "shading: ' ' 0  " << rank_shade(1, 4) << rank_shade(2, 4) << rank_shade(3, 4) << " below "
          << (t.fixed ? "the largest r" : "init_r") << "  " << rank_shade(1, 1) << " " << t.init_r << "\n";
    out << rank_budget_line(t) << "\n";
  }
  return out.str();
}

size_t first_line_width(const std::string& s) {
  size_t w = 0;
  std::istringstream in(s);
  std::string line;
  while (std::getline(in, line)) w = std::max(w, display_width(line));
  return w;
}

}  // namespace

std::string module_path(const std::string& path) {
  std::string p = path;
  const std::string prefix = "base_model.model.";
  if (p.compare(0, prefix.size(), prefix) == 0) p = p.substr(prefix.size());
  auto parts = split_dots(p);
  size_t cut = parts.size();
  for (size_t i = 0; i < parts.size(); ++i)
    if (parts[i].compare(0, 5, "lora_") == 0) {
      cut = i;
      break;
    }
  if (cut == parts.size() && parts.size() > 1 && parts.back() == "weight") cut = parts.size() - 1;
  parts.resize(cut);
  return join_dots(parts, 0);
}

ModuleSlot parse_module_path(const std::string& path) {
  auto parts = split_dots(module_path(path));
  for (size_t i = 0; i < parts.size(); ++i) {
    if (all_digits(parts[i])) {
      ModuleSlot s{std::stoll(parts[i]), join_dots(parts, i + 1)};
      if (s.type.empty()) s.type = "block";
      return s;
    }
  }
  static const char* roots[] = {"model", "bert", "roberta", "transformer"};
  size_t from = 0;
  for (auto* r : roots)
    if (parts.size() > 1 && parts[0] == r) from = 1;
  return {-1, join_dots(parts, from)};
}

int64_t RankTable::n_modules() const {
  int64_t n = 0;
  for (auto& row : rank)
    for (auto v : row) n += v >= 0;
  return n;
}

int64_t RankTable::layer_total(size_t i) const {
  int64_t s = 0;
  for (auto v : rank[i]) s += std::max<int64_t>(v, 0);
  return s;
}

int64_t RankTable::type_total(size_t j) const {
  int64_t s = 0;
  for (auto& row : rank) s += std::max<int64_t>(row[j], 0);
  return s;
}

int64_t RankTable::total() const {
  int64_t s = 0;
  for (size_t i = 0; i < rank.size(); ++i) s += layer_total(i);
  return s;
}

RankTable build_rank_table(const std::vector<std::pair<std::string, int64_t>>& ranks, int64_t init_r,
                           int64_t target_r) {
  RankTable t;
  t.init_r = init_r;
  t.target_r = target_r;
  std::vector<std::pair<ModuleSlot, int64_t>> slots;
  std::vector<std::string> seen;
  for (auto& [path, r] : ranks) {
    auto s = parse_module_path(path);
    if (std::find(t.layers.begin(), t.layers.end(), s.layer) == t.layers.end()) t.layers.push_back(s.layer);
    if (std::find(seen.begin(), seen.end(), s.type) == seen.end()) seen.push_back(s.type);
    slots.push_back({s, r});
  }
  std::sort(t.layers.begin(), t.layers.end(), [](int64_t a, int64_t b) {
    if ((a < 0) != (b < 0)) return b < 0;  // -1 last
    return a < b;
  });
  auto& known = known_type_order();
  for (auto& k : known)
    if (std::find(seen.begin(), seen.end(), k) != seen.end()) t.types.push_back(k);
  for (auto& s : seen)
    if (std::find(known.begin(), known.end(), s) == known.end()) t.types.push_back(s);

  t.rank.assign(t.layers.size(), std::vector<int64_t>(t.types.size(), -1));
  for (auto& [s, r] : slots) {
    size_t i = std::find(t.layers.begin(), t.layers.end(), s.layer) - t.layers.begin();
    size_t j = std::find(t.types.begin(), t.types.end(), s.type) - t.types.begin();
    t.rank[i][j] = std::max<int64_t>(t.rank[i][j], 0) + r;  // two paths on one slot (rare): add up
  }
  return t;
}

RankTable rank_table_from_pattern(const std::map<std::string, std::vector<bool>>& rank_pattern, int64_t init_r,
                                  int64_t target_r) {
  std::vector<std::pair<std::string, int64_t>> ranks;
  for (auto& [path, mask] : rank_pattern) ranks.push_back({path, std::count(mask.begin(), mask.end(), true)});
  return build_rank_table(ranks, init_r, target_r);
}

std::vector<std::string> short_type_labels(const std::vector<std::string>& types) {
  std::vector<std::vector<std::string>> parts;
  for (auto& t : types) parts.push_back(split_dots(t));
  auto suffix = [&](size_t i, size_t k) {
    size_t n = parts[i].size();
    return join_dots(parts[i], n > k ? n - k : 0);
  };
  std::vector<std::string> labels;
  for (size_t i = 0; i < types.size(); ++i) {
    size_t k = 1;
    for (; k < parts[i].size(); ++k) {
      bool clash = false;
      for (size_t o = 0; o < types.size() && !clash; ++o)
        clash = o != i && suffix(o, k) == suffix(i, k);
      if (!clash) break;
    }
    labels.push_back(suffix(i, k));
  }
  return labels;
}

const char* rank_shade(int64_t rank, int64_t init_r) {
  static const char* shades[] = {" ", "░", "▒", "▓", "█"};
  if (rank <= 0 || init_r <= 0) return shades[0];
  if (rank >= init_r) return shades[4];
  // 1..init_r-1 -> ░ ▒ ▓ in equal thirds, so any kept rank is visible and only a full rank is solid
  int64_t k = 1 + (3 * (rank - 1)) / std::max<int64_t>(init_r - 1, 1);
  return shades[std::min<int64_t>(k, 3)];
}

std::string rank_budget_line(const RankTable& t) {
  int64_t n = t.n_modules();
  std::ostringstream s;
  s << "kept " << t.total() << " of " << t.init_r * n << " (init_r " << t.init_r << " x " << n << " modules)";
  if (t.target_r > 0) s << "; target " << t.target_r * n << " (target_r " << t.target_r << " x " << n << ")";
  return s.str();
}

std::string render_rank_table(const RankTable& t, const RankTableStyle& style) {
  Layout lay;
  lay.shade = style.shade;
  lay.totals = style.totals;
  lay.min_w = style.shade ? 2 : 0;
  return render_grid(t, make_grid(t, style.layers_as_columns), lay);
}

std::string render_rank_table_compact(const RankTable& t, int max_width) {
  const size_t width = max_width > 0 ? size_t(max_width) : 100;
  const size_t max_rows = 12;  // beyond this many layers, layers go across
  std::vector<std::pair<bool, Layout>> tries;
  Layout num;  // numbers, cells as wide as their labels
  Layout num_tight;  // numbers, layer labels dropped where they do not fit
  num_tight.fit_labels = false;
  Layout shade;  // two shading characters per cell
  shade.shade = true;
  shade.min_w = 2;
  shade.sep = 0;
  shade.fit_labels = false;
  Layout shade1 = shade;  // one shading character per cell
  shade1.min_w = 1;
  if (t.layers.size() <= max_rows) tries.push_back({false, num});
  tries.push_back({true, num});
  tries.push_back({true, num_tight});
  tries.push_back({true, shade});
  tries.push_back({true, shade1});
  std::string out;
  for (auto& [across, lay] : tries) {
    out = render_grid(t, make_grid(t, across), lay);
    if (first_line_width(out) <= width) return out;
  }
  return out;  // nothing fits: the narrowest form
}

RankTable adapter_rank_table(const std::string& adapter_dir, std::string* note) {
  namespace fs = std::filesystem;
  std::string cfg_path = (fs::path(adapter_dir) / "adapter_config.json").string();
  if (!fs::exists(cfg_path))
    throw std::runtime_error(cfg_path + ": not found (expected a PEFT adapter directory, e.g. RUN_DIR/adapter)");
  AdapterConfig c;
  try {
    c = AdapterConfig::from_file(cfg_path);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(e.what());
  }
  auto set_note = [&](const std::string& s) {
    if (note) *note = s;
  };
  set_note("");
  if (c.peft_type == PeftType::AdaLora && !c.rank_pattern.empty())
    return rank_table_from_pattern(c.rank_pattern, c.init_r, c.target_r);

  // The module list comes from the weights file.
  std::string st_path = (fs::path(adapter_dir) / "adapter_model.safetensors").string();
  if (!fs::exists(st_path))
    throw std::runtime_error(st_path + ": not found; it lists the adapted modules when " + cfg_path +
                             " has no rank_pattern (copy the whole adapter directory)");
  SafeTensorsFile st(st_path);
  std::vector<std::pair<std::string, int64_t>> ranks;
  auto lora_rank = [&](const std::string& path) {
    for (auto& [key, r] : c.lora_rank_pattern)
      if (path == key || (path.size() > key.size() && ends_with(path, key) &&
                          path[path.size() - key.size() - 1] == '.'))
        return r;
    return c.r;
  };
  int64_t top = c.peft_type == PeftType::AdaLora ? c.init_r : 0;
  for (auto& key : st.keys()) {
    if (key.find(".lora_A") == std::string::npos) continue;
    std::string path = module_path(key);
    int64_t r = c.peft_type == PeftType::AdaLora ? c.init_r : lora_rank(path);
    top = std::max(top, r);
    ranks.push_back({path, r});
  }
  if (c.peft_type == PeftType::AdaLora) {
    set_note("no allocation has happened yet (rank_pattern is empty): every module is at init_r = " +
             std::to_string(c.init_r));
    return build_rank_table(ranks, c.init_r, c.target_r);
  }
  set_note("LoRA adapter: fixed rank per module (r = " + std::to_string(c.r) +
           (c.lora_rank_pattern.empty() ? "" : ", overridden by rank_pattern") + "); no allocation");
  RankTable t = build_rank_table(ranks, top, 0);
  t.fixed = true;
  return t;
}

}  // namespace peft
