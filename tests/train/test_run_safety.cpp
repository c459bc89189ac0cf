// Around the edges of a run: the output directory (lock, earlier runs, half-written checkpoints,
// unwritable files, full disks), values refused up front, SIGTERM, finished runs, and what a user reads.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <regex>
#include <sstream>
#include <thread>

#include "peft/formats/checkpoint.h"
#include "peft/data/dataset.h"
#include "peft/eval/evaluate.h"
#include "peft/core/file_io.h"
#include "peft/models/model.h"
#include "peft/adapters/peft_model.h"
#include "peft/train/run_dir.h"
#include "peft/formats/safetensors.h"
#include "peft/train/trainer.h"
#include "test_util.h"

using namespace peft;
using namespace peft::test;
namespace fs = std::filesystem;

// The message parse_train_options throws for `args`, or "" when they parse (tests/test_trainer.cpp).
std::string parse_error(const std::vector<std::string>& args);

namespace {

std::string tiny() { return fixture("tiny"); }

void write_file(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<std::string> train_args(const std::string& out, int steps = 6) {
  return {"train", "--model", tiny(), "--data", tiny() + "/train.jsonl", "--output-dir", out, "--max-steps",
          std::to_string(steps), "--batch-size", "4", "--init_r", "4", "--target_r", "2", "--lr", "5e-3",
          "--report=false"};
}

const auto nothing = [](const std::string&) {};

}  // namespace

TEST(RunDir, OneRunAtATimeAndAStaleLockIsTakenOver) {
  TempDir tmp;
  {
    RunDir first(tmp.str("run"), false, false, nothing);
    try {
      RunDir second(tmp.str("run"), false, false, nothing);
      FAIL() << "a second run into the same directory was accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("is in use by another peft train (pid " + std::to_string(::getpid())),
                std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("started "), std::string::npos) << e.what();
    }
  }
  // the lock is released with its holder, which empties it (no note for the next run); a lock
  // file left by a dead process is taken over
  EXPECT_EQ(read_file(tmp.str("run/.lock")), "");
  write_file(tmp.str("run/.lock"), "pid 999999999\nstarted 2026-01-01 00:00:00\n");
  std::string said;
  RunDir again(tmp.str("run"), false, false, [&](const std::string& s) { said += s; });
  EXPECT_NE(said.find("999999999, which is no longer running"), std::string::npos) << said;
  EXPECT_NE(read_file(tmp.str("run/.lock")).find("pid " + std::to_string(::getpid())), std::string::npos);
}

TEST(RunDir, TwoTrainProcessesIntoOneDirectory) {
  TempDir tmp;
  RunDir held(tmp.str("run"), false, false, nothing);  // as a running `peft train` would hold it
  auto r = run_cli(train_args(tmp.str("run")));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("is in use by another peft train (pid " + std::to_string(::getpid())), std::string::npos) << r.out;
}

TEST(RunDir, AnEarlierRunIsRefusedUnlessOverwriteOrResume) {
  TempDir tmp;
  const std::string out = tmp.str("run");
  ASSERT_EQ(run_cli(train_args(out)).code, 0);
  const auto adapter_before = read_file(out + "/adapter/adapter_model.safetensors");
  auto again = run_cli(train_args(out));
  EXPECT_EQ(again.code, 1) << again.out;
  EXPECT_EQ(again.out.find("was left by"), std::string::npos) << again.out;  // the first run ended cleanly
  EXPECT_NE(again.out.find("holds an earlier run (metrics.jsonl, ranks.jsonl, 1 checkpoint, adapter/)"), std::string::npos)
      << again.out;
  EXPECT_NE(again.out.find("--overwrite-output-dir"), std::string::npos);
  EXPECT_EQ(read_file(out + "/adapter/adapter_model.safetensors"), adapter_before);  // nothing touched

  auto over = run_cli(plus(train_args(out), {"--overwrite-output-dir", "--seed", "7"}));
  EXPECT_EQ(over.code, 0) << over.out;
  EXPECT_NE(over.out.find("removed the earlier run"), std::string::npos) << over.out;
  EXPECT_EQ(jsonl(out + "/metrics.jsonl").front()["step"], 1);  // the new run's records only
  EXPECT_EQ(latest_checkpoint(out + "/checkpoints").value_or(""), out + "/checkpoints/step-6");
}

