// Tests of report.html (self-contained page, embedded data, tolerance of partial runs, rendering in
// headless Chromium) and of the rank tables (path parsing, hand-counted totals, golden adapters).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "peft/observability/rank_table.h"
#include "peft/observability/report.h"
#include "test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;
using peft::test::TempDir;

namespace {

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The JSON the page embeds in <script type="application/json" id="run-data">.
json embedded_data(const std::string& html) {
  const std::string open = "<script type=\"application/json\" id=\"run-data\">";
  size_t a = html.find(open);
  EXPECT_NE(a, std::string::npos) << "no embedded run data";
  if (a == std::string::npos) return nullptr;
  a += open.size();
  size_t b = html.find("</script>", a);
  return json::parse(html.substr(a, b - a));
}

// Nothing the page loads may come from elsewhere.
void expect_self_contained(const std::string& html) {
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_EQ(html.find("<script src"), std::string::npos);
  EXPECT_EQ(html.find(" src="), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  EXPECT_EQ(html.find("@import"), std::string::npos);
  EXPECT_EQ(html.find("url("), std::string::npos);
}

// A small AdaLoRA run written by hand: 2 layers x 2 types, init_r 4, target_r 2, steps 1..6
// (warm-up 1-2, budgeting 3-4 with masks after 3 and 4, final 5-6 with the final mask after 5).
void write_small_adalora_run(const std::string& dir) {
  write_file(dir + "/metrics.jsonl",
             R"({"type": "train", "step": 1, "epoch": 0.1, "loss": 3.5, "orth_penalty": 0.1, "lr": 0.001, "phase": "warm-up", "budget": 16, "live_rank": 16}
{"type": "train", "step": 2, "epoch": 0.2, "loss": 3.25, "orth_penalty": 0.05, "lr": 0.001, "phase": "warm-up", "budget": 16, "live_rank": 16}
{"type": "train", "step": 3, "epoch": 0.3, "loss": 3.0, "orth_penalty": 0.1, "lr": 0.001, "phase": "budgeting", "budget": 12, "live_rank": 12}
{"type": "train", "step": 4, "epoch": 0.4, "loss": 2.75, "orth_penalty": 0.05, "lr": 0.001, "phase": "budgeting", "budget": 9, "live_rank": 9}
{"type": "eval", "step": 4, "eval_loss": 2.8, "eval_ppl": 16.44, "eval_tokens": 512}
{"type": "train", "step": 5, "epoch": 0.5, "loss": 2.5, "orth_penalty": 0.05, "lr": 0.001, "phase": "final", "budget": 8, "live_rank": 8}
{"type": "train", "step": 6, "epoch": 0.6, "loss": 2.375, "orth_penalty": 0.075, "lr": 0.001, "phase": "final", "budget": 8, "live_rank": 8}
{"type": "eval", "step": 6, "eval_loss": 2.5, "eval_ppl": 12.18, "eval_tokens": 512}
)");
  auto mod = [](int layer, const char* type, int allocated, int live) {
    return std::string(R"({"path": "model.layers.)") + std::to_string(layer) + "." + type + R"(", "layer": )" +
           std::to_string(layer) + R"(, "type": ")" + type + R"(", "allocated": )" +
           std::to_string(allocated) + R"(, "live": )" + std::to_string(live) + "}";
  };
  auto rec = [&](int step, const char* phase, int budget, bool final_mask, int a, int b, int c, int d) {
    return R"({"step": )" + std::to_string(step) + R"(, "phase": ")" + phase + R"(", "budget": )" +
           std::to_string(budget) + R"(, "final_mask": )" + (final_mask ? "true" : "false") +
           R"(, "init_r": 4, "target_r": 2, "modules": [)" + mod(0, "self_attn.q_proj", a, a) + ", " +
           mod(0, "mlp.down_proj", b, b) + ", " + mod(1, "self_attn.q_proj", c, c) + ", " +
           mod(1, "mlp.down_proj", d, d) + "]}\n";
  };
  write_file(dir + "/ranks.jsonl", rec(3, "budgeting", 12, false, 4, 3, 3, 2) +
                                       rec(4, "budgeting", 9, false, 3, 2, 3, 1) +
                                       rec(5, "final", 8, true, 3, 1, 3, 1));
}

// A larger synthetic AdaLoRA run (deterministic) for the browser test and the screenshot:
// `layers` Llama blocks x 7 types, cubic budget schedule, a mask every deltaT steps.
void write_synthetic_adalora_run(const std::string& dir, int layers, int steps, int deltaT = 10) {
  const std::vector<std::string> types = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                          "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                          "mlp.down_proj"};
  const int init_r = 12, target_r = 4, tinit = steps / 10, tfinal = steps / 5;
  const int n = layers * int(types.size()), total = init_r * n, target = target_r * n;
  const int final_step = steps - tfinal;
  std::ofstream metrics(dir + "/metrics.jsonl"), ranks(dir + "/ranks.jsonl");
  std::vector<int> allocated(n, init_r);
  int kept = total;
  for (int s = 0; s < steps; ++s) {
    std::string phase = s < tinit ? "warm-up" : s < final_step ? "budgeting" : "final";
    int budget = total;
    if (phase == "budgeting") {
      double f = 1.0 - double(s - tinit) / double(final_step - tinit);
      budget = target + int((total - target) * f * f * f);
    } else if (phase == "final") {
      budget = target;
    }
    bool mask = (phase == "budgeting" && (s - tinit) % deltaT == 0) || s == final_step;
    if (mask) {
      // importance: value/output projections and middle layers keep more rank
      std::vector<double> w(n);
      double wsum = 0;
      for (int l = 0; l < layers; ++l)
        for (size_t t = 0; t < types.size(); ++t) {
          double mid = 1.0 - std::abs(l - layers / 2.0) / layers;
          double kind = (t == 2 || t == 3) ? 2.0 : (t == 6 ? 1.5 : 0.8);
          w[l * types.size() + t] = mid * kind * (1.0 + 0.3 * std::sin(0.7 * l + t + 0.05 * s));
          wsum += w[l * types.size() + t];
        }
      kept = 0;
      for (int k = 0; k < n; ++k) kept += allocated[k] = std::min(init_r, int(std::lround(budget * w[k] / wsum)));
      ranks << json{{"step", s}, {"phase", phase}, {"budget", budget}, {"final_mask", s == final_step},
                    {"init_r", init_r}, {"target_r", target_r}, {"modules", [&] {
                       json mods = json::array();
                       for (int l = 0; l < layers; ++l)
                         for (size_t t = 0; t < types.size(); ++t) {
                           std::string path = "model.layers." + std::to_string(l) + "." + types[t];
                           int a = allocated[l * types.size() + t];
                           mods.push_back({{"path", path}, {"layer", l}, {"type", types[t]}, {"init_r", init_r},
                                           {"allocated", a}, {"live", a}});
                         }
                       return mods;
                     }()}}.dump()
            << "\n";
    }
    int live = phase == "final" ? kept : (mask ? kept : total);
    double loss = 1.6 + 2.2 * std::exp(-s / 60.0) + 0.08 * std::sin(s * 1.3);
    metrics << json{{"type", "train"}, {"step", s}, {"epoch", s / 100.0}, {"loss", loss},
                    {"orth_penalty", 0.02}, {"lr", 5e-4}, {"phase", phase}, {"budget", budget},
                    {"live_rank", live}, {"tokens", 4096}, {"elapsed_s", s * 0.3}}
                   .dump()
            << "\n";
    if (s % 50 == 49)
      metrics << json{{"type", "eval"}, {"step", s}, {"eval_loss", loss + 0.1}, {"eval_ppl", std::exp(loss + 0.1)}}.dump()
              << "\n";
  }
}

// Runs headless Chromium on `html`; returns the dumped DOM (empty on failure). Screenshot when asked.
std::string chromium_dump(const std::string& html, const std::string& screenshot = "") {
  TempDir profile;
  std::string flags = "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
                      "--disable-background-networking --disable-component-update --disable-sync "
                      "--user-data-dir=" + profile.str() + " ";
  if (!screenshot.empty()) {
    std::string cmd = "timeout 60 /usr/bin/chromium " + flags + "--window-size=1280,2400 --hide-scrollbars --screenshot=" +
                      screenshot + " file://" + html + " >/dev/null 2>&1";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }
  std::string cmd = "timeout 60 /usr/bin/chromium " + flags + "--dump-dom file://" + html + " 2>/dev/null";
  std::string dom;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) dom.append(buf, n);
    EXPECT_EQ(pclose(p), 0) << cmd;
  }
  return dom;
}

bool require_chromium() {
  if (fs::exists("/usr/bin/chromium")) return true;
  ADD_FAILURE() << "/usr/bin/chromium not found: the report's browser test needs it; run scripts/setup.sh "
                   "(it installs Debian's chromium package)";
  return false;
}

// The <body ...> tag of a dumped DOM, where the page writes its render marker.
std::string body_tag(const std::string& dom) {
  size_t a = dom.find("<body");
  return a == std::string::npos ? "" : dom.substr(a, dom.find('>', a) - a + 1);
}

}  // namespace

