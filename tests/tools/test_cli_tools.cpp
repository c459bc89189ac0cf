// The `peft` subcommands eval, merge, export, generate and inspect, run as a user runs them: merged
// checkpoints and exported adapters give the adapter's logits, eval figures equal an independent
// per-example computation, generation is reproducible, and bad input gives errors that name it.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "eval_reference.h"
#include "peft/models/model.h"
#include "peft/adapters/peft_model.h"
#include "peft/formats/safetensors.h"
#include "peft/text/tokenizer.h"
#include "test_util.h"

using namespace peft;
using namespace peft::test;
namespace fs = std::filesystem;

namespace {

// The last line of the output that parses as a JSON object.
nlohmann::json last_json_line(const std::string& out) {
  std::istringstream in(out);
  std::string line;
  nlohmann::json found;
  while (std::getline(in, line))
    if (!line.empty() && line[0] == '{') found = nlohmann::json::parse(line);
  return found;
}

at::Tensor first_batch(const std::string& name) { return golden_batch(read_json(golden(name) + "/data.json"), 0); }

at::Tensor logits(Model& m, const at::Tensor& ids) {
  at::NoGradGuard ng;
  m.eval();
  Batch b;
  b.input_ids = ids;
  return m.forward(b).logits;
}

at::Tensor logits(PeftModel& m, const at::Tensor& ids) {
  at::NoGradGuard ng;
  m.train(false);
  Batch b;
  b.input_ids = ids;
  return m.forward(b).logits;
}

std::set<std::string> keys_of(const std::string& file) {
  auto k = SafeTensorsFile(file).keys();
  return {k.begin(), k.end()};
}

void write_file(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// A copy of a golden model with the byte-level test tokenizer (vocab 256), so text commands run on it.
std::string model_with_tokenizer(const TempDir& tmp, const std::string& golden_base, const std::string& name) {
  fs::path dir = tmp.path / name;
  fs::create_directories(dir);
  for (auto* f : {"config.json", "model.safetensors"}) fs::copy_file(fs::path(golden_base) / f, dir / f);
  fs::copy_file(fixture("tiny/tokenizer.json"), dir / "tokenizer.json");
  return dir.string();
}

}  // namespace

TEST(CliTools, MergedCheckpointGivesTheAdapterLogitsWithTheBaseKeys) {
  for (std::string name : {"llama_a", "gpt2_a", "bert_a"}) {
    TempDir tmp;
    auto base = golden(name) + "/base", adapter = golden(name) + "/adapter_final";
    auto r = run_cli({"merge", "--model", base, "--adapter", adapter, "--output", tmp.str("merged")});
    ASSERT_EQ(r.code, 0) << name << ": " << r.out;
    auto ids = first_batch(name);
    auto expected = logits(*PeftModel::load(load_model(base), adapter), ids);
    auto merged = load_model(tmp.str("merged"));
    auto got = logits(*merged, ids);
    double scale = 1.0 + expected.abs().max().item<double>();
    EXPECT_LE(max_abs_diff(expected, got), 1e-5 * scale) << name;
    EXPECT_GT(max_abs_diff(expected, logits(*load_model(base), ids)), 1e-3) << name << ": the adapter must matter";
    EXPECT_EQ(keys_of(tmp.str("merged/model.safetensors")), keys_of(base + "/model.safetensors")) << name;
    auto config = read_json(tmp.str("merged/config.json"));
    EXPECT_EQ(config["architectures"], read_json(base + "/config.json")["architectures"]) << name;
    EXPECT_EQ(fs::exists(tmp.str("merged/generation_config.json")), fs::exists(base + "/generation_config.json")) << name;
  }
}

TEST(CliTools, MergeTakesTheClassifierFromTheAdapter) {
  TempDir tmp;
  auto base = golden("bert_a") + "/base", adapter = golden("bert_a") + "/adapter_final";
  ASSERT_EQ(run_cli({"merge", "--model", base, "--adapter", adapter, "--output", tmp.str("m")}).code, 0);
  auto merged = load_safetensors(tmp.str("m/model.safetensors"));
  auto from_adapter = load_safetensors(adapter + "/adapter_model.safetensors");
  EXPECT_TRUE(at::equal(merged.at("classifier.weight"), from_adapter.at("base_model.model.classifier.weight")));
  EXPECT_TRUE(at::equal(merged.at("classifier.bias"), from_adapter.at("base_model.model.classifier.bias")));
  EXPECT_FALSE(at::equal(merged.at("classifier.weight"), load_safetensors(base + "/model.safetensors").at("classifier.weight")));
}

TEST(CliTools, MergeInBfloat16WritesBfloat16) {
  TempDir tmp;
  auto base = golden("gpt2_a") + "/base", adapter = golden("gpt2_a") + "/adapter_final";
  auto r = run_cli({"merge", "--model", base, "--adapter", adapter, "--output", tmp.str("m"), "--dtype", "bfloat16"});
  ASSERT_EQ(r.code, 0) << r.out;
  SafeTensorsFile f(tmp.str("m/model.safetensors"));
  for (auto& k : f.keys()) EXPECT_EQ(f.info(k).dtype, "BF16") << k;
  EXPECT_EQ(read_json(tmp.str("m/config.json"))["dtype"], "bfloat16");
  EXPECT_FALSE(keys_of(tmp.str("m/model.safetensors")).count("lm_head.weight")) << "tied lm_head is not written";
  auto ids = first_batch("gpt2_a");
  auto expected = logits(*PeftModel::load(load_model(base), adapter), ids);
  EXPECT_LE(max_abs_diff(expected, logits(*load_model(tmp.str("m")), ids)), 0.1 * (1.0 + expected.abs().max().item<double>()));
}

TEST(CliTools, MergeRefusesToOverwriteItsInputs) {
  auto base = golden("llama_a") + "/base";
  auto r = run_cli({"merge", "--model", base, "--adapter", golden("llama_a") + "/adapter_final", "--output", base});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("--output"), std::string::npos) << r.out;
}