TEST(RunDir, HalfWrittenCheckpointsAreRemovedAtTheNextStart) {
  TempDir tmp;
  const std::string out = tmp.str("run");
  write_file(out + "/checkpoints/step-8.tmp-4242/state.safetensors", "half");
  std::string said;
  RunDir d(out, false, false, [&](const std::string& s) { said += s; });
  EXPECT_FALSE(fs::exists(out + "/checkpoints/step-8.tmp-4242"));
  EXPECT_NE(said.find("removed the half-written checkpoint"), std::string::npos) << said;
}

TEST(RunDir, NothingIsTrainedWhenARunFileCannotBeWritten) {
  TempDir tmp;
  // as root every permission check passes, so make the files impossible in other ways
  fs::create_directories(tmp.str("run/metrics.jsonl"));  // a directory where the file goes
  auto r = run_cli(train_args(tmp.str("run")));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("cannot write " + tmp.str("run/metrics.jsonl")), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("step 1/"), std::string::npos) << r.out;

  write_file(tmp.str("file"), "x");
  auto d = run_cli(train_args(tmp.str("file/run")));
  EXPECT_EQ(d.code, 1);
  EXPECT_NE(d.out.find("--output-dir " + tmp.str("file/run") + ": cannot create the directory"), std::string::npos) << d.out;
}

TEST(RunDir, AWriteFailureDuringTheRunStopsItWithACheckpoint) {
  TempDir tmp;
  const std::string out = tmp.str("run");
  fs::create_directories(out);
  fs::create_symlink("/dev/full", out + "/metrics.jsonl");  // every write: no space left on device
  auto r = run_cli(train_args(out));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("cannot write " + out + "/metrics.jsonl (No space left on device)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("stopped at step 1, checkpoint written"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(out + "/checkpoints/step-1/state.safetensors"));
}

TEST(TrainSignals, SigtermCheckpointsAndStopsLikeCtrlC) {
  TempDir tmp;
  const std::string out = tmp.str("run");
  auto args = train_args(out, 400);
  std::vector<char*> argv;
  std::string program = PEFT_CLI;
  argv.push_back(program.data());
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::freopen("/dev/null", "w", stdout);
    execv(PEFT_CLI, argv.data());
    _exit(127);
  }
  // wait until training has begun (a step record exists), then send what `timeout` sends
  for (int i = 0; i < 600 && jsonl(out + "/metrics.jsonl").empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_FALSE(jsonl(out + "/metrics.jsonl").empty());
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 143);
  auto latest = latest_checkpoint(out + "/checkpoints");
  ASSERT_TRUE(latest.has_value());
  const auto steps = load_checkpoint(*latest).state["step"].get<int64_t>();
  EXPECT_GE(steps, 1);
  EXPECT_LT(steps, 400);
}

TEST(TrainResume, AFinishedRunSaysSoAndDoesNothing) {
  TempDir tmp;
  const std::string out = tmp.str("run");
  ASSERT_EQ(run_cli(plus(train_args(out), {"--eval-fraction", "0.25"})).code, 0);
  const auto metrics = read_file(out + "/metrics.jsonl");
  auto r = run_cli(plus(train_args(out), {"--eval-fraction", "0.25", "--resume", "latest"}));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("is finished (6 of 6 steps): nothing to do"), std::string::npos) << r.out;
  EXPECT_EQ(read_file(out + "/metrics.jsonl"), metrics);  // no duplicate evaluation
}

