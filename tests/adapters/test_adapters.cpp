// Adapters against mathematical identities and PEFT's files: merge == unmerged forward,
// save -> load == same outputs, AdaLoRA -> LoRA export == same logits, validation messages,
// target selection, and the warning when update_and_allocate is never called.
#include <gtest/gtest.h>

#include "peft/models/model.h"
#include "peft/adapters/peft_model.h"
#include "peft/formats/safetensors.h"
#include "test_util.h"

using namespace peft;
using namespace peft::test;

namespace {

at::Tensor logits_of(PeftModel& m, const at::Tensor& ids) {
  at::NoGradGuard ng;
  m.train(false);
  Batch b;
  b.input_ids = ids;
  return m.forward(b).logits;
}

at::Tensor first_batch(const std::string& name) { return golden_batch(read_json(golden(name) + "/data.json"), 0); }

// Perturbs every adapter tensor so that the delta is far from zero (PEFT's init has E = 0 / B = 0).
void randomize(PeftModel& m) {
  at::NoGradGuard ng;
  at::manual_seed(1234);
  m.params().values().normal_(0, 0.3);
}

// Merging changes only where float32 rounds (W + delta is rounded once, then multiplied): with
// adapters this large the logits move by a few 1e-6; allow 2e-5 of their scale.
double merge_tolerance(const at::Tensor& logits) { return 2e-5 * (1.0 + logits.abs().max().item<double>()); }

}  // namespace

TEST(Adapters, MergeEqualsUnmergedForward) {
  for (std::string name : {"llama_a", "gpt2_a", "llama_lora", "bert_a"}) {
    auto pm = PeftModel::load(load_model(golden(name) + "/base"), golden(name) + "/adapter_final");
    randomize(*pm);
    auto ids = first_batch(name);
    auto before = logits_of(*pm, ids);
    pm->merge(true);
    auto merged = logits_of(*pm, ids);
    double tol = merge_tolerance(before);
    EXPECT_LE(max_abs_diff(before, merged), tol) << name;
    EXPECT_GT(max_abs_diff(before, logits_of(*PeftModel::load(load_model(golden(name) + "/base"), golden(name) + "/adapter_init"), ids)), 100 * tol)
        << name << ": the adapter must change the logits for this test to mean anything";
    pm->unmerge();
    EXPECT_LE(max_abs_diff(before, logits_of(*pm, ids)), tol) << name;
    auto plain = pm->merge_and_unload();
    at::NoGradGuard ng;
    Batch b;
    b.input_ids = ids;
    EXPECT_LE(max_abs_diff(before, plain->forward(b).logits), tol) << name;
  }
}

TEST(Adapters, SaveLoadGivesSameOutputs) {
  TempDir tmp;
  for (std::string name : {"llama_a", "gpt2_a", "bert_a", "llama_lora"}) {
    auto pm = PeftModel::load(load_model(golden(name) + "/base"), golden(name) + "/adapter_init");
    randomize(*pm);
    auto ids = first_batch(name);
    auto before = logits_of(*pm, ids);
    pm->save(tmp.str(name));
    auto again = PeftModel::load(load_model(golden(name) + "/base"), tmp.str(name));
    EXPECT_EQ(max_abs_diff(before, logits_of(*again, ids)), 0.0) << name;
  }
}