TEST(CliTools, EvalLossEqualsAPerExampleComputation) {
  TempDir tmp;
  auto data = tmp.str("eval.jsonl");
  write_file(data,
             "{\"text\": \"the budget shrinks while rank stays\"}\n"
             "{\"text\": \"zero singular matter\"}\n"
             "{\"text\": \"a longer line of text so the batch has padding in it, caf\\u00e9 and all\"}\n");
  auto tok = Tokenizer::from_file(fixture("tiny/tokenizer.json"));
  for (bool with_adapter : {false, true}) {
    std::vector<std::string> args = {"eval", "--model", fixture("tiny"), "--data", data, "--batch-size", "2"};
    // tests/fixtures/tiny is llama_a's base model, so llama_a's adapter fits it.
    if (with_adapter) args.insert(args.end(), {"--adapter", golden("llama_a") + "/adapter_final"});
    auto r = run_cli(args);
    ASSERT_EQ(r.code, 0) << r.out;
    auto j = last_json_line(r.out);
    ASSERT_TRUE(j.contains("eval_loss")) << r.out;
    auto model = load_model(fixture("tiny"));
    std::unique_ptr<PeftModel> adapted;
    if (with_adapter) adapted = PeftModel::load(model, golden("llama_a") + "/adapter_final");
    auto ref = reference_causal_loss(
        [&](const at::Tensor& ids) { return adapted ? logits(*adapted, ids) : logits(*model, ids); }, tok, data);
    EXPECT_EQ(j["eval_tokens"].get<int64_t>(), ref.count);
    EXPECT_NEAR(j["eval_loss"].get<double>(), ref.loss(), 1e-5) << "adapter: " << with_adapter;
    EXPECT_NEAR(j["eval_ppl"].get<double>(), std::exp(ref.loss()), 1e-4 * std::exp(ref.loss()));
    // The batch size changes nothing but the speed.
    args[6] = "1";
    EXPECT_NEAR(last_json_line(run_cli(args).out)["eval_loss"].get<double>(), ref.loss(), 1e-5);
  }
}