// ---------------------------------------------------------------- report.html

TEST(Report, WritesSelfContainedPageWithTheData) {
  TempDir dir;
  write_small_adalora_run(dir.str());
  std::string path = peft::write_report(dir.str());
  EXPECT_EQ(path, dir.str("report.html"));
  ASSERT_TRUE(fs::exists(path));
  for (auto& e : fs::directory_iterator(dir.path))  // the temp file was renamed away
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
  std::string html = read_file(path);
  expect_self_contained(html);
  EXPECT_NE(html.find("getContext(\"2d\")"), std::string::npos);

  json d = embedded_data(html);
  EXPECT_TRUE(d["adalora"].get<bool>());
  EXPECT_EQ(d["train"]["step"], json({1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(d["train"]["loss"][3].get<double>(), 2.75);
  EXPECT_EQ(d["train"]["orth_penalty"][3].get<double>(), 0.05);
  EXPECT_EQ(d["train"]["budget"], json({16, 16, 12, 9, 8, 8}));
  EXPECT_EQ(d["train"]["phase"][2], "budgeting");
  EXPECT_EQ(d["eval"]["step"], json({4, 6}));
  EXPECT_EQ(d["eval"]["eval_loss"][1].get<double>(), 2.5);
  auto& r = d["ranks"];
  EXPECT_EQ(r["init_r"], 4);
  EXPECT_EQ(r["target_r"], 2);
  EXPECT_EQ(r["layers"], json({"L0", "L1"}));
  EXPECT_EQ(r["types"], json({"self_attn.q_proj", "mlp.down_proj"}));  // transformer order, not file order
  EXPECT_EQ(r["labels"], json({"q_proj", "down_proj"}));
  ASSERT_EQ(r["allocs"].size(), 3u);
  EXPECT_EQ(r["allocs"][2]["final_mask"], true);
  EXPECT_EQ(r["allocs"][2]["allocated"], json({3, 1, 3, 1}));
  EXPECT_EQ(r["modules"][3]["row"], 1);  // model.layers.1.mlp.down_proj
  EXPECT_EQ(r["modules"][3]["col"], 1);

  // the summary header: method, steps, final loss, eval loss/perplexity, final budget of initial
  EXPECT_NE(html.find("AdaLoRA"), std::string::npos);
  EXPECT_NE(html.find(">6<"), std::string::npos);       // steps
  EXPECT_NE(html.find(">2.375<"), std::string::npos);   // final loss
  EXPECT_NE(html.find(">12.18<"), std::string::npos);   // final eval perplexity
  EXPECT_NE(html.find(">8 of 16 (50%)<"), std::string::npos);
  EXPECT_NE(html.find("momentum"), std::string::npos);  // why live rank jumps back between masks
}

// Records written before "loss" meant the task loss (loss with the penalty, task_loss without it)
// read back in today's meaning.
TEST(Report, ReadsOlderRecordsInTodaysMeaning) {
  TempDir dir;
  write_file(dir.str("metrics.jsonl"),
             R"({"type": "train", "step": 0, "loss": 3.5, "task_loss": 3.25, "phase": "warm-up", "budget": 8, "live_rank": 8})" "\n");
  write_file(dir.str("ranks.jsonl"),
             R"({"step": 0, "phase": "final", "budget": 2, "final_mask": true, "modules": [{"path": "model.layers.0.mlp.up_proj", "init_r": 4, "pattern": [true, false, true, false]}]})" "\n");
  auto rec = peft::read_run_records(dir.str());
  ASSERT_EQ(rec.train.size(), 1u);
  EXPECT_EQ(rec.train[0]["loss"].get<double>(), 3.25);
  EXPECT_EQ(rec.train[0]["orth_penalty"].get<double>(), 0.25);
  EXPECT_FALSE(rec.train[0].contains("task_loss"));
  auto a = peft::parse_allocation(rec.ranks[0]);
  EXPECT_EQ(a.init_r, 4);  // from the module, as older records kept it
  ASSERT_EQ(a.allocated.size(), 1u);
  EXPECT_EQ(a.allocated[0].second, 2);  // counted from the pattern
}

TEST(Report, ToleratesLoraRunTruncatedLineAndNaN) {
  TempDir dir;
  write_file(dir.str("metrics.jsonl"),
             "{\"type\": \"train\", \"step\": 0, \"loss\": 2.5, \"lr\": 0.0002}\n"
             "{\"type\": \"train\", \"step\": 1, \"loss\": NaN, \"lr\": 0.0002, \"grad_norm\": Infinity}\n"
             "{\"type\": \"train\", \"step\": 2, \"loss\": 2.25, \"lr\": 0.0002}\n"
             "{\"type\": \"train\", \"step\": 3, \"lo");  // a run still writing its last line
  std::string html = read_file(peft::write_report(dir.str()));
  expect_self_contained(html);
  json d = embedded_data(html);
  EXPECT_FALSE(d["adalora"].get<bool>());
  EXPECT_TRUE(d["ranks"].is_null());
  EXPECT_EQ(d["skipped_lines"], 1);
  EXPECT_EQ(d["train"]["step"], json({0, 1, 2}));
  EXPECT_TRUE(d["train"]["loss"][1].is_null());
  EXPECT_NE(html.find("LoRA"), std::string::npos);
  EXPECT_NE(html.find(">2.25<"), std::string::npos);  // the last finite loss
  EXPECT_NE(html.find("1 unreadable line(s) skipped"), std::string::npos);
}

TEST(Report, OneRecordRun) {
  TempDir dir;
  write_file(dir.str("metrics.jsonl"),
             R"({"type": "train", "step": 0, "loss": 4.0, "phase": "warm-up", "budget": 8, "live_rank": 8})" "\n");
  write_file(dir.str("ranks.jsonl"), "");
  json d = embedded_data(read_file(peft::write_report(dir.str())));
  EXPECT_TRUE(d["adalora"].get<bool>());
  EXPECT_EQ(d["train"]["loss"], json({4.0}));
  EXPECT_TRUE(d["ranks"].is_null());
}

TEST(Report, EmbeddedTextCannotCloseTheScript) {
  TempDir dir;
  write_file(dir.str("metrics.jsonl"),
             R"({"type": "train", "step": 0, "loss": 1.0, "phase": "</script><script>alert(1)</script>"})" "\n");
  std::string html = read_file(peft::write_report(dir.str()));
  EXPECT_EQ(html.find("</script><script>alert"), std::string::npos);
  EXPECT_EQ(embedded_data(html)["train"]["phase"][0], "</script><script>alert(1)</script>");
}

TEST(Report, ErrorsNameTheFile) {
  TempDir dir;
  try {
    peft::write_report(dir.str("no-such-run"));
    FAIL() << "expected std::runtime_error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no-such-run"), std::string::npos) << e.what();
  }
  try {
    peft::write_report(dir.str());
    FAIL() << "expected std::runtime_error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(dir.str("metrics.jsonl")), std::string::npos) << e.what();
  }
}

TEST(Report, RendersInHeadlessChromium) {
  if (!require_chromium()) return;
  struct Case {
    std::string name;
    int charts;  // AdaLoRA: final heat-map, heat-map per allocation, per layer, per type, budget, loss
  };
  for (const Case& c : {Case{"adalora", 6}, Case{"small", 6}, Case{"long", 6}, Case{"lora", 1}, Case{"one", 2}}) {
    SCOPED_TRACE(c.name);
    TempDir dir;
    if (c.name == "adalora") {
      write_synthetic_adalora_run(dir.str(), 16, 300);
    } else if (c.name == "long") {  // more allocations than the time heat-maps have columns
      write_synthetic_adalora_run(dir.str(), 24, 2500, 4);
    } else if (c.name == "small") {
      write_small_adalora_run(dir.str());
    } else if (c.name == "lora") {
      write_file(dir.str("metrics.jsonl"), "{\"type\": \"train\", \"step\": 0, \"loss\": 2.5}\n"
                                           "{\"type\": \"train\", \"step\": 1, \"loss\": NaN}\n"
                                           "{\"type\": \"train\", \"step\": 2, \"loss\": 2.0}\n{\"ty");
    } else {
      write_file(dir.str("metrics.jsonl"),
                 R"({"type": "train", "step": 0, "loss": 4.0, "phase": "warm-up", "budget": 8, "live_rank": 8})" "\n");
    }
    std::string html = peft::write_report(dir.str());
    std::string png = dir.str("report.png");
    std::string body = body_tag(chromium_dump(html, c.name == "adalora" ? png : ""));
    EXPECT_NE(body.find("data-rendered=\"ok\""), std::string::npos) << body;
    EXPECT_NE(body.find("data-errors=\"0\""), std::string::npos) << body;
    EXPECT_NE(body.find("data-charts=\"" + std::to_string(c.charts) + "\""), std::string::npos) << body;
    if (c.name == "adalora") {
      ASSERT_TRUE(fs::exists(png));
      EXPECT_GT(fs::file_size(png), 20000u);  // a blank page is a few kB
      if (const char* keep = std::getenv("PEFT_KEEP_REPORT"))  // a directory to look at the run and page by hand
        for (auto* f : {"metrics.jsonl", "ranks.jsonl", "report.html", "report.png"})
          fs::copy_file(dir.str(f), std::string(keep) + "/" + f, fs::copy_options::overwrite_existing);
    }
  }
}

// ---------------------------------------------------------------- rank tables

TEST(RankTable, ParsesLayerAndTypeOfLlamaGpt2BertPaths) {
  struct Want {
    const char* path;
    int64_t layer;
    const char* type;
  };
  for (auto w : {Want{"model.layers.0.self_attn.q_proj", 0, "self_attn.q_proj"},
                 Want{"model.layers.27.mlp.down_proj.lora_E", 27, "mlp.down_proj"},
                 Want{"base_model.model.model.layers.3.mlp.up_proj.lora_A.weight", 3, "mlp.up_proj"},
                 Want{"base_model.model.model.layers.3.self_attn.v_proj.lora_B.default.weight", 3, "self_attn.v_proj"},
                 Want{"transformer.h.5.attn.c_attn", 5, "attn.c_attn"},
                 Want{"transformer.h.11.mlp.c_proj.lora_E", 11, "mlp.c_proj"},
                 Want{"bert.encoder.layer.0.attention.self.query", 0, "attention.self.query"},
                 Want{"bert.encoder.layer.2.attention.output.dense", 2, "attention.output.dense"},
                 Want{"bert.encoder.layer.11.output.dense", 11, "output.dense"},
                 Want{"roberta.encoder.layer.1.intermediate.dense", 1, "intermediate.dense"},
                 Want{"bert.pooler.dense", -1, "pooler.dense"},
                 Want{"lm_head", -1, "lm_head"},
                 Want{"classifier", -1, "classifier"}}) {
    auto s = peft::parse_module_path(w.path);
    EXPECT_EQ(s.layer, w.layer) << w.path;
    EXPECT_EQ(s.type, w.type) << w.path;
  }
  EXPECT_EQ(peft::module_path("base_model.model.model.layers.0.mlp.up_proj.lora_A.weight"), "model.layers.0.mlp.up_proj");
}

TEST(RankTable, KnownRankPatternGivesHandCountedTotals) {
  // 2 layers x 3 types, init_r 4; counts of true written next to each mask
  std::map<std::string, std::vector<bool>> rp = {
      {"model.layers.0.self_attn.q_proj.lora_E", {true, true, false, false}},   // 2
      {"model.layers.0.self_attn.v_proj.lora_E", {true, true, true, true}},     // 4
      {"model.layers.0.mlp.down_proj.lora_E", {false, false, false, false}},    // 0
      {"model.layers.1.self_attn.q_proj.lora_E", {true, false, false, false}},  // 1
      {"model.layers.1.self_attn.v_proj.lora_E", {false, true, true, false}},   // 2
      {"model.layers.1.mlp.down_proj.lora_E", {true, true, true, false}},       // 3
  };
  auto t = peft::rank_table_from_pattern(rp, 4, 2);
  EXPECT_EQ(t.layers, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(t.types, (std::vector<std::string>{"self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"}));
  EXPECT_EQ(t.rank, (std::vector<std::vector<int64_t>>{{2, 4, 0}, {1, 2, 3}}));
  EXPECT_EQ(t.layer_total(0), 6);
  EXPECT_EQ(t.layer_total(1), 6);
  EXPECT_EQ(t.type_total(0), 3);
  EXPECT_EQ(t.type_total(1), 6);
  EXPECT_EQ(t.type_total(2), 3);
  EXPECT_EQ(t.total(), 12);
  EXPECT_EQ(t.n_modules(), 6);
  EXPECT_EQ(peft::rank_budget_line(t), "kept 12 of 24 (init_r 4 x 6 modules); target 12 (target_r 2 x 6)");

  std::string text = peft::render_rank_table(t);
  EXPECT_NE(text.find("q_proj v_proj down_proj"), std::string::npos) << text;
  EXPECT_NE(text.find("L0       2      4         0    6"), std::string::npos) << text;
  EXPECT_NE(text.find("L1       1      2         3    6"), std::string::npos) << text;
  EXPECT_NE(text.find("sum      3      6         3   12"), std::string::npos) << text;
  std::string shade = peft::render_rank_table(t, {false, true, false});
  EXPECT_NE(shade.find("L0  ▒▒▒▒▒▒ ██████          \n"), std::string::npos) << shade;  // 2 of 4, 4 of 4, 0
  EXPECT_NE(shade.find("L1  ░░░░░░ ▒▒▒▒▒▒ ▓▓▓▓▓▓▓▓▓\n"), std::string::npos) << shade;  // 1, 2, 3 of 4
}

TEST(RankTable, ShortLabelsStayDistinct) {
  EXPECT_EQ(peft::short_type_labels({"self_attn.q_proj", "mlp.down_proj"}),
            (std::vector<std::string>{"q_proj", "down_proj"}));
  EXPECT_EQ(peft::short_type_labels({"attention.self.query", "attention.output.dense", "intermediate.dense",
                                     "output.dense"}),
            (std::vector<std::string>{"query", "attention.output.dense", "intermediate.dense", "output.dense"}));
  EXPECT_EQ(peft::short_type_labels({"attn.c_proj", "mlp.c_proj"}), (std::vector<std::string>{"attn.c_proj", "mlp.c_proj"}));
}

TEST(RankTable, ModulesOutsideTheLayersGoLast) {
  auto t = peft::build_rank_table({{"bert.pooler.dense", 2}, {"bert.encoder.layer.1.attention.self.query", 3},
                                   {"bert.encoder.layer.0.attention.self.query", 1}},
                                  4);
  EXPECT_EQ(t.layers, (std::vector<int64_t>{0, 1, -1}));
  EXPECT_EQ(t.types, (std::vector<std::string>{"attention.self.query", "pooler.dense"}));
  EXPECT_EQ(t.rank, (std::vector<std::vector<int64_t>>{{1, -1}, {3, -1}, {-1, 2}}));
  EXPECT_EQ(t.total(), 6);
  EXPECT_EQ(t.n_modules(), 3);
  EXPECT_NE(peft::render_rank_table(t).find("other"), std::string::npos);
}

TEST(RankTable, GoldenAdaptersTotalEqualsTrueEntries) {
  for (const char* c : {"llama_a", "gpt2_a", "bert_a"}) {
    SCOPED_TRACE(c);
    std::string dir = peft::test::golden(c) + "/adapter_final";
    json cfg = peft::test::read_json(dir + "/adapter_config.json");
    int64_t trues = 0;
    for (auto& [path, mask] : cfg["rank_pattern"].items())
      for (auto& b : mask) trues += b.get<bool>();
    std::string note = "unset";
    auto t = peft::adapter_rank_table(dir, &note);
    EXPECT_EQ(note, "");
    EXPECT_EQ(t.total(), trues);
    EXPECT_EQ(t.n_modules(), int64_t(cfg["rank_pattern"].size()));
    EXPECT_EQ(t.init_r, cfg["init_r"].get<int64_t>());
    int64_t sum_layers = 0, sum_types = 0;
    for (size_t i = 0; i < t.layers.size(); ++i) sum_layers += t.layer_total(i);
    for (size_t j = 0; j < t.types.size(); ++j) sum_types += t.type_total(j);
    EXPECT_EQ(sum_layers, trues);
    EXPECT_EQ(sum_types, trues);
  }
  // one cell by hand: llama_a layer 0 mlp.down_proj keeps entries 1 and 6
  auto t = peft::adapter_rank_table(peft::test::golden("llama_a") + "/adapter_final");
  EXPECT_EQ(t.types[6], "mlp.down_proj");
  EXPECT_EQ(t.rank[0][6], 2);
}

TEST(RankTable, EmptyRankPatternMeansEveryModuleAtInitR) {
  TempDir dir;
  std::string src = peft::test::golden("llama_a") + "/adapter_final";
  json cfg = peft::test::read_json(src + "/adapter_config.json");
  size_t n = cfg["rank_pattern"].size();
  cfg["rank_pattern"] = nullptr;
  write_file(dir.str("adapter_config.json"), cfg.dump());
  fs::copy_file(src + "/adapter_model.safetensors", dir.str("adapter_model.safetensors"));
  std::string note;
  auto t = peft::adapter_rank_table(dir.str(), &note);
  EXPECT_NE(note.find("no allocation has happened yet"), std::string::npos) << note;
  EXPECT_EQ(t.n_modules(), int64_t(n));
  EXPECT_EQ(t.total(), int64_t(n) * cfg["init_r"].get<int64_t>());
}

TEST(RankTable, LoraAdapterShowsRPerModule) {
  std::string dir = peft::test::golden("llama_lora") + "/adapter_final";
  std::string note;
  auto t = peft::adapter_rank_table(dir, &note);
  EXPECT_NE(note.find("LoRA"), std::string::npos) << note;
  EXPECT_EQ(t.types.size(), 7u);
  EXPECT_GT(t.n_modules(), 0);
  for (auto& row : t.rank)
    for (auto r : row) EXPECT_EQ(r, 4);  // r = 4 in its adapter_config.json
  EXPECT_EQ(t.target_r, 0);
}

TEST(RankTable, CompactFormFitsOneHundredColumns) {
  auto width = [](const std::string& text) {
    size_t w = 0;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
      size_t n = 0;
      for (unsigned char ch : line) n += (ch & 0xC0) != 0x80;
      w = std::max(w, n);
    }
    return w;
  };
  const char* types[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                         "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
  for (int layers : {2, 12, 16, 32, 48}) {
    SCOPED_TRACE(layers);
    std::vector<std::pair<std::string, int64_t>> ranks;
    for (int l = 0; l < layers; ++l)
      for (int t = 0; t < 7; ++t) ranks.push_back({"model.layers." + std::to_string(l) + "." + types[t], (l * 7 + t) % 13});
    auto tab = peft::build_rank_table(ranks, 12, 4);
    std::string text = peft::render_rank_table_compact(tab, 100);
    EXPECT_LE(width(text), 100u) << text;
    EXPECT_NE(text.find(peft::rank_budget_line(tab)), std::string::npos) << text;
    if (layers <= 12) EXPECT_NE(text.find("L1 "), std::string::npos) << text;  // layers as rows
    else EXPECT_NE(text.find("down_proj"), std::string::npos) << text;          // types as rows
  }
}

TEST(RankTable, CommandLinePrintsTables) {
  std::string cli = PEFT_CLI;
  ASSERT_TRUE(fs::exists(cli)) << cli << " not built (ninja peft_cli)";
  auto run = [](const std::string& cmd) {
    std::string out;
    if (FILE* p = popen((cmd + " 2>&1").c_str(), "r")) {
      char buf[4096];
      size_t n;
      while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
      pclose(p);
    }
    return out;
  };
  std::string out = run(cli + " ranks " + peft::test::golden("llama_a") + "/adapter_final");
  auto t = peft::adapter_rank_table(peft::test::golden("llama_a") + "/adapter_final");
  EXPECT_NE(out.find(peft::rank_budget_line(t)), std::string::npos) << out;
  EXPECT_NE(out.find("heat-map"), std::string::npos) << out;

  TempDir dir;
  write_small_adalora_run(dir.str());
  out = run(cli + " ranks --jsonl " + dir.str("ranks.jsonl") + " --step 4");
  EXPECT_NE(out.find("step 4"), std::string::npos) << out;
  EXPECT_NE(out.find("kept 9 of 16"), std::string::npos) << out;
  out = run(cli + " ranks --jsonl " + dir.str("ranks.jsonl") + " --step 7");
  EXPECT_NE(out.find("steps recorded: 3 4 5"), std::string::npos) << out;
  out = run(cli + " report " + dir.str());
  EXPECT_NE(out.find(dir.str("report.html")), std::string::npos) << out;
  EXPECT_TRUE(fs::exists(dir.str("report.html")));
}