TEST(TrainValues, RefusedUpFrontNamingFlagValueAndRange) {
  const std::vector<std::string> base = {"--model", "m", "--data", "d"};
  struct Case {
    std::vector<std::string> flags;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--lr", "0"}, "--lr 0: the learning rate must be a finite number > 0"},
      {{"--lr", "-1e-3"}, "--lr -0.001: the learning rate must be a finite number > 0"},
      {{"--lr", "nan"}, "--lr nan: the learning rate must be a finite number > 0"},
      {{"--lr", "inf"}, "--lr inf: the learning rate must be a finite number > 0"},
      {{"--max-steps", "0"}, "--max-steps 0: must be >= 1 (leave it out to train for --epochs)"},
      {{"--warmup-ratio", "1.5"}, "--warmup-ratio 1.5: must be in [0, 1]"},
      {{"--warmup-ratio", "-0.1"}, "--warmup-ratio -0.1: must be in [0, 1]"},
      {{"--adam-beta1", "1"}, "--adam-beta1 1: must be in [0, 1)"},
      {{"--adam-beta2", "-0.5"}, "--adam-beta2 -0.5: must be in [0, 1)"},
      {{"--adam-eps", "0"}, "--adam-eps 0: must be a finite number > 0"},
      {{"--max-length", "1"}, "--max-length 1: must be >= 2 (a token and the one it predicts)"},
  };
  for (auto& c : cases) {
    auto args = base;
    args.insert(args.end(), c.flags.begin(), c.flags.end());
    EXPECT_EQ(parse_error(args), c.message) << c.flags[0] << " " << c.flags[1];
  }
  EXPECT_EQ(parse_error({"--model", "m", "--data", "d", "--max-steps", "3"}), "");
}

TEST(TrainValues, RefusedBeforeTraining) {
  TempDir tmp;
  auto half = run_cli(plus(train_args(tmp.str("a")), {"--dtype", "float16"}));
  EXPECT_EQ(half.code, 1);
  EXPECT_NE(half.out.find("--dtype float16: float16 is not supported on the CPU"), std::string::npos) << half.out;
  EXPECT_EQ(half.out.find("Exception raised from"), std::string::npos) << half.out;  // no libtorch trace

  auto big = run_cli(plus(train_args(tmp.str("b")), {"--init_r", "40", "--target_r", "8"}));
  EXPECT_EQ(big.code, 1);
  EXPECT_TRUE(std::regex_search(big.out, std::regex("init_r 40 is larger than the smaller dimension of "
                                                    "model\\.layers\\.0\\.self_attn\\.[kv]_proj \\(64 in, 32 out\\)")))
      << big.out;

  auto eval = run_cli({"eval", "--model", tiny(), "--data", tiny() + "/train.jsonl", "--max-length", "1"});
  EXPECT_EQ(eval.code, 1);
  EXPECT_NE(eval.out.find("--max-length must be at least 2"), std::string::npos) << eval.out;
}

TEST(TrainValues, ATokenizerLargerThanTheEmbeddingIsRefusedAtLoad) {
  TempDir tmp;
  const std::string model = tmp.str("model");
  fs::create_directories(model);
  for (auto* f : {"model.safetensors", "tokenizer.json"}) fs::copy_file(tiny() + "/" + f, model + "/" + f);
  auto config = read_json(tiny() + "/config.json");
  config["vocab_size"] = 200;  // the tokenizer has 256 byte tokens and more
  write_file(model + "/config.json", config.dump());
  // shrink the embedding and head to 200 rows so that the weights load
  auto w = load_safetensors(tiny() + "/model.safetensors");
  for (auto* k : {"model.embed_tokens.weight", "lm_head.weight"}) w[k] = w[k].narrow(0, 0, 200).contiguous();
  save_safetensors(model + "/model.safetensors", w);
  const std::string expected = "tokens but the model's embedding has 200 rows";
  auto t = run_cli({"train", "--model", model, "--data", tiny() + "/train.jsonl", "--output-dir", tmp.str("run"), "--max-steps", "2"});
  EXPECT_EQ(t.code, 1);
  EXPECT_NE(t.out.find(expected), std::string::npos) << t.out;
  auto e = run_cli({"eval", "--model", model, "--data", tiny() + "/train.jsonl"});
  EXPECT_NE(e.out.find(expected), std::string::npos) << e.out;
  auto g = run_cli({"generate", "--model", model, "--prompt", "hello", "--max-new-tokens", "2"});
  EXPECT_NE(g.out.find(expected), std::string::npos) << g.out;
  EXPECT_EQ(g.out.find("index out of range"), std::string::npos) << g.out;
}