TEST(CliTools, EvalClassificationAccuracyEqualsArgmax) {
  TempDir tmp;
  auto model_dir = model_with_tokenizer(tmp, golden("bert_a") + "/base", "bert");
  auto data = tmp.str("cls.jsonl");
  write_file(data,
             "{\"text\": \"good rank\", \"label\": 1}\n{\"text\": \"budget zero\", \"label\": 0}\n"
             "{\"text\": \"matter while shrinks\", \"label\": 1}\n{\"text\": \"to the\", \"label\": 0}\n"
             "{\"text\": \"singular values stay\", \"label\": 0}\n{\"text\": \"x\", \"label\": 1}\n");
  auto adapter = golden("bert_a") + "/adapter_final";
  auto r = run_cli({"eval", "--model", model_dir, "--adapter", adapter, "--data", data, "--batch-size", "4"});
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = last_json_line(r.out);
  auto pm = PeftModel::load(load_model(model_dir), adapter);
  auto tok = Tokenizer::from_file(model_dir + "/tokenizer.json");
  auto ref = reference_classification([&](const at::Tensor& ids) { return logits(*pm, ids); }, tok, data);
  EXPECT_EQ(j["eval_examples"].get<int64_t>(), 6);
  EXPECT_NEAR(j["eval_accuracy"].get<double>(), ref.accuracy(), 1e-12);
  EXPECT_NEAR(j["eval_loss"].get<double>(), ref.loss(), 1e-5);
  EXPECT_FALSE(j.contains("eval_ppl"));
}

TEST(CliTools, EvalNamesAMismatchedTask) {
  TempDir tmp;
  auto data = tmp.str("cls.jsonl");
  write_file(data, "{\"text\": \"good\", \"label\": 1}\n");
  auto r = run_cli({"eval", "--model", fixture("tiny"), "--data", data});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("cls.jsonl"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("ForSequenceClassification"), std::string::npos) << r.out;
}

TEST(CliTools, ExportedLoraGivesTheAdaloraLogits) {
  for (std::string name : {"llama_a", "gpt2_a"}) {
    TempDir tmp;
    auto base = golden(name) + "/base", adapter = golden(name) + "/adapter_final";
    auto r = run_cli({"export", "--lora", adapter, "--output", tmp.str("lora")});
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find("alpha_pattern"), std::string::npos) << r.out;
    auto exported = PeftModel::load(load_model(base), tmp.str("lora"));
    EXPECT_EQ(exported->config().peft_type, PeftType::Lora);
    auto ids = first_batch(name);
    auto expected = logits(*PeftModel::load(load_model(base), adapter), ids);
    EXPECT_LE(max_abs_diff(expected, logits(*exported, ids)), 1e-5) << name;
    if (name == "gpt2_a") EXPECT_NE(r.out.find("pruned"), std::string::npos) << r.out;
  }
}

TEST(CliTools, ExportRefusesALoraAdapter) {
  TempDir tmp;
  auto r = run_cli({"export", "--lora", golden("llama_lora") + "/adapter_final", "--output", tmp.str("x")});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("AdaLoRA"), std::string::npos) << r.out;
}

