// The trainer against identities: a run interrupted at step k and resumed equals an uninterrupted
// run (trace and adapter), a checkpoint write killed midway leaves the previous one usable, a NaN
// loss stops the run, total_step is derived from the plan, and schedule errors show the arithmetic.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <fstream>

#include "peft/formats/checkpoint.h"
#include "peft/formats/safetensors.h"
#include "peft/train/trainer.h"
#include "eval_reference.h"
#include "test_util.h"

using namespace peft;
using namespace peft::test;

// The message parse_train_options throws for `args`, or "" when they parse.
std::string parse_error(const std::vector<std::string>& args) {
  try {
    parse_train_options(args);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

namespace {

std::string tiny() { return fixture("tiny"); }


int64_t count_lines(const std::string& path) {
  std::ifstream in(path);
  std::string l;
  int64_t n = 0;
  while (std::getline(in, l))
    if (!l.empty()) ++n;
  return n;
}

TrainOptions base_options(const std::string& out) {
  std::vector<std::string> args = {"--model", tiny(), "--data", tiny() + "/train.jsonl", "--output-dir", out,
                                   "--max-steps", "24", "--batch-size", "8", "--init_r", "6", "--target_r", "2",
                                   "--tinit", "3", "--tfinal", "6", "--deltaT", "3", "--lr", "5e-3",
                                   "--lora_dropout", "0.1", "--quiet", "--report=false"};
  return parse_train_options(args);
}

std::vector<nlohmann::json> train_records(const std::string& out) {
  std::vector<nlohmann::json> r;
  std::ifstream in(out + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j["type"] == "train") r.push_back(j);
  }
  return r;
}

void expect_same_adapter(const std::string& a, const std::string& b) {
  auto ta = load_safetensors(a + "/adapter_model.safetensors");
  auto tb = load_safetensors(b + "/adapter_model.safetensors");
  ASSERT_EQ(ta.size(), tb.size());
  for (auto& [k, t] : ta) {
    ASSERT_TRUE(tb.count(k)) << k;
    EXPECT_TRUE(at::equal(t, tb[k])) << k;
  }
  EXPECT_EQ(read_json(a + "/adapter_config.json")["rank_pattern"], read_json(b + "/adapter_config.json")["rank_pattern"]);
}

}  // namespace

TEST(Trainer, DerivesTotalStepFromThePlan) {
  TempDir tmp;
  auto o = base_options(tmp.str("run"));
  o.max_steps = 0;
  o.epochs = 3;
  o.grad_accum = 2;
  Trainer t(o);
  int64_t examples = count_lines(tiny() + "/train.jsonl");
  int64_t micro_per_epoch = (examples + 7) / 8;
  EXPECT_EQ(t.total_steps(), 3 * micro_per_epoch / 2);
  EXPECT_EQ(t.peft_model()->config().total_step, t.total_steps());
}

TEST(Trainer, ScheduleThatCannotWorkIsRefusedWithTheArithmetic) {
  TempDir tmp;
  auto o = base_options(tmp.str("run"));
  o.max_steps = 5;
  try {
    Trainer t(o);
    FAIL();
  } catch (const std::invalid_argument& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("tinit (3) + tfinal (6) leaves no budgeting phase in total_step (5)"), std::string::npos) << m;
    EXPECT_NE(m.find("--max-steps"), std::string::npos) << m;
  }
}

TEST(Trainer, UnknownOptionSuggestsTheRightOne) {
  try {
    parse_train_options({"--init-r", "8", "--lr-schedular", "cosine"});
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("--lr-scheduler"), std::string::npos) << e.what();
  }
}

