// Evaluation of a model, with or without an adapter, on a tokenized dataset: causal-LM loss and
// perplexity over the counted target tokens, or classification loss and accuracy over examples.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>

#include "peft/data/data_loader.h"
#include "peft/data/dataset.h"
#include "peft/models/model.h"

namespace peft {

class PeftModel;

struct EvalResult {
  double loss = 0;        // mean over target tokens (LM) or examples (classification), no penalty
  double perplexity = 0;  // exp(loss), causal LM
  double accuracy = -1;   // classification, else -1
  int64_t tokens = 0;     // target tokens (LM) or examples (classification) counted
};

// A forward pass: a plain model's or a PeftModel's.
using ForwardFn = std::function<ModelOutput(const Batch&)>;

// Throws std::invalid_argument naming both paths when the data's form does not fit the model:
// {"text","label"} records need a *ForSequenceClassification model with enough labels, the other
// forms a causal LM.
void check_task(const Dataset& data, const ModelConfig& config, const std::string& data_path, const std::string& model_dir);

// A loader batch as model input on `device`. position_ids are set only when `with_positions`
// (packed rows, where positions restart at each example).
Batch to_model_batch(const TokenBatch& tb, at::Device device, bool with_positions = false);

// Runs `forward` over `data` in order, `batch_size` examples at a time, without gradients. The loss
// is the model's task loss (AdaLoRA's penalty left out) weighted by the tokens or examples each
// batch counts, so the result is the mean over the whole dataset whatever the batch size.
EvalResult evaluate(const ForwardFn& forward, const Dataset& data, int64_t batch_size, bool causal_lm,
                    at::Device device = at::kCPU);
// The same in eval mode (dropout off); the model's training mode is restored afterwards.
EvalResult evaluate(Model& model, const Dataset& data, int64_t batch_size);
EvalResult evaluate(PeftModel& model, const Dataset& data, int64_t batch_size);

}  // namespace peft
