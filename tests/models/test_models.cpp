// Model families against the reference: base-model logits of each golden case's first batch
// must match transformers' within 1e-4; padding (in evaluation and in training), save/load and config errors behave.
#include <gtest/gtest.h>

#include <cmath>

#include "peft/adapters/peft_model.h"
#include "peft/allocator/param_buffer.h"
#include "peft/models/model.h"
#include "peft/formats/safetensors.h"
#include "peft/models/model_family.h"
#include "test_util.h"

using namespace peft;
using namespace peft::test;

namespace {

void expect_base_logits(const std::string& name) {
  auto model = load_model(golden(name) + "/base");
  model->eval();
  auto data = read_json(golden(name) + "/data.json");
  SafeTensorsFile ref(golden(name) + "/ref_logits.safetensors");
  Batch b;
  b.input_ids = golden_batch(data, 0);
  at::NoGradGuard ng;
  auto out = model->forward(b);
  auto expected = ref.tensor("base");
  ASSERT_EQ(out.logits.sizes(), expected.sizes());
  double diff = max_abs_diff(out.logits, expected);
  std::cout << "[ logits ] " << name << " base: max |diff| = " << diff << "\n";
  EXPECT_LE(diff, 1e-4);
}

}  // namespace

TEST(Models, LlamaBaseLogitsMatchTransformers) { expect_base_logits("llama_a"); }
TEST(Models, GPT2BaseLogitsMatchTransformers) { expect_base_logits("gpt2_a"); }
TEST(Models, BertClassifierBaseLogitsMatchTransformers) { expect_base_logits("bert_a"); }

// A right-padded batch gives, on its real tokens, the logits of the unpadded rows.
static void expect_padding_invariance(const std::string& name) {
  auto model = load_model(golden(name) + "/base");
  model->eval();
  auto data = read_json(golden(name) + "/data.json");
  auto ids = golden_batch(data, 0).narrow(0, 0, 2).clone();
  int64_t T = ids.size(1), keep = T - 7;
  at::NoGradGuard ng;
  Batch full;
  full.input_ids = ids.narrow(0, 0, 1).narrow(1, 0, keep).clone();
  auto ref = model->forward(full).logits;
  Batch padded;
  padded.input_ids = ids.clone();
  padded.attention_mask = at::ones_like(ids);
  padded.attention_mask[0].narrow(0, keep, T - keep).zero_();
  padded.input_ids[0].narrow(0, keep, T - keep).fill_(0);
  auto out = model->forward(padded).logits;
  double diff = model->config().is_causal_lm ? max_abs_diff(out[0].narrow(0, 0, keep), ref[0])
                                             : max_abs_diff(out[0], ref[0]);
  EXPECT_LE(diff, 1e-5) << name;
}

TEST(Models, LlamaPaddedBatchMatchesUnpadded) { expect_padding_invariance("llama_a"); }
TEST(Models, GPT2PaddedBatchMatchesUnpadded) { expect_padding_invariance("gpt2_a"); }
TEST(Models, BertPaddedBatchMatchesUnpadded) { expect_padding_invariance("bert_a"); }

