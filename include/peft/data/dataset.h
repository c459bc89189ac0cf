// Fine-tuning datasets from JSONL: plain text, prompt/completion, chat messages and classification
// records turned into token ids with loss labels; deterministic shuffling and train/eval splits.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "peft/text/chat_format.h"
#include "peft/text/text_encoder.h"

namespace peft {

// The label of a token that takes no part in the loss (PyTorch's cross-entropy ignore_index).
constexpr int32_t kIgnoreIndex = -100;

struct Example {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> labels;        // as long as input_ids, kIgnoreIndex where masked; empty for classification
  std::optional<int64_t> class_label;  // classification only
};

// The JSONL record forms; a file holds one form throughout.
enum class DataFormat {
  Text,              // {"text": ...}: loss on every token
  PromptCompletion,  // {"prompt": ..., "completion": ...}: loss on the completion and eos only; both may
                     // also be lists of messages (a conversation and its continuation)
  Messages,          // {"messages": [{"role", "content"}, ...]}: loss on assistant turns only
  Classification,    // {"text": ..., "label": int}: one class per text
};
const char* to_string(DataFormat format);

struct DatasetOptions {
  int64_t max_length = 0;                 // > 0: cut longer examples to this many tokens (keeping the start)
  bool skip_bad_lines = false;            // count and skip malformed lines instead of throwing
  std::optional<ChatFormat> chat_format;  // needed for "messages" data
  // Plain-text forms get the encoder's bos/eos around them; chat messages never do (their
  // template writes its own markers).
  bool add_bos = true;
  bool add_eos = true;
  bool completion_only_loss = true;  // false: prompt/completion records learn the prompt too
  bool assistant_only_loss = true;   // false: chat records learn every token, template text included
};

struct DatasetStats {
  int64_t lines = 0;               // non-blank lines read
  int64_t skipped_lines = 0;       // bad lines skipped under skip_bad_lines
  std::string first_skip_reason;   // the error of the first skipped line
  int64_t truncated_examples = 0;  // examples cut to max_length
  int64_t truncated_tokens = 0;    // tokens cut off in all
  int64_t dropped_examples = 0;    // left with no token to learn (e.g. a prompt longer than max_length)
};

class Dataset {
 public:
  // Reads a JSONL file (blank lines ignored). Errors are std::runtime_error starting
  // "path:line: " and saying what was expected, e.g. `data.jsonl:17: expected a string in
  // "completion"`. A dataset with no example left is an error.
  static Dataset from_jsonl(const std::string& path, const TextEncoder& encoder, const DatasetOptions& options = {});
  // The same from JSONL text; `origin` stands for the file name in errors.
  static Dataset from_jsonl_string(const std::string& jsonl, const std::string& origin, const TextEncoder& encoder,
                                   const DatasetOptions& options = {});

  Dataset(std::vector<Example> examples, DataFormat format, int32_t pad_id, DatasetStats stats = {});

  size_t size() const { return examples_.size(); }
  const Example& operator[](size_t i) const { return examples_.at(i); }
  const std::vector<Example>& examples() const { return examples_; }
  DataFormat format() const { return format_; }
  int32_t pad_id() const { return pad_id_; }
  const DatasetStats& stats() const { return stats_; }
  int64_t num_classes() const;  // classification: the largest label + 1; otherwise 0
  int64_t num_tokens() const;   // input tokens over all examples

  Dataset subset(const std::vector<size_t>& indices) const;

 private:
  std::vector<Example> examples_;
  DataFormat format_;
  int32_t pad_id_;
  DatasetStats stats_;
};

// A permutation of 0..n-1 from `seed`: std::mt19937_64 driving a Fisher-Yates shuffle with
// rejection sampling, so every standard library gives the same order.
std::vector<size_t> shuffled_indices(size_t n, uint64_t seed);

// Holds out round(eval_fraction * size) examples (at least one, leaving at least one) chosen by
// `seed`; both parts keep the original order. For a separate eval file, load it as its own Dataset.
struct TrainEvalSplit {
  Dataset train;
  Dataset eval;
};
TrainEvalSplit split_train_eval(const Dataset& data, double eval_fraction, uint64_t seed);

}  // namespace peft