TEST(AdapterFiles, ARankPatternThatDisagreesWithTheTensorsNamesTheModule) {
  TempDir tmp;
  const std::string adapter = tmp.str("adapter");
  fs::create_directories(adapter);
  fs::copy_file(golden("llama_a") + "/adapter_final/adapter_model.safetensors", adapter + "/adapter_model.safetensors");
  auto config = read_json(golden("llama_a") + "/adapter_final/adapter_config.json");
  auto& pattern = config["rank_pattern"]["model.layers.0.mlp.down_proj.lora_E"];
  pattern[0] = !pattern[0].get<bool>();  // one more or one fewer kept than the tensors hold
  write_file(adapter + "/adapter_config.json", config.dump());
  try {
    PeftModel::load(load_model(golden("llama_a") + "/base"), adapter);
    FAIL() << "a rank_pattern that disagrees with the tensors was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("disagrees with adapter_model.safetensors at model.layers.0.mlp.down_proj"),
              std::string::npos) << e.what();
  }
}

TEST(ModelFiles, IndexShardsStayInsideTheModelDirectory) {
  TempDir tmp;
  fs::create_directories(tmp.str("model"));
  fs::copy_file(tiny() + "/model.safetensors", tmp.str("outside.safetensors"));
  nlohmann::json index = {{"weight_map", {{"lm_head.weight", "../outside.safetensors"}}}};
  write_file(tmp.str("model/model.safetensors.index.json"), index.dump());
  try {
    load_safetensors(tmp.str("model"));
    FAIL() << "a shard outside the model directory was read";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("shard \"../outside.safetensors\" is not a file name inside the model directory"),
              std::string::npos) << e.what();
  }
}

TEST(Outputs, NoCommandWritesOverItsInput) {
  TempDir tmp;
  const std::string adapter = tmp.str("adapter");
  fs::copy(golden("llama_a") + "/adapter_final", adapter);
  const auto before = read_file(adapter + "/adapter_model.safetensors");
  auto e = run_cli({"export", "--lora", adapter, "--output", adapter});
  EXPECT_NE(e.code, 0);
  EXPECT_NE(e.out.find("--output " + adapter + " is the AdaLoRA adapter this command reads"), std::string::npos) << e.out;
  EXPECT_EQ(read_file(adapter + "/adapter_model.safetensors"), before);

  write_file(tmp.str("run/metrics.jsonl"), R"({"type": "train", "step": 1, "loss": 1.0})" "\n");
  const auto metrics = read_file(tmp.str("run/metrics.jsonl"));
  auto r = run_cli({"report", tmp.str("run"), "--output", tmp.str("run/metrics.jsonl")});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("is the run's metrics this command reads"), std::string::npos) << r.out;
  EXPECT_EQ(read_file(tmp.str("run/metrics.jsonl")), metrics);
}