namespace {

struct LossAndGrads {
  double loss;
  at::Tensor grads;
};

// One training forward + backward of the golden case's adapter on `b`.
LossAndGrads train_step(PeftModel& pm, const Batch& b) {
  pm.params().zero_grad();
  auto out = pm.forward(b);
  out.loss.backward();
  return {out.loss.item<double>(), pm.params().grads().clone()};
}

// The golden case's initial adapter in training mode, without dropout.
std::shared_ptr<PeftModel> training_adapter(const std::string& name) {
  auto pm = PeftModel::load(load_model(golden(name) + "/base"), golden(name) + "/adapter_init");
  for (auto& m : pm->modules()) m.adapter->dropout = 0;
  pm->train(true);
  return pm;
}

// The first two rows of the golden case's first batch, the first one padded (id 0) at positions
// from .. from + 4; labels are the ids, or -100 on the padding.
Batch padded_rows(const std::string& name, int64_t from, bool labels_on_padding) {
  Batch b;
  b.input_ids = golden_batch(read_json(golden(name) + "/data.json"), 0).narrow(0, 0, 2).clone();
  b.attention_mask = at::ones_like(b.input_ids);
  b.attention_mask[0].narrow(0, from, 5).zero_();
  b.input_ids[0].narrow(0, from, 5).fill_(0);
  b.labels = labels_on_padding ? b.input_ids : b.input_ids.masked_fill(b.attention_mask.eq(0), -100);
  return b;
}

// In training a right-padded batch is the sum of its rows: the loss is the token-weighted mean of the
// rows' losses and the adapters' gradients the same mean of theirs (the padding mask is then not used).
void expect_padded_training_equals_rows(const std::string& name) {
  auto pm = training_adapter(name);
  const auto ids = golden_batch(read_json(golden(name) + "/data.json"), 0);
  const int64_t T = ids.size(1), keep = T - 5;
  const Batch padded = padded_rows(name, keep, false);
  Batch row0, row1;
  row0.input_ids = row0.labels = ids.narrow(0, 0, 1).narrow(1, 0, keep).clone();
  row1.input_ids = row1.labels = ids.narrow(0, 1, 1).clone();
  auto r0 = train_step(*pm, row0), r1 = train_step(*pm, row1), got = train_step(*pm, padded);
  const double n0 = static_cast<double>(keep - 1), n1 = static_cast<double>(T - 1);
  const double loss = (n0 * r0.loss + n1 * r1.loss) / (n0 + n1);
  const at::Tensor grads = (r0.grads * n0 + r1.grads * n1) / (n0 + n1);
  EXPECT_NEAR(got.loss, loss, 1e-6 * loss) << name;
  const double scale = grads.abs().max().item<double>();
  ASSERT_GT(scale, 0) << name;
  EXPECT_LE(max_abs_diff(got.grads, grads), 1e-5 * scale) << name;
}

// Where the padding is seen, by the loss (labels on padding) or by tokens (left padding), training
// keeps the mask: its loss equals the evaluation's, which always applies it.
void expect_seen_padding_masked_in_training(const std::string& name) {
  auto pm = training_adapter(name);
  const int64_t T = golden_batch(read_json(golden(name) + "/data.json"), 0).size(1);
  for (bool left : {false, true}) {
    const Batch b = padded_rows(name, left ? 0 : T - 5, /*labels_on_padding=*/!left);
    const double trained = pm->forward(b).loss.item<double>();
    at::NoGradGuard no_grad;
    const double evaluated = pm->forward(b).loss.item<double>();
    EXPECT_NEAR(trained, evaluated, 1e-6 * evaluated) << name << (left ? " left padding" : " labels on padding");
  }
}

}  // namespace

TEST(Models, LlamaTrainingKeepsTheMaskWherePaddingIsSeen) { expect_seen_padding_masked_in_training("llama_a"); }
TEST(Models, GPT2TrainingKeepsTheMaskWherePaddingIsSeen) { expect_seen_padding_masked_in_training("gpt2_a"); }
TEST(Models, LlamaTrainingOnRightPaddedBatchEqualsItsRows) { expect_padded_training_equals_rows("llama_a"); }
TEST(Models, GPT2TrainingOnRightPaddedBatchEqualsItsRows) { expect_padded_training_equals_rows("gpt2_a"); }

TEST(Models, SaveLoadRoundTripGivesIdenticalTensors) {
  TempDir tmp;
  for (std::string name : {"llama_a", "gpt2_a", "bert_a"}) {
    auto a = load_model(golden(name) + "/base");
    save_model(*a, tmp.str(name));
    auto b = load_model(tmp.str(name));
    auto sa = a->state_dict_tensors(), sb = b->state_dict_tensors();
    ASSERT_EQ(sa.size(), sb.size());
    for (auto& kv : sa) EXPECT_TRUE(at::equal(kv.second, sb.at(kv.first))) << name << " " << kv.first;
  }
}

