// Dataset evaluation shared by `peft train` (eval before/after/during training) and `peft eval`:
// batches in order, no gradients, per-batch task losses weighted by what each batch counts.
#include "peft/eval/evaluate.h"

#include <cmath>
#include <stdexcept>

#include "peft/eval/eval_mode.h"
#include "peft/adapters/peft_model.h"

namespace peft {

void check_task(const Dataset& data, const ModelConfig& mc, const std::string& data_path, const std::string& model_dir) {
  if (data.format() == DataFormat::Classification) {
    if (mc.num_labels <= 0)
      throw std::invalid_argument(data_path + ": classification data (\"label\") needs a *ForSequenceClassification model; " +
                                  model_dir + " is " + mc.architecture);
    if (data.num_classes() > mc.num_labels)
      throw std::invalid_argument(data_path + ": labels go up to " + std::to_string(data.num_classes() - 1) +
                                  " but the model has num_labels " + std::to_string(mc.num_labels));
  } else if (!mc.is_causal_lm) {
    throw std::invalid_argument(data_path + ": " + to_string(data.format()) + " data needs a causal LM; " + model_dir + " is " +
                                mc.architecture + " (use {\"text\", \"label\"} records)");
  }
}

Batch to_model_batch(const TokenBatch& tb, at::Device device, bool with_positions) {
  Batch b;
  auto make = [&](const std::vector<int64_t>& v, std::vector<int64_t> shape) {
    return at::tensor(v, at::kLong).view(shape).to(device);
  };
  b.input_ids = make(tb.input_ids, {tb.batch_size, tb.seq_len});
  bool padded = false;
  for (auto m : tb.attention_mask) padded = padded || m == 0;
  if (padded) b.attention_mask = make(tb.attention_mask, {tb.batch_size, tb.seq_len});
  if (with_positions) b.position_ids = make(tb.position_ids, {tb.batch_size, tb.seq_len});
  if (!tb.class_labels.empty()) b.labels = make(tb.class_labels, {tb.batch_size});
  else b.labels = make(tb.labels, {tb.batch_size, tb.seq_len});
  return b;
}

EvalResult evaluate(const ForwardFn& forward, const Dataset& data, int64_t batch_size, bool causal_lm,
                    at::Device device) {
  if (batch_size <= 0) throw std::invalid_argument("evaluate: batch size must be > 0, got " + std::to_string(batch_size));
  at::NoGradGuard no_grad;
  LoaderOptions lo;
  lo.batch_size = batch_size;
  lo.shuffle = false;
  DataLoader loader(data, lo);
  double loss_sum = 0, correct = 0;
  int64_t count = 0;
  for (int64_t i = 0; i < loader.steps_per_epoch(); ++i) {
    auto b = to_model_batch(loader.batch({0, i}), device);
    auto out = forward(b);
    auto loss = (out.task_loss.defined() ? out.task_loss : out.loss).item<double>();
    if (b.labels.dim() == 1) {
      loss_sum += loss * b.labels.size(0);
      count += b.labels.size(0);
      correct += out.logits.argmax(-1).eq(b.labels).sum().item<double>();
    } else {
      int64_t n = b.labels.narrow(1, 1, b.labels.size(1) - 1).ne(kIgnoreIndex).sum().item<int64_t>();
      if (n == 0) continue;  // nothing to score in this batch (its mean loss is NaN)
      loss_sum += loss * n;
      count += n;
    }
  }
  if (count == 0) {
    throw std::invalid_argument("the evaluation data has nothing to score (" + std::to_string(data.size()) +
                                " records, no target token after the first of a record): evaluate on records of at "
                                "least 2 tokens with a completion");
  }
  EvalResult r;
  r.tokens = count;
  r.loss = loss_sum / count;
  if (causal_lm) r.perplexity = std::exp(r.loss);
  else r.accuracy = correct / count;
  return r;
}

EvalResult evaluate(Model& model, const Dataset& data, int64_t batch_size) {
  EvalMode eval_mode(model);
  return evaluate([&](const Batch& b) { return model.forward(b); }, data, batch_size, model.config().is_causal_lm,
                  model.device());
}

EvalResult evaluate(PeftModel& model, const Dataset& data, int64_t batch_size) {
  EvalMode eval_mode(model);
  return evaluate([&](const Batch& b) { return model.forward(b); }, data, batch_size,
                  model.base().config().is_causal_lm, model.base().device());
}

}  // namespace peft
