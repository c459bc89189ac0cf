// Decoding loop and sampler behind `peft generate`: prompt once into the KV cache, then one token at
// a time; temperature / top-k / top-p sampling in float64 with a seeded std::mt19937_64.
#include "peft/eval/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include "peft/eval/eval_mode.h"
#include "peft/adapters/peft_model.h"

namespace peft {

const char* to_string(StopReason r) {
  switch (r) {
    case StopReason::Eos: return "eos";
    case StopReason::MaxNewTokens: return "max_new_tokens";
    case StopReason::MaxLength: return "max_length";
    case StopReason::Callback: return "stopped";
  }
  return "?";
}

int64_t sample_token(const at::Tensor& logits, const SamplingOptions& o, std::mt19937_64& rng) {
  auto l = logits.detach().reshape({-1}).to(at::kCPU, at::kDouble).contiguous();
  const int64_t V = l.size(0);
  if (V == 0) throw std::invalid_argument("sample_token: empty logits");
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature))
    throw std::invalid_argument("temperature must be a finite number >= 0 (0 = greedy), got " + std::to_string(o.temperature));
  if (!(o.top_p > 0 && o.top_p <= 1)) throw std::invalid_argument("top_p must be in (0, 1], got " + std::to_string(o.top_p));
  if (o.top_k < 0) throw std::invalid_argument("top_k must be >= 0 (0 = no limit), got " + std::to_string(o.top_k));
  const double* x = l.data_ptr<double>();
  // Most likely first; ties go to the lower id, as argmax does.
  auto before = [&](int64_t a, int64_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
  if (o.temperature == 0) {
    int64_t best = 0;
    for (int64_t i = 1; i < V; ++i)
      if (before(i, best)) best = i;
    return best;
  }
  int64_t k = o.top_k > 0 && o.top_k < V ? o.top_k : V;
  std::vector<int64_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
  order.resize(k);
  const double top = x[order[0]];
  if (!std::isfinite(top)) throw std::runtime_error("sample_token: the logits are not finite (NaN or all -inf)");
  std::vector<double> p(k);
  double total = 0;
  for (int64_t i = 0; i < k; ++i) total += p[i] = std::exp((x[order[i]] - top) / o.temperature);
  if (o.top_p < 1) {
    // Keep tokens while the mass before them is below top_p: the smallest set reaching it.
    double mass = 0;
    int64_t keep = 0;
    while (keep < k && mass < o.top_p * total) mass += p[keep++];
    p.resize(keep);
    total = mass;
  }
  const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53 * total;  // uniform in [0, total)
  double acc = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    acc += p[i];
    if (u < acc) return order[i];
  }
  return order[p.size() - 1];
}

GenerateResult generate(const ForwardFn& forward, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                        at::Device device, const std::function<bool(int64_t)>& on_token) {
  if (prompt.empty()) throw std::invalid_argument("generate: the prompt has no tokens (give some text, or a bos token)");
  if (options.max_new_tokens < 0) throw std::invalid_argument("max_new_tokens must be >= 0");
  if (options.max_length > 0 && static_cast<int64_t>(prompt.size()) > options.max_length)
    throw std::invalid_argument("the prompt has " + std::to_string(prompt.size()) + " tokens, more than the model's " +
                                std::to_string(options.max_length) + " positions");
  at::NoGradGuard no_grad;
  std::mt19937_64 rng(options.seed);
  KVCache cache;
  std::vector<int64_t> seq = prompt;
  auto ids = [&](const std::vector<int64_t>& v) { return at::tensor(v, at::kLong).unsqueeze(0).to(device); };
  at::Tensor next = ids(prompt);
  GenerateResult r;
  for (int64_t step = 0;; ++step) {
    if (step >= options.max_new_tokens) {
      r.stop = StopReason::MaxNewTokens;
      break;
    }
    if (options.max_length > 0 && static_cast<int64_t>(seq.size()) >= options.max_length) {
      r.stop = StopReason::MaxLength;
      break;
    }
    Batch b;
    if (options.use_cache) {
      b.input_ids = next;
      b.cache = &cache;
    } else {
      b.input_ids = ids(seq);
    }
    auto logits = forward(b).logits;
    int64_t tok = sample_token(logits[0][logits.size(1) - 1], options.sampling, rng);
    seq.push_back(tok);
    r.tokens.push_back(tok);
    if (on_token && !on_token(tok)) {
      r.stop = StopReason::Callback;
      break;
    }
    if (options.stop_ids.count(tok)) {
      r.stop = StopReason::Eos;
      break;
    }
    next = ids({tok});
  }
  return r;
}

namespace {

int64_t position_limit(const ModelConfig& c, int64_t requested) {
  if (requested > 0) return requested;
  return c.position_limit;
}

void check_causal(const ModelConfig& c) {
  if (!c.is_causal_lm)
    throw std::invalid_argument("generation needs a causal LM; this model is " + c.architecture);
}

}  // namespace

GenerateResult generate(Model& model, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                        const std::function<bool(int64_t)>& on_token) {
  check_causal(model.config());
  GenerateOptions o = options;
  o.max_length = position_limit(model.config(), options.max_length);
  EvalMode eval_mode(model);
  return generate([&](const Batch& b) { return model.forward(b); }, prompt, o, model.device(), on_token);
}

GenerateResult generate(PeftModel& model, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                        const std::function<bool(int64_t)>& on_token) {
  check_causal(model.base().config());
  GenerateOptions o = options;
  o.max_length = position_limit(model.base().config(), options.max_length);
  EvalMode eval_mode(model);
  return generate([&](const Batch& b) { return model.forward(b); }, prompt, o, model.base().device(), on_token);
}

}  // namespace peft