TEST(TrainOutput, OneStepNumberingAndOneMeaningOfLoss) {
  TempDir tmp;
  const std::string out = tmp.str("run");
  auto r = run_cli(plus(train_args(out, 24), {"--tinit", "3", "--tfinal", "6", "--deltaT", "1"}));
  ASSERT_EQ(r.code, 0) << r.out;
  auto metrics = jsonl(out + "/metrics.jsonl");
  std::vector<int64_t> steps;
  for (auto& m : metrics) {
    if (m["type"] != "train") continue;
    steps.push_back(m["step"].get<int64_t>());
    EXPECT_FALSE(m.contains("task_loss"));
    ASSERT_TRUE(m.contains("orth_penalty"));
    // the console shows the same loss as the file, under the same step number
    std::ostringstream line;
    line << "step " << steps.back() << "/24  loss " << std::setprecision(4) << m["loss"].get<double>() << " (+orth ";
    EXPECT_NE(r.out.find(line.str()), std::string::npos) << line.str() << "\n" << r.out;
  }
  ASSERT_EQ(steps.size(), 24u);
  EXPECT_EQ(steps.front(), 1);
  EXPECT_EQ(steps.back(), 24);
  // allocations: budgeting masks after steps 5..18 (PEFT's update_and_allocate(4..17)), the final one after 19
  auto ranks = jsonl(out + "/ranks.jsonl");
  ASSERT_FALSE(ranks.empty());
  EXPECT_EQ(ranks.front()["step"], 5);
  EXPECT_EQ(ranks.back()["step"], 19);
  EXPECT_EQ(ranks.back()["final_mask"], true);
  EXPECT_NE(r.out.find("AdaLoRA schedule: warm-up steps 1..4, budgeting 5..18 (mask every 1), final mask after step 19"),
            std::string::npos) << r.out;
  // the rank table is paced (15 allocations: about six tables), the final mask's always shown
  size_t tables = 0;
  for (size_t at = r.out.find("allocation at step "); at != std::string::npos; at = r.out.find("allocation at step ", at + 1))
    ++tables;
  EXPECT_LE(tables, 7u) << r.out;
  EXPECT_GE(tables, 3u) << r.out;
  EXPECT_NE(r.out.find("allocation at step 19 (final mask"), std::string::npos) << r.out;
}

TEST(TrainDivergence, AHugeLearningRateIsCaughtAndTheNamedCheckpointIsFinite) {
  TempDir tmp;
  const std::string out = tmp.str("run");
  auto r = run_cli(plus(train_args(out, 60), {"--lr", "1e6", "--save-steps", "5", "--tinit", "50", "--tfinal", "5"}));
  EXPECT_TRUE(r.out.find("warning: training is diverging at step") != std::string::npos ||
              r.out.find("error: the loss is") != std::string::npos)
      << r.out;
  std::smatch m;
  if (std::regex_search(r.out, m, std::regex("--resume (\\S+)\\)"))) {
    auto c = load_checkpoint(m[1].str());
    for (auto* k : {"params", "exp_avg", "exp_avg_sq"}) EXPECT_TRUE(c.tensors[k].isfinite().all().item<bool>()) << k;
  }
}

TEST(Evaluate, NoTokensToScoreIsAnErrorNotPerplexityOne) {
  // records whose every label is masked (a prompt with an empty completion) leave nothing to score
  Example masked{{1, 65, 66}, {kIgnoreIndex, kIgnoreIndex, kIgnoreIndex}, std::nullopt};
  Dataset data({masked, masked}, DataFormat::PromptCompletion, 0);
  auto model = load_model(tiny());
  try {
    auto e = evaluate(*model, data, 2);
    FAIL() << "evaluated to loss " << e.loss << ", perplexity " << e.perplexity << " over " << e.tokens << " tokens";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("the evaluation data has nothing to score (2 records"), std::string::npos)
        << e.what();
  }
  // the command line refuses such data when it reads it
  TempDir tmp;
  write_file(tmp.str("one.jsonl"), R"({"prompt": "a", "completion": ""})" "\n");
  auto r = run_cli({"eval", "--model", tiny(), "--data", tmp.str("one.jsonl")});
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(r.out.find("perplexity 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("no token to learn"), std::string::npos) << r.out;
}
