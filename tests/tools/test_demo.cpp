// `make demo` at reduced size: scripts/demo.sh on the shipped model and data with a few AdaLoRA steps
// must exit 0, print the before/after evaluation, samples, rank table and file paths, and improve.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <sys/wait.h>

#include "test_util.h"

namespace fs = std::filesystem;

namespace {

const std::string kRoot = PEFT_SOURCE_DIR;

// Runs `cmd` through the shell; returns its exit status and puts stdout+stderr in `out`.
int run(const std::string& cmd, std::string& out) {
  out.clear();
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

double number_after(const std::string& text, const std::string& label) {
  std::smatch m;
  std::regex re(label + "\\s+([0-9.]+)");
  if (!std::regex_search(text, m, re)) return -1;
  return std::stod(m[1]);
}

}  // namespace

TEST(Demo, ShippedModelAndDataAreComplete) {
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    EXPECT_TRUE(fs::exists(kRoot + "/models/fortune-llama/" + f)) << f;
  for (const char* f : {"definitions-train.jsonl", "definitions-eval.jsonl"})
    EXPECT_TRUE(fs::exists(kRoot + "/data/demo/" + f)) << f;
  auto config = peft::test::read_json(kRoot + "/models/fortune-llama/config.json");
  EXPECT_EQ(config["model_type"], "llama");
  EXPECT_LE(fs::file_size(kRoot + "/models/fortune-llama/model.safetensors"), 20u * 1000 * 1000);
}

TEST(Demo, ReducedRunShowsTheWholePipeline) {
  peft::test::TempDir tmp;
  const std::string out_dir = tmp.str("demo");
  std::string out;
  // Enough steps for every phase (warm-up, a few masks, the final mask) and a clear improvement,
  // at a size that keeps the test well under a minute on one core.
  const std::string cmd = "cd '" + kRoot + "' && PEFT='" + std::string(PEFT_CLI) + "' DEMO_STEPS=24 DEMO_BATCH=8" +
                          " DEMO_MODEL=models/fortune-llama DEMO_TRAIN=data/demo/definitions-train.jsonl" +
                          " DEMO_EVAL=data/demo/definitions-eval.jsonl DEMO_CHAT=0 DEMO_LR=2e-2" +
                          " DEMO_PROMPT='Experience, n.:\\n'" +
                          " DEMO_OUT='" + out_dir + "' bash scripts/demo.sh";
  ASSERT_EQ(run(cmd, out), 0) << out;

  for (const char* expected : {"before fine-tuning", "after fine-tuning", "eval before training: loss",
                               "eval after training: loss", "-- budgeting begins", "-- final phase",
                               "final rank allocation", "adapter/", "report.html", "metrics.jsonl", "ranks.jsonl",
                               "demo: done in"}) {
    EXPECT_NE(out.find(expected), std::string::npos) << "missing \"" << expected << "\" in:\n" << out;
  }
  // The prompt is sampled twice (before and after).
  const std::string prompt = "Experience, n.:";
  const auto first = out.find("--- base model\n" + prompt);
  ASSERT_NE(first, std::string::npos) << out;
  EXPECT_NE(out.find("--- base model + AdaLoRA adapter\n" + prompt), std::string::npos) << out;

  const double before = number_after(out, "eval before training: loss");
  const double after = number_after(out, "eval after training: loss");
  ASSERT_GT(before, 0) << out;
  ASSERT_GT(after, 0) << out;
  EXPECT_LT(after, before - 0.05) << out;

  for (const char* f : {"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "report.html",
                        "metrics.jsonl", "ranks.jsonl", "demo.log"})
    EXPECT_TRUE(fs::exists(out_dir + "/" + f)) << f;
  auto ac = peft::test::read_json(out_dir + "/adapter/adapter_config.json");
  EXPECT_EQ(ac["peft_type"], "ADALORA");
  EXPECT_EQ(ac["init_r"], 12);
  EXPECT_EQ(ac["target_r"], 4);
  EXPECT_EQ(ac["total_step"], 24);
}
