// Generation against identities: greedy decoding with the KV cache gives exactly the tokens of
// greedy decoding that recomputes the whole sequence; a seed repeats a sample; the sampler follows
// its distribution and its top-k / top-p cuts; streamed text never splits a UTF-8 character.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "peft/eval/generate.h"
#include "peft/models/model.h"
#include "peft/adapters/peft_model.h"
#include "peft/text/token_streamer.h"
#include "peft/text/tokenizer.h"
#include "test_util.h"

using namespace peft;
using namespace peft::test;

namespace {

std::vector<int64_t> prompt_of(const std::string& name) {
  auto row = golden_batch(read_json(golden(name) + "/data.json"), 0)[0].narrow(0, 0, 7).contiguous();
  return std::vector<int64_t>(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel());
}

GenerateOptions greedy(int64_t n, bool cache) {
  GenerateOptions o;
  o.sampling.temperature = 0;
  o.max_new_tokens = n;
  o.use_cache = cache;
  return o;
}

}  // namespace

TEST(Generate, CachedGreedyEqualsRecomputedGreedy) {
  for (std::string name : {"llama_a", "gpt2_a"}) {
    auto model = load_model(golden(name) + "/base");
    auto prompt = prompt_of(name);
    auto cached = generate(*model, prompt, greedy(40, true));
    auto full = generate(*model, prompt, greedy(40, false));
    ASSERT_EQ(cached.tokens.size(), 40u) << name;
    EXPECT_EQ(cached.tokens, full.tokens) << name;
    EXPECT_EQ(cached.stop, StopReason::MaxNewTokens);

    auto adapted = PeftModel::load(load_model(golden(name) + "/base"), golden(name) + "/adapter_final");
    auto a_cached = generate(*adapted, prompt, greedy(40, true));
    EXPECT_EQ(a_cached.tokens, generate(*adapted, prompt, greedy(40, false)).tokens) << name << " + adapter";
    EXPECT_NE(a_cached.tokens, cached.tokens) << name << ": the adapter should change the continuation";
  }
}

TEST(Generate, CachedSamplingEqualsRecomputedSampling) {
  auto model = load_model(golden("llama_a") + "/base");
  GenerateOptions o;
  o.max_new_tokens = 30;
  o.seed = 11;
  o.sampling = {1.0, 0, 1.0};
  auto a = generate(*model, prompt_of("llama_a"), o);
  o.use_cache = false;
  EXPECT_EQ(a.tokens, generate(*model, prompt_of("llama_a"), o).tokens);
}

TEST(Generate, SameSeedSameSample) {
  auto model = load_model(golden("gpt2_a") + "/base");
  GenerateOptions o;
  o.max_new_tokens = 24;
  o.sampling = {1.0, 40, 0.95};
  std::set<std::vector<int64_t>> distinct;
  for (uint64_t seed : {1, 2, 3, 4}) {
    o.seed = seed;
    auto a = generate(*model, prompt_of("gpt2_a"), o);
    auto b = generate(*model, prompt_of("gpt2_a"), o);
    EXPECT_EQ(a.tokens, b.tokens) << "seed " << seed;
    distinct.insert(a.tokens);
  }
  EXPECT_GT(distinct.size(), 1u) << "different seeds should give different samples";
}

TEST(Generate, StopsAtEosAndAtTheModelsPositions) {
  auto model = load_model(golden("llama_a") + "/base");
  auto prompt = prompt_of("llama_a");
  auto free_run = generate(*model, prompt, greedy(10, true));
  auto o = greedy(10, true);
  o.stop_ids = {free_run.tokens[3]};
  auto r = generate(*model, prompt, o);
  EXPECT_EQ(r.stop, StopReason::Eos);
  EXPECT_LE(r.tokens.size(), 4u);
  EXPECT_EQ(r.tokens.back(), free_run.tokens[3]);

  auto gpt2 = load_model(golden("gpt2_a") + "/base");  // n_positions 128
  auto g = generate(*gpt2, prompt_of("gpt2_a"), greedy(500, true));
  EXPECT_EQ(g.stop, StopReason::MaxLength);
  EXPECT_EQ(static_cast<int64_t>(g.tokens.size() + prompt_of("gpt2_a").size()), gpt2->config().max_position_embeddings);
}

TEST(Generate, SamplerFollowsItsDistributionAndCuts) {
  auto logits = at::tensor(std::vector<double>{std::log(0.5), std::log(0.3), std::log(0.15), std::log(0.05)});
  std::mt19937_64 rng(5);
  std::vector<int> counts(4, 0);
  const int n = 40000;
  for (int i = 0; i < n; ++i) ++counts[sample_token(logits, {1.0, 0, 1.0}, rng)];
  std::vector<double> p = {0.5, 0.3, 0.15, 0.05};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(counts[i] / double(n), p[i], 0.01) << i;

  // top-k 2: only the two most likely, renormalised (0.5 / 0.8).
  counts.assign(4, 0);
  for (int i = 0; i < n; ++i) ++counts[sample_token(logits, {1.0, 2, 1.0}, rng)];
  EXPECT_EQ(counts[2] + counts[3], 0);
  EXPECT_NEAR(counts[0] / double(n), 0.625, 0.01);
  // top-p 0.7: 0.5 alone is below 0.7, so {0, 1}; top-p 0.5 keeps only token 0.
  counts.assign(4, 0);
  for (int i = 0; i < n; ++i) ++counts[sample_token(logits, {1.0, 0, 0.7}, rng)];
  EXPECT_EQ(counts[2] + counts[3], 0);
  EXPECT_GT(counts[1], 0);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(sample_token(logits, {1.0, 0, 0.5}, rng), 0);
  // Greedy and a cold temperature pick the argmax; a tie goes to the lower id.
  EXPECT_EQ(sample_token(at::tensor(std::vector<double>{1, 3, 3, 0}), {0.0, 40, 1.0}, rng), 1);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(sample_token(logits, {1e-3, 40, 1.0}, rng), 0);
  EXPECT_THROW(sample_token(logits, {1.0, 0, 0.0}, rng), std::invalid_argument);
  EXPECT_THROW(sample_token(logits, {-1.0, 0, 1.0}, rng), std::invalid_argument);
}

TEST(Generate, StreamedTextNeverSplitsACharacter) {
  auto tok = Tokenizer::from_file(fixture("tiny/tokenizer.json"));  // byte-level: one token per byte
  std::string text = "caf\xC3\xA9 \xE2\x9C\x93 \xF0\x9F\x99\x82 done";
  auto ids = tok.encode(text);
  ASSERT_EQ(ids.size(), text.size());
  TokenStreamer s(tok, tok.encode("prompt: "));
  std::string out;
  for (auto id : ids) {
    auto piece = s.put(id);
    EXPECT_FALSE(ends_with_partial_utf8(piece)) << piece;
    out += piece;
  }
  out += s.finish();
  EXPECT_EQ(out, text);
  EXPECT_TRUE(ends_with_partial_utf8("ab\xE2\x9C"));
  EXPECT_FALSE(ends_with_partial_utf8("ab\xE2\x9C\x93"));
  EXPECT_TRUE(ends_with_partial_utf8("ab\xEF\xBF\xBD"));
}