TEST(Adapters, SavedFilesUsePeftNamesShapesAndConfigKeys) {
  TempDir tmp;
  // Loading PEFT's own adapter_final and saving it again must give the same keys, shapes and values.
  for (std::string name : {"llama_a", "gpt2_a", "bert_a", "llama_lora"}) {
    auto pm = PeftModel::load(load_model(golden(name) + "/base"), golden(name) + "/adapter_final");
    pm->save(tmp.str(name));
    auto ref = load_safetensors(golden(name) + "/adapter_final/adapter_model.safetensors");
    auto ours = load_safetensors(tmp.str(name) + "/adapter_model.safetensors");
    ASSERT_EQ(ref.size(), ours.size()) << name;
    for (auto& [k, t] : ref) {
      ASSERT_TRUE(ours.count(k)) << name << " " << k;
      EXPECT_EQ(ours[k].sizes(), t.sizes()) << k;
      EXPECT_EQ(ours[k].scalar_type(), t.scalar_type()) << k;
      EXPECT_TRUE(at::equal(ours[k], t)) << k;
    }
    SafeTensorsFile f(tmp.str(name) + "/adapter_model.safetensors");
    EXPECT_EQ(f.metadata().at("format"), "pt");
    auto ref_cfg = read_json(golden(name) + "/adapter_final/adapter_config.json");
    auto our_cfg = read_json(tmp.str(name) + "/adapter_config.json");
    for (auto it = ref_cfg.begin(); it != ref_cfg.end(); ++it) {
      EXPECT_TRUE(our_cfg.contains(it.key())) << name << " config lacks " << it.key();
    }
    for (auto* k : {"peft_type", "init_r", "target_r", "tinit", "tfinal", "deltaT", "total_step", "lora_alpha",
                    "rank_pattern", "r", "task_type", "modules_to_save", "fan_in_fan_out"}) {
      if (ref_cfg.contains(k)) EXPECT_EQ(our_cfg[k], ref_cfg[k]) << name << " " << k;
    }
  }
}

TEST(Adapters, RankZeroModulesLoadAndKeepRanknum) {
  auto pm = PeftModel::load(load_model(golden("gpt2_a") + "/base"), golden("gpt2_a") + "/adapter_final");
  bool saw_zero = false;
  for (auto& m : pm->modules()) {
    auto* a = dynamic_cast<AdaLoraLayer*>(m.adapter.get());
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->ranknum, 8.0);  // init_r from the JSON, whatever the kept rank
    saw_zero = saw_zero || a->rank() == 0;
  }
  EXPECT_TRUE(saw_zero);
}

TEST(Adapters, ExportedLoraGivesSameLogits) {
  TempDir tmp;
  for (std::string name : {"llama_a", "gpt2_a", "bert_a"}) {
    auto ada = PeftModel::load(load_model(golden(name) + "/base"), golden(name) + "/adapter_final");
    auto ids = first_batch(name);
    auto expected = logits_of(*ada, ids);
    export_adalora_as_lora(golden(name) + "/adapter_final", tmp.str(name));
    auto cfg = read_json(tmp.str(name) + "/adapter_config.json");
    EXPECT_EQ(cfg["peft_type"], "LORA");
    auto lora = PeftModel::load(load_model(golden(name) + "/base"), tmp.str(name));
    EXPECT_EQ(lora->config().peft_type, PeftType::Lora);
    double diff = max_abs_diff(expected, logits_of(*lora, ids));
    std::cout << "[ export ] " << name << " AdaLoRA vs exported LoRA logits: max |diff| = " << diff << "\n";
    EXPECT_LE(diff, 1e-5) << name;
    // Every LoRA module's scaling reproduces AdaLoRA's lora_alpha / (init_r + 1e-5).
    for (auto& m : lora->modules()) {
      auto* l = dynamic_cast<LoraLayer*>(m.adapter.get());
      EXPECT_NEAR(l->scaling, 16.0 / 8.00001, 1e-5) << m.path;
    }
  }
}

TEST(AdapterConfig, ValidationNamesNumbersAndFix) {
  AdapterConfig c;
  c.init_r = 8;
  c.target_r = 8;
  c.tinit = 500;
  c.tfinal = 1000;
  c.total_step = 1200;
  c.deltaT = 0;
  c.beta1 = 1.0;
  try {
    c.validate();
    FAIL();
  } catch (const std::invalid_argument& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("tinit (500) + tfinal (1000) leaves no budgeting phase in total_step (1200)"), std::string::npos) << m;
    EXPECT_NE(m.find("target_r (8) must be smaller than init_r (8)"), std::string::npos) << m;
    EXPECT_NE(m.find("deltaT (0) must be > 0"), std::string::npos) << m;
    EXPECT_NE(m.find("beta1 (1) must be in (0, 1)"), std::string::npos) << m;
  }
  AdapterConfig neg;
  neg.tinit = -1;
  neg.total_step = 10;
  EXPECT_THROW(neg.validate(), std::invalid_argument);
  AdapterConfig missing;
  try {
    missing.validate();
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("total_step (0) must be > 0"), std::string::npos);
  }
  AdapterConfig ok;
  ok.total_step = 100;
  EXPECT_NO_THROW(ok.validate());
}

