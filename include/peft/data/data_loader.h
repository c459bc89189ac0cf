// Batches for training: right-padded rows with an attention mask and masked labels, optional
// packing of several examples per row, and an epoch/step position that can be saved and restored.
#pragma once
#include <cstdint>
#include <vector>

#include "peft/data/dataset.h"

namespace peft {

// Plain row-major int64 arrays of shape [batch_size, seq_len] (class_labels: [batch_size]).
struct TokenBatch {
  int64_t batch_size = 0;
  int64_t seq_len = 0;                  // the longest row in the batch
  std::vector<int64_t> input_ids;       // padding holds the dataset's pad id
  std::vector<int64_t> attention_mask;  // 1 on tokens, 0 on padding
  std::vector<int64_t> labels;          // kIgnoreIndex on padding and masked tokens; empty for classification
  std::vector<int64_t> position_ids;    // 0,1,2,... restarting at each packed example; 0 on padding
  std::vector<int64_t> class_labels;    // classification only
  int64_t target_tokens = 0;            // labels that are not kIgnoreIndex
};

// Right-pads `examples` into one batch.
TokenBatch collate(const std::vector<const Example*>& examples, int32_t pad_id);

struct LoaderOptions {
  int64_t batch_size = 8;
  bool shuffle = true;    // a new order each epoch, from seed and epoch
  uint64_t seed = 0;
  bool drop_last = false;  // leave out a last batch smaller than batch_size
  // > 0: pack consecutive examples (in the seed's order) into rows of at most this many tokens,
  // once, before the epochs. Positions restart at each example and the first label of each is
  // masked, so no example learns from the one before it.
  int64_t pack_length = 0;
};

// The next batch to produce: step `step` (0-based) of epoch `epoch` (0-based).
struct LoaderPosition {
  int64_t epoch = 0;
  int64_t step = 0;
};

class DataLoader {
 public:
  // `data` must outlive the loader. Throws if there would be no batch at all (an empty dataset, or
  // drop_last with fewer rows than batch_size), or if packing meets an example longer than pack_length.
  DataLoader(const Dataset& data, LoaderOptions options);

  int64_t steps_per_epoch() const;
  int64_t num_rows() const { return static_cast<int64_t>(rows_.size()); }  // examples, or packed rows

  LoaderPosition position() const { return position_; }
  void set_position(LoaderPosition p);  // throws if step is not below steps_per_epoch()

  TokenBatch next();                            // batch(position()), then moves on, to the next epoch after the last step
  // Data-parallel shards: the batch `offset` steps after position() (into later epochs as next()
  // would go), without moving; and moving on by `steps`. Process r of N reads peek(r), then
  // advance(N): together the N processes read the batches one process would, in its order.
  TokenBatch peek(int64_t offset) const;
  void advance(int64_t steps);
  TokenBatch batch(LoaderPosition p) const;     // any batch, the same every time for the same position
  std::vector<size_t> epoch_order(int64_t epoch) const;  // the order of rows in an epoch

 private:
  const Dataset* data_;
  LoaderOptions options_;
  std::vector<std::vector<size_t>> rows_;  // each row: the examples it holds
  LoaderPosition position_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<size_t> cached_order_;
};

}  // namespace peft
