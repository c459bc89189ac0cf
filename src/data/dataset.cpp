// Dataset: the tokenized examples and their counts, subsets, the portable seeded shuffle, and the
// train/eval split.
#include "peft/data/dataset.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>

namespace peft {

const char* to_string(DataFormat format) {
  switch (format) {
    case DataFormat::Text: return "text";
    case DataFormat::PromptCompletion: return "prompt-completion";
    case DataFormat::Messages: return "messages";
    case DataFormat::Classification: return "classification";
  }
  return "?";
}

Dataset::Dataset(std::vector<Example> examples, DataFormat format, int32_t pad_id, DatasetStats stats)
    : examples_(std::move(examples)), format_(format), pad_id_(pad_id), stats_(std::move(stats)) {}

int64_t Dataset::num_classes() const {
  int64_t n = 0;
  for (const Example& ex : examples_)
    if (ex.class_label) n = std::max(n, *ex.class_label + 1);
  return n;
}

int64_t Dataset::num_tokens() const {
  int64_t n = 0;
  for (const Example& ex : examples_) n += static_cast<int64_t>(ex.input_ids.size());
  return n;
}

Dataset Dataset::subset(const std::vector<size_t>& indices) const {
  std::vector<Example> picked;
  picked.reserve(indices.size());
  for (size_t i : indices) picked.push_back(examples_.at(i));
  return Dataset(std::move(picked), format_, pad_id_, stats_);
}

std::vector<size_t> shuffled_indices(size_t n, uint64_t seed) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::mt19937_64 rng(seed);
  for (size_t i = n; i-- > 1;) {
    // A uniform j in [0, i]: draws below 2^64 mod (i+1) are rejected so every j is equally likely.
    const uint64_t bound = i + 1;
    const uint64_t reject_below = (0 - bound) % bound;
    uint64_t x = rng();
    while (x < reject_below) x = rng();
    std::swap(order[i], order[x % bound]);
  }
  return order;
}

TrainEvalSplit split_train_eval(const Dataset& data, double eval_fraction, uint64_t seed) {
  if (!(eval_fraction > 0.0 && eval_fraction < 1.0))
    throw std::invalid_argument("the eval fraction must be between 0 and 1, not " + std::to_string(eval_fraction));
  const size_t n = data.size();
  if (n < 2) throw std::runtime_error("cannot hold out an eval split from " + std::to_string(n) + " example(s)");
  auto n_eval = static_cast<size_t>(std::llround(eval_fraction * static_cast<double>(n)));
  n_eval = std::clamp<size_t>(n_eval, 1, n - 1);
  const std::vector<size_t> order = shuffled_indices(n, seed);
  std::vector<size_t> eval(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n_eval));
  std::vector<size_t> train(order.begin() + static_cast<std::ptrdiff_t>(n_eval), order.end());
  std::sort(eval.begin(), eval.end());
  std::sort(train.begin(), train.end());
  return {data.subset(train), data.subset(eval)};
}

}  // namespace peft