TEST(Models, CausalLossIgnoresMinus100AndMatchesManualMean) {
  auto logits = at::randn({2, 5, 7});
  auto labels = at::randint(0, 7, {2, 5}, at::kLong);
  labels[0][3] = -100;
  labels[1][1] = -100;
  auto loss = causal_lm_loss(logits, labels).item<double>();
  double sum = 0;
  int n = 0;
  auto lp = at::log_softmax(logits.to(at::kDouble), -1);
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < 4; ++t) {
      auto y = labels[b][t + 1].item<int64_t>();
      if (y == -100) continue;
      sum -= lp[b][t][y].item<double>();
      ++n;
    }
  EXPECT_NEAR(loss, sum / n, 1e-6);
}

// The loss's hand-written gradient against autograd through log_softmax in float64, which is what
// transformers' cross-entropy differentiates: ignored labels, a row with every label ignored, bf16 logits.
TEST(Models, CausalLossGradientIsAutogradsOfLogSoftmax) {
  at::manual_seed(3);
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    auto logits = (at::randn({3, 6, 50}) * 4).to(dtype).requires_grad_(true);
    auto labels = at::randint(0, 50, {3, 6}, at::kLong);
    labels[0][2] = -100;
    labels[1][5] = -100;
    labels[2].fill_(-100);
    auto loss = causal_lm_loss(logits, labels);
    (loss * 1.5).backward();

    auto ref_logits = logits.detach().to(at::kDouble).requires_grad_(true);
    auto shifted = ref_logits.narrow(1, 0, 5).reshape({-1, 50});
    auto ref = at::nll_loss(at::log_softmax(shifted, -1), labels.narrow(1, 1, 5).reshape({-1}), {}, at::Reduction::Mean, -100);
    (ref * 1.5).backward();
    // The loss is computed in float32 from the logits' values either way; the gradient is rounded to bf16.
    EXPECT_NEAR(loss.item<double>(), ref.item<double>(), 1e-6 * ref.item<double>()) << dtype;
    ASSERT_EQ(logits.grad().scalar_type(), dtype);
    EXPECT_LE(max_abs_diff(logits.grad().to(at::kDouble), ref_logits.grad()), dtype == at::kFloat ? 1e-7 : 1e-3) << dtype;
    EXPECT_TRUE(at::equal(logits.grad()[2], at::zeros({6, 50}, logits.options())));  // nothing to predict
    EXPECT_TRUE(at::equal(logits.grad().select(1, 5), at::zeros({3, 50}, logits.options())));
  }
  // bf16 logits over a vocabulary large enough that the rows go in blocks (3 rows of 262145 per block).
  {
    auto logits = (at::randn({2, 9, 262145}) * 4).to(at::kBFloat16).requires_grad_(true);
    auto labels = at::randint(0, 262145, {2, 9}, at::kLong);
    labels[1][4] = -100;
    auto loss = causal_lm_loss(logits, labels);
    loss.backward();
    auto ref_logits = logits.detach().to(at::kDouble).requires_grad_(true);
    auto ref = at::nll_loss(at::log_softmax(ref_logits.narrow(1, 0, 8).reshape({-1, 262145}), -1),
                            labels.narrow(1, 1, 8).reshape({-1}), {}, at::Reduction::Mean, -100);
    ref.backward();
    // The loss as transformers takes it from bf16 logits (log_softmax of their float32 copy, whole); a
    // float32 sum over 262145 terms is itself about 1e-6 from float64.
    auto ref32 = at::nll_loss(at::log_softmax(logits.detach().narrow(1, 0, 8).reshape({-1, 262145}).to(at::kFloat), -1),
                              labels.narrow(1, 1, 8).reshape({-1}), {}, at::Reduction::Mean, -100);
    EXPECT_NEAR(loss.item<double>(), ref32.item<double>(), 1e-6 * ref32.item<double>());
    EXPECT_NEAR(loss.item<double>(), ref.item<double>(), 1e-5 * ref.item<double>());
    // Gradients of about 1/(16 * 262145) per logit, rounded to bf16: within 2^-8 of each.
    const at::Tensor got = logits.grad().to(at::kDouble), want = ref_logits.grad();
    EXPECT_LE(((got - want).abs() - want.abs() * std::ldexp(1.0, -8)).max().item<double>(), 1e-12);
    EXPECT_TRUE(at::equal(logits.grad().select(1, 8), at::zeros({2, 262145}, logits.options())));
  }
  // No counted token: NaN, as transformers' mean over zero tokens.
  auto none = causal_lm_loss(at::randn({1, 4, 9}), at::full({1, 4}, -100, at::kLong));
  EXPECT_TRUE(std::isnan(none.item<double>()));
}