TEST(AdapterConfig, BudgetScheduleFollowsSpec) {
  AdapterConfig c;
  c.init_r = 8;
  c.target_r = 2;
  c.tinit = 10;
  c.tfinal = 20;
  c.deltaT = 5;
  c.total_step = 60;
  int n = 14;
  EXPECT_EQ(budget_schedule(c, n, 10).budget, 112);
  EXPECT_FALSE(budget_schedule(c, n, 10).mask);
  EXPECT_EQ(budget_schedule(c, n, 41).budget, 28);
  EXPECT_TRUE(budget_schedule(c, n, 41).mask);
  // step 15: m = 1 - 5/30, budget = int(84 * m^3 + 28)
  double m = 1.0 - 5.0 / 30.0;
  EXPECT_EQ(budget_schedule(c, n, 15).budget, static_cast<int64_t>(84 * m * m * m + 28));
  EXPECT_TRUE(budget_schedule(c, n, 15).mask);
  EXPECT_FALSE(budget_schedule(c, n, 16).mask);
}

TEST(Adapters, TargetSelectionAsPeft) {
  AdapterConfig c;
  c.target_modules = {"q_proj", "mlp.down_proj"};
  EXPECT_TRUE(is_target_module(c, "model.layers.0.self_attn.q_proj", {}));
  EXPECT_TRUE(is_target_module(c, "model.layers.3.mlp.down_proj", {}));
  EXPECT_FALSE(is_target_module(c, "model.layers.0.self_attn.k_proj", {}));
  EXPECT_FALSE(is_target_module(c, "model.layers.0.self_attn.xq_proj", {}));
  c.target_modules = {};
  c.target_modules_regex = R"(.*layers\.1\..*(q|v)_proj)";
  EXPECT_TRUE(is_target_module(c, "model.layers.1.self_attn.v_proj", {}));
  EXPECT_FALSE(is_target_module(c, "model.layers.0.self_attn.v_proj", {}));
  AdapterConfig all;
  all.target_modules = {"all-linear"};
  EXPECT_TRUE(is_target_module(all, "model.layers.0.mlp.up_proj", {}));
  EXPECT_FALSE(is_target_module(all, "lm_head", {}));
  EXPECT_FALSE(is_target_module(all, "classifier", {"classifier"}));
  // bert's "dense" also matches the pooler, as in PEFT
  AdapterConfig b;
  b.target_modules = {"dense"};
  EXPECT_TRUE(is_target_module(b, "bert.pooler.dense", {}));
}

TEST(Adapters, BaseWeightsAreFrozenAndGetNoGradient) {
  auto pm = PeftModel::load(load_model(golden("llama_a") + "/base"), golden("llama_a") + "/adapter_init");
  for (auto& p : pm->base().parameters()) EXPECT_FALSE(p.requires_grad());
  Batch b;
  b.input_ids = first_batch("llama_a");
  b.labels = b.input_ids;
  pm->train(true);
  pm->forward(b).loss.backward();
  for (auto& p : pm->base().parameters()) EXPECT_FALSE(p.grad().defined());
  EXPECT_GT(pm->params().grads().abs().sum().item<double>(), 0.0);
}