TEST(Trainer, OptionNamesTakeUnderscoresOrDashes) {
  auto o = parse_train_options({"--init-r", "5", "--target_r", "3", "--max_steps", "7", "--batch_size", "2",
                                "--lora-dropout=0.2", "--target-modules", "q_proj,v_proj", "--use-rslora", "--tinit", "4"});
  EXPECT_EQ(o.adapter.init_r, 5);
  EXPECT_EQ(o.adapter.target_r, 3);
  EXPECT_EQ(o.max_steps, 7);
  EXPECT_EQ(o.batch_size, 2);
  EXPECT_DOUBLE_EQ(o.adapter.lora_dropout, 0.2);
  EXPECT_EQ(o.adapter.target_modules, (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_TRUE(o.adapter.use_rslora);
  EXPECT_EQ(o.adapter.tinit, 4);
  EXPECT_TRUE(o.tinit_set);
  EXPECT_FALSE(o.tfinal_set);
}

TEST(Trainer, BadOptionValuesNameTheFlagAndTheValue) {
  EXPECT_EQ(parse_error({"--init-r", "big"}), "--init-r: expected an integer, got \"big\"");
  EXPECT_EQ(parse_error({"--lr", "fast"}), "--lr: expected a number, got \"fast\"");
  EXPECT_NE(parse_error({"--pack=maybe"}).find("--pack: a switch"), std::string::npos);
  EXPECT_EQ(parse_error({"--batch-size"}), "--batch-size needs a value (N); see peft train --help");
  EXPECT_EQ(parse_error({"--method", "qlora"}), "--method: expected adalora, lora or full, got \"qlora\"");
  EXPECT_EQ(parse_error({"--max-step", "3"}), "unknown option --max-step (did you mean --max-steps?); see peft train --help");
}

TEST(Trainer, RecipeSetsOptionsFlagsOverrideItAndErrorsNameFileAndKey) {
  TempDir tmp;
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(tmp.str(name)) << text;
    return tmp.str(name);
  };
  auto recipe = write("r.json", R"({"init_r": 4, "target-r": 2, "lr": 0.01, "pack": true,
                                    "target_modules": ["q_proj", "v_proj"], "tfinal": 3})");
  auto o = parse_train_options({"--recipe", recipe, "--lr", "0.02"});
  EXPECT_EQ(o.adapter.init_r, 4);
  EXPECT_EQ(o.adapter.target_r, 2);
  EXPECT_DOUBLE_EQ(o.lr, 0.02);  // the flag wins, wherever it is
  EXPECT_TRUE(o.pack);
  EXPECT_EQ(o.adapter.target_modules, (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_TRUE(o.tfinal_set);
  o = parse_train_options({"--lr=0.03", "--recipe=" + recipe});
  EXPECT_DOUBLE_EQ(o.lr, 0.03);

  auto bad = write("bad.json", R"({"init_r": "many"})");
  EXPECT_EQ(parse_error({"--recipe", bad}), bad + ": key \"init_r\": --init_r: expected an integer, got \"many\"");
  auto typo = write("typo.json", R"({"lr_schedular": "cosine"})");
  EXPECT_EQ(parse_error({"--recipe", typo}), typo + ": unknown key \"lr_schedular\" (did you mean --lr-scheduler?)");
  auto nested = write("nested.json", R"({"recipe": "other.json"})");
  EXPECT_NE(parse_error({"--recipe", nested}).find("key \"recipe\""), std::string::npos);
  auto list = write("list.json", "[1, 2]");
  EXPECT_NE(parse_error({"--recipe", list}).find("a recipe is a JSON object"), std::string::npos);
  EXPECT_NE(parse_error({"--recipe", tmp.str("missing.json")}).find("missing.json"), std::string::npos);
  EXPECT_EQ(parse_error({"--recipe"}), "--recipe needs a value (FILE); see peft train --help");
}

TEST(Trainer, ResumeEqualsUninterrupted) {
  TempDir tmp;
  {
    Trainer a(base_options(tmp.str("a")));
    auto r = a.train();
    EXPECT_EQ(r.steps_done, 24);
  }
  {
    Trainer b(base_options(tmp.str("b")));
    b.after_step = [](int64_t step) {
      if (step == 10) Trainer::interrupt_requested.store(true);
    };
    auto r = b.train();
    EXPECT_TRUE(r.interrupted);
    EXPECT_EQ(r.steps_done, 11);
  }
  {
    auto o = base_options(tmp.str("b"));
    o.resume = "latest";
    Trainer b(o);
    auto r = b.train();
    EXPECT_FALSE(r.interrupted);
    EXPECT_EQ(r.steps_done, 24);
  }
  auto ra = train_records(tmp.str("a")), rb = train_records(tmp.str("b"));
  ASSERT_EQ(ra.size(), 24u);
  ASSERT_EQ(rb.size(), 24u);
  for (size_t i = 0; i < ra.size(); ++i) {
    EXPECT_EQ(ra[i]["step"], rb[i]["step"]);
    EXPECT_EQ(ra[i]["loss"].get<double>(), rb[i]["loss"].get<double>()) << "step " << i;
    EXPECT_EQ(ra[i]["grad_norm"].get<double>(), rb[i]["grad_norm"].get<double>()) << "step " << i;
    EXPECT_EQ(ra[i]["budget"], rb[i]["budget"]) << "step " << i;
    EXPECT_EQ(ra[i]["live_rank"], rb[i]["live_rank"]) << "step " << i;
  }
  EXPECT_EQ(count_lines(tmp.str("a") + "/ranks.jsonl"), count_lines(tmp.str("b") + "/ranks.jsonl"));
  expect_same_adapter(tmp.str("a") + "/adapter", tmp.str("b") + "/adapter");
}

std::string cli_train(const std::string& out, const std::string& extra) {
  return std::string(PEFT_CLI) + " train --model " + tiny() + " --data " + tiny() + "/train.jsonl --output-dir " + out +
         " --max-steps 24 --batch-size 8 --init_r 6 --target_r 2 --tinit 3 --tfinal 6 --deltaT 3 --lr 5e-3"
         " --save-steps 8 --quiet --report=false " + extra + " > /dev/null 2>&1";
}

TEST(Trainer, CheckpointKilledMidwayLeavesThePreviousOneUsable) {
  TempDir tmp;
  std::string out = tmp.str("run");
  int status = std::system(("PEFT_FAULT_KILL_DURING_CHECKPOINT=16 " + cli_train(out, "")).c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 137);  // died while writing step-16
  auto latest = latest_checkpoint(out + "/checkpoints");
  ASSERT_TRUE(latest.has_value());
  EXPECT_NE(latest->find("step-8"), std::string::npos) << *latest;
  auto c = load_checkpoint(*latest);
  EXPECT_EQ(c.state["step"], 8);
  // The survivor resumes to the same end as a run that was never killed.
  EXPECT_EQ(std::system(cli_train(out, "--resume latest").c_str()), 0);
  EXPECT_EQ(std::system(cli_train(tmp.str("clean"), "").c_str()), 0);
  expect_same_adapter(out + "/adapter", tmp.str("clean") + "/adapter");
}

// Evaluations made before a checkpoint stay in metrics.jsonl when the run resumes from it.
TEST(Trainer, ResumedMetricsKeepEvaluationsBeforeTheCheckpoint) {
  TempDir tmp;
  const std::string eval = "--eval-fraction 0.25 --eval-steps 8";
  std::string out = tmp.str("run");
  int status = std::system(("PEFT_FAULT_KILL_DURING_CHECKPOINT=16 " + cli_train(out, eval)).c_str());
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 137);
  EXPECT_EQ(std::system(cli_train(out, eval + " --resume latest").c_str()), 0);
  EXPECT_EQ(std::system(cli_train(tmp.str("clean"), eval).c_str()), 0);
  auto evals = [](const std::string& dir) {
    std::vector<std::pair<int64_t, double>> out;
    std::ifstream in(dir + "/metrics.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line);
      if (j["type"] == "eval") out.emplace_back(j["step"].get<int64_t>(), j["eval_loss"].get<double>());
    }
    return out;
  };
  auto resumed = evals(out), clean = evals(tmp.str("clean"));
  ASSERT_EQ(clean.size(), 4u);  // before training, after 8 and 16 steps, at the end
  EXPECT_EQ(resumed, clean);
}

TEST(Trainer, NanLossStopsAndKeepsTheLastGoodCheckpoint) {
  TempDir tmp;
  auto o = base_options(tmp.str("run"));
  o.lr = 1e12;
  o.max_grad_norm = 0;
  o.save_steps = 1;
  std::string printed;
  Trainer t(o);
  t.print = [&](const std::string& s) { printed += s; };
  auto r = t.train();
  EXPECT_TRUE(r.stopped_on_nan);
  EXPECT_LT(r.steps_done, 24);
  EXPECT_NE(printed.find("stopping"), std::string::npos) << printed;
  auto latest = latest_checkpoint(tmp.str("run") + "/checkpoints");
  if (latest) {
    auto c = load_checkpoint(*latest);
    EXPECT_TRUE(c.tensors["params"].isfinite().all().item<bool>());
    EXPECT_LE(c.state["step"].get<int64_t>(), r.steps_done);
  }
}

TEST(Trainer, LearningRateSchedules) {
  // transformers: linear warm-up from 0, then linear / cosine decay to 0 at the last step.
  EXPECT_DOUBLE_EQ(lr_at("linear", 1.0, 0, 10, 110), 0.0);
  EXPECT_DOUBLE_EQ(lr_at("linear", 1.0, 5, 10, 110), 0.5);
  EXPECT_DOUBLE_EQ(lr_at("linear", 1.0, 10, 10, 110), 1.0);
  EXPECT_DOUBLE_EQ(lr_at("linear", 1.0, 60, 10, 110), 0.5);
  EXPECT_NEAR(lr_at("cosine", 1.0, 60, 10, 110), 0.5, 1e-12);
  EXPECT_NEAR(lr_at("cosine", 1.0, 35, 10, 110), 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-12);
  EXPECT_DOUBLE_EQ(lr_at("constant", 2.0, 50, 0, 100), 2.0);
}

TEST(Trainer, EvalLossMatchesAHandComputedMean) {
  TempDir tmp;
  auto o = base_options(tmp.str("run"));
  o.eval_data = tiny() + "/train.jsonl";
  Trainer t(o);
  auto e = t.evaluate();
  // Independent: the causal loss summed over every example, one at a time, over counted tokens.
  auto& m = *t.peft_model();
  m.train(false);
  at::NoGradGuard ng;
  auto tok = Tokenizer::from_file(tiny() + "/tokenizer.json");
  auto ref = reference_causal_loss([&](const at::Tensor& ids) { Batch b; b.input_ids = ids; return m.forward(b).logits; },
                                   tok, tiny() + "/train.jsonl");
  double sum = ref.loss_sum;
  int64_t n = ref.count;
  EXPECT_EQ(e.tokens, n);
  EXPECT_NEAR(e.loss, sum / n, 1e-5);
  EXPECT_NEAR(e.perplexity, std::exp(sum / n), 1e-3);
}