TEST(ModelConfig, UnknownModelTypeListsSupported) {
  nlohmann::json j = {{"model_type", "t5"}};
  try {
    parse_model_config(j, "x/config.json");
    FAIL();
  } catch (const std::exception& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("x/config.json"), std::string::npos);
    EXPECT_NE(m.find("t5"), std::string::npos);
    EXPECT_NE(m.find("LlamaForCausalLM"), std::string::npos);
  }
}

TEST(ModelConfig, ReadsBothRopeForms) {
  auto j = read_json(golden("llama_a") + "/base/config.json");
  auto a = parse_model_config(j);
  j.erase("rope_parameters");
  j["rope_theta"] = 500000.0;
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 32.0}, {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  auto b = parse_model_config(j);
  EXPECT_EQ(a.rope_theta, 10000.0);
  EXPECT_EQ(b.rope_theta, 500000.0);
  EXPECT_EQ(b.rope_scaling.type, "llama3");
  EXPECT_EQ(b.rope_scaling.factor, 32.0);
}

TEST(ModelConfig, BadValueNamesKey) {
  auto j = read_json(golden("llama_a") + "/base/config.json");
  j["num_key_value_heads"] = 3;
  try {
    parse_model_config(j, "cfg.json");
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("num_key_value_heads"), std::string::npos) << e.what();
  }
}

TEST(ModelConfig, SizesAModelIsBuiltFromMustBePositive) {
  auto error_of = [](nlohmann::json j) {
    try {
      parse_model_config(j, "cfg.json");
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  auto llama = read_json(golden("llama_a") + "/base/config.json");
  for (const char* key : {"head_dim", "max_position_embeddings"}) {
    for (int64_t bad : {0, -1}) {
      auto j = llama;
      j[key] = bad;
      EXPECT_EQ(error_of(j), "cfg.json: key \"" + std::string(key) + "\": must be > 0, got " + std::to_string(bad));
    }
  }
  auto few = llama;  // no head_dim, and more heads than hidden_size: hidden_size / heads would be 0
  few.erase("head_dim");
  few["hidden_size"] = 2;
  few["num_attention_heads"] = 4;
  few["num_key_value_heads"] = 4;
  EXPECT_NE(error_of(few).find("key \"num_attention_heads\": more heads (4) than hidden_size (2)"), std::string::npos)
      << error_of(few);

  auto gpt2 = read_json(golden("gpt2_a") + "/base/config.json");
  auto j = gpt2;
  j["n_inner"] = -3;
  EXPECT_EQ(error_of(j), "cfg.json: key \"n_inner\": must be > 0, got -3");
  j = gpt2;  // the default n_inner, 4 * n_embd, would overflow
  j["n_inner"] = nullptr;
  j["n_embd"] = int64_t{1} << 62;
  j["n_head"] = 1;
  EXPECT_NE(error_of(j).find("key \"n_embd\": too large for the default n_inner"), std::string::npos) << error_of(j);
  j["n_embd"] = 16;
  j["n_head"] = 2;
  EXPECT_EQ(parse_model_config(j).intermediate_size, 64);
}

TEST(Models, MissingTensorIsNamed) {
  TempDir tmp;
  auto a = load_model(golden("llama_a") + "/base");
  auto tensors = a->state_dict_tensors();
  tensors.erase("model.layers.1.mlp.up_proj.weight");
  tensors["model.extra.weight"] = at::zeros({2});
  std::filesystem::create_directories(tmp.str("m"));
  std::filesystem::copy_file(golden("llama_a") + "/base/config.json", tmp.str("m/config.json"));
  save_safetensors(tmp.str("m/model.safetensors"), tensors);
  try {
    load_model(tmp.str("m"));
    FAIL();
  } catch (const std::exception& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("model.layers.1.mlp.up_proj.weight"), std::string::npos) << m;
  }
}