TEST(Adapters, ClassifierIsTrainedAndSavedWithTheAdapter) {
  auto pm = PeftModel::load(load_model(golden("bert_a") + "/base"), golden("bert_a") + "/adapter_init");
  auto sd = pm->adapter_state_dict();
  EXPECT_TRUE(sd.count("base_model.model.classifier.weight"));
  EXPECT_TRUE(sd.count("base_model.model.classifier.bias"));
  bool found = false;
  for (auto& [name, t] : pm->params().params()) found = found || name == "classifier.weight";
  EXPECT_TRUE(found);
}

TEST(Adapters, ForgottenUpdateAndAllocateWarnsOnce) {
  auto pm = PeftModel::load(load_model(golden("llama_a") + "/base"), golden("llama_a") + "/adapter_init");
  int warnings = 0;
  std::string message;
  pm->on_warning = [&](const std::string& m) {
    ++warnings;
    message = m;
  };
  pm->train(true);
  Batch b;
  b.input_ids = first_batch("llama_a").narrow(0, 0, 1);
  b.labels = b.input_ids;
  int64_t limit = pm->config().tinit + pm->config().deltaT;  // 15 for this case
  for (int64_t i = 0; i < limit; ++i) pm->forward(b).loss.backward();
  EXPECT_EQ(warnings, 0);
  for (int i = 0; i < 5; ++i) pm->forward(b).loss.backward();
  EXPECT_EQ(warnings, 1);
  EXPECT_NE(message.find("update_and_allocate"), std::string::npos);
}

TEST(Adapters, NoWarningWhenAllocatorIsCalled) {
  auto pm = PeftModel::load(load_model(golden("llama_a") + "/base"), golden("llama_a") + "/adapter_init");
  int warnings = 0;
  pm->on_warning = [&](const std::string&) { ++warnings; };
  pm->train(true);
  Batch b;
  b.input_ids = first_batch("llama_a").narrow(0, 0, 1);
  b.labels = b.input_ids;
  for (int64_t step = 0; step < 30; ++step) {
    pm->forward(b).loss.backward();
    pm->update_and_allocate(step);
    pm->params().zero_grad();
  }
  EXPECT_EQ(warnings, 0);
}

TEST(RankAllocator, ScoresMatchAPerModuleComputation) {
  // The flat index_add scoring must equal the per-module formula of docs/adalora.md (section 4).
  auto pm = PeftModel::load(load_model(golden("llama_a") + "/base"), golden("llama_a") + "/adapter_init");
  Batch b;
  b.input_ids = first_batch("llama_a");
  b.labels = b.input_ids;
  pm->train(true);
  for (int i = 0; i < 3; ++i) {
    pm->forward(b).loss.backward();
    pm->allocator()->update_ipt();
    pm->params().zero_grad();
  }
  auto state = pm->allocator()->state();
  auto s = state.at("exp_avg_ipt") * state.at("exp_avg_unc");
  auto scores = pm->allocator()->triplet_scores();
  // Walk the buffer layout [A..., E..., B...] module by module.
  int64_t off_a = 0, off_e = 0, off_b = 0, tri = 0;
  int64_t len_a = 0, len_e = 0;
  for (auto& m : pm->modules()) {
    auto* a = static_cast<AdaLoraLayer*>(m.adapter.get());
    len_a += a->lora_A.numel();
    len_e += a->lora_E.numel();
  }
  off_e = len_a;
  off_b = len_a + len_e;
  for (auto& m : pm->modules()) {
    auto* a = static_cast<AdaLoraLayer*>(m.adapter.get());
    int64_t r = a->rank(), in = a->in_features, out = a->out_features;
    auto sA = s.narrow(0, off_a, r * in).view({r, in});
    auto sE = s.narrow(0, off_e, r);
    auto sB = s.narrow(0, off_b, out * r).view({out, r});
    auto expected = sE + (sA.mean(1) + sB.mean(0));
    EXPECT_LE(max_abs_diff(scores.narrow(0, tri, r), expected), 1e-6 * expected.abs().max().item<double>() + 1e-30)
        << m.path;
    off_a += r * in;
    off_e += r;
    off_b += out * r;
    tri += r;
  }
}
