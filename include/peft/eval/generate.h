// Text generation from a causal LM: greedy or sampled (temperature, top-k, top-p) decoding with a
// key/value cache, a seeded portable random source, and stopping at end-of-sequence tokens.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "peft/eval/evaluate.h"
#include "peft/models/model.h"

namespace peft {

class PeftModel;

struct SamplingOptions {
  double temperature = 0.8;  // 0: greedy (argmax)
  int64_t top_k = 40;        // keep the k most likely tokens; 0: all
  double top_p = 1.0;        // keep the smallest set whose probability reaches p; 1: all
};

struct GenerateOptions {
  SamplingOptions sampling;
  int64_t max_new_tokens = 64;
  uint64_t seed = 0;
  std::set<int64_t> stop_ids;  // end-of-sequence tokens: generation stops after producing one
  bool use_cache = true;       // false: recompute the whole sequence for every token (a check)
  // > 0: never let prompt + generated tokens exceed this (models with learned positions, GPT-2).
  int64_t max_length = 0;
};

enum class StopReason { Eos, MaxNewTokens, MaxLength, Callback };
const char* to_string(StopReason r);

struct GenerateResult {
  std::vector<int64_t> tokens;  // generated tokens only (the stop token included when one ended it)
  StopReason stop = StopReason::MaxNewTokens;
};

// The next token from one row of logits (vocab). Greedy when temperature is 0; otherwise softmax of
// logits / temperature restricted to the top-k and then top-p tokens, drawn with `rng`. Sampling is
// done in float64 on the CPU with our own uniform draw, so a seed gives the same tokens on every
// libtorch version and device.
int64_t sample_token(const at::Tensor& logits, const SamplingOptions& options, std::mt19937_64& rng);

// Generates after `prompt` (at least one token). With the cache the prompt is fed once and then one
// token at a time; without it, the whole sequence every step. `on_token` (optional) sees each new
// token as it is produced and may return false to stop.
GenerateResult generate(const ForwardFn& forward, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                        at::Device device = at::kCPU, const std::function<bool(int64_t)>& on_token = {});
// The same on a model in eval mode (restored afterwards); max_length defaults to the model's
// learned-position limit (GPT-2's n_positions) when options.max_length is 0.
GenerateResult generate(Model& model, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                        const std::function<bool(int64_t)>& on_token = {});
GenerateResult generate(PeftModel& model, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                        const std::function<bool(int64_t)>& on_token = {});

}  // namespace peft