TEST(CliTools, GenerateGreedyIsTheModelsArgmaxAndSeedsRepeat) {
  auto tok = Tokenizer::from_file(fixture("tiny/tokenizer.json"));
  std::string prompt = "the budget";
  auto r = run_cli({"generate", "--model", fixture("tiny"), "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "12"});
  ASSERT_EQ(r.code, 0) << r.out;
  // Greedy by hand, recomputing the whole sequence each step.
  auto model = load_model(fixture("tiny"));
  auto ids32 = tok.encode(prompt);
  std::vector<int64_t> ids(ids32.begin(), ids32.end());
  std::vector<int32_t> generated;
  for (int i = 0; i < 12; ++i) {
    auto l = logits(*model, at::tensor(ids, at::kLong).unsqueeze(0));
    int64_t next = l[0][l.size(1) - 1].argmax().item<int64_t>();
    if (next == 2) break;  // config.json's eos_token_id
    ids.push_back(next);
    generated.push_back(static_cast<int32_t>(next));
  }
  EXPECT_EQ(r.out, prompt + tok.decode(generated) + "\n");

  std::vector<std::string> sample = {"generate", "--model", fixture("tiny"), "--adapter", golden("llama_a") + "/adapter_final",
                                     "--prompt", prompt, "--seed", "7", "--temperature", "1.2", "--top-p", "0.95"};
  auto a = run_cli(sample), b = run_cli(sample);
  ASSERT_EQ(a.code, 0) << a.out;
  EXPECT_EQ(a.out, b.out);
}

TEST(CliTools, GenerateChatNeedsAChatFormat) {
  auto r = run_cli({"generate", "--model", fixture("tiny"), "--prompt", "hi", "--chat"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("--chat-format"), std::string::npos) << r.out;
  auto ok = run_cli({"generate", "--model", fixture("tiny"), "--prompt", "hi", "--chat", "--chat-format", "chatml",
                     "--max-new-tokens", "4", "--temperature", "0"});
  EXPECT_EQ(ok.code, 0) << ok.out;
}

TEST(CliTools, InspectDescribesModelsAndAdapters) {
  auto m = run_cli({"inspect", fixture("tiny")});
  ASSERT_EQ(m.code, 0) << m.out;
  for (auto* s : {"LlamaForCausalLM", "llama", "F32", "tokenizer.json, 256 tokens", "key/value heads"})
    EXPECT_NE(m.out.find(s), std::string::npos) << s << " in\n" << m.out;

  auto j = last_json_line(run_cli({"inspect", golden("bert_a") + "/adapter_final", "--json"}).out);
  EXPECT_EQ(j["kind"], "adapter");
  EXPECT_EQ(j["peft_type"], "ADALORA");
  EXPECT_EQ(j["task_type"], "SEQ_CLS");
  EXPECT_EQ(j["init_r"], 8);
  EXPECT_EQ(j["target_r"], 2);
  EXPECT_EQ(j["modules"], 13);
  int64_t kept = 0;
  auto pattern = read_json(golden("bert_a") + "/adapter_final/adapter_config.json")["rank_pattern"];
  for (auto it = pattern.begin(); it != pattern.end(); ++it)
    for (auto& b : *it) kept += b.get<bool>();
  EXPECT_EQ(j["kept_rank_total"].get<int64_t>(), kept);
  int64_t params = 0;
  for (auto& [k, t] : load_safetensors(golden("bert_a") + "/adapter_final/adapter_model.safetensors")) params += t.numel();
  EXPECT_EQ(j["trainable_parameters"].get<int64_t>(), params);

  auto g = run_cli({"inspect", golden("gpt2_a") + "/base"});
  EXPECT_NE(g.out.find("GPT2LMHeadModel"), std::string::npos) << g.out;
  EXPECT_NE(g.out.find("tied embeddings:"), std::string::npos) << g.out;
}

TEST(CliTools, InspectNamesTheFileAtFault) {
  TempDir tmp;
  auto r = run_cli({"inspect", tmp.str("missing")});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find(tmp.str("missing")), std::string::npos) << r.out;

  fs::create_directories(tmp.path / "bad");
  write_file(tmp.str("bad/config.json"), "{\"architectures\": [\"LlamaForCausalLM\"");
  r = run_cli({"inspect", tmp.str("bad")});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("bad/config.json"), std::string::npos) << r.out;

  fs::create_directories(tmp.path / "cut");
  fs::copy_file(golden("llama_a") + "/base/config.json", tmp.path / "cut/config.json");
  std::ifstream in(golden("llama_a") + "/base/model.safetensors", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  write_file(tmp.str("cut/model.safetensors"), bytes.substr(0, bytes.size() / 2));
  r = run_cli({"inspect", tmp.str("cut")});
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("model.safetensors"), std::string::npos) << r.out;

  fs::create_directories(tmp.path / "adapter");
  write_file(tmp.str("adapter/adapter_config.json"), "[1, 2]");
  r = run_cli({"inspect", tmp.str("adapter")});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("adapter_config.json"), std::string::npos) << r.out;
}

TEST(CliTools, EveryCommandTeachesItsOptionsAndNamesBadFlags) {
  for (std::string cmd : {"eval", "merge", "export", "generate", "inspect"}) {
    auto h = run_cli({cmd, "--help"});
    EXPECT_EQ(h.code, 0) << cmd;
    EXPECT_NE(h.out.find("usage: peft " + cmd), std::string::npos) << h.out;
    EXPECT_NE(h.out.find("example:"), std::string::npos) << h.out;
    auto bad = run_cli({cmd, "--modle", "x"});
    EXPECT_NE(bad.code, 0) << cmd;
    EXPECT_NE(bad.out.find("--modle"), std::string::npos) << bad.out;
  }
  auto typo = run_cli({"eval", "--modle", "x"});
  EXPECT_NE(typo.out.find("did you mean --model?"), std::string::npos) << typo.out;
  auto num = run_cli({"generate", "--model", fixture("tiny"), "--prompt", "a", "--top-k", "many"});
  EXPECT_NE(num.out.find("--top-k: expected an integer, got \"many\""), std::string::npos) << num.out;
  auto missing = run_cli({"merge", "--model", "m"});
  EXPECT_NE(missing.out.find("--adapter"), std::string::npos) << missing.out;
}

TEST(CliTools, ConvertedCommandsShareTheFlagParser) {
  // ranks, replay, report, tokenize and train: help from the table, typos named, usage errors exit 2
  // (1 stays for failures of the work itself, e.g. replay's deviations).
  for (std::string cmd : {"ranks", "replay", "report", "tokenize", "train"}) {
    auto h = run_cli({cmd, "--help"});
    EXPECT_EQ(h.code, 0) << cmd;
    EXPECT_NE(h.out.find("usage: peft " + cmd), std::string::npos) << h.out;
    EXPECT_NE(h.out.find("example:"), std::string::npos) << h.out;
    EXPECT_NE(h.out.find("\noptions"), std::string::npos) << h.out;
    EXPECT_NE(h.out.find("  --help "), std::string::npos) << h.out;
  }
  for (std::string cmd : {"ranks", "replay", "report", "tokenize"}) {
    auto bad = run_cli({cmd, "x", "--modle"});
    EXPECT_EQ(bad.code, 2) << cmd << ": " << bad.out;
    EXPECT_NE(bad.out.find("peft " + cmd + ": error: unknown option --modle"), std::string::npos) << bad.out;
    EXPECT_NE(bad.out.find("see peft " + cmd + " --help"), std::string::npos) << bad.out;
  }
  auto step = run_cli({"ranks", "--jsonl", "r.jsonl", "--step", "many"});
  EXPECT_EQ(step.code, 2) << step.out;
  EXPECT_NE(step.out.find("--step: expected an integer, got \"many\""), std::string::npos) << step.out;
  auto both = run_cli({"ranks"});
  EXPECT_EQ(both.code, 2) << both.out;
  EXPECT_NE(both.out.find("give either ADAPTER_DIR or --jsonl FILE"), std::string::npos) << both.out;
  auto missing = run_cli({"report", "--title", "t"});
  EXPECT_EQ(missing.code, 2) << missing.out;
  EXPECT_NE(missing.out.find("missing RUN_DIR"), std::string::npos) << missing.out;
  auto two = run_cli({"tokenize", "a.json", "b.json"});
  EXPECT_EQ(two.code, 2) << two.out;
  EXPECT_NE(two.out.find("TOKENIZER_JSON is already \"a.json\""), std::string::npos) << two.out;
  auto dash = run_cli({"tokenize", fixture("tiny/tokenizer.json"), "-special"});
  EXPECT_EQ(dash.code, 2) << dash.out;
  EXPECT_NE(dash.out.find("did you mean --special?"), std::string::npos) << dash.out;
  auto dtype = run_cli({"replay", golden("llama_a"), "--dtype", "float8"});
  EXPECT_EQ(dtype.code, 1) << dtype.out;
  EXPECT_NE(dtype.out.find("--dtype: unknown dtype \"float8\""), std::string::npos) << dtype.out;
  auto train = run_cli({"train", "--model", "m", "--batch_size", "lots"});
  EXPECT_EQ(train.code, 1) << train.out;
  EXPECT_NE(train.out.find("--batch_size: expected an integer, got \"lots\""), std::string::npos) << train.out;
  // '_' and '-' are one letter in every command's flag names, not only train's.
  auto eval = run_cli({"eval", "--model", "m", "--data", "d", "--batch_size", "0"});
  EXPECT_NE(eval.out.find("--batch-size must be > 0"), std::string::npos) << eval.out;
}
