// Batching: right-padding rows of one or more (packed) examples into int64 arrays, and the
// DataLoader's per-epoch order and resumable epoch/step position.
#include "peft/data/data_loader.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace peft {
namespace {

// A different, well-mixed seed for each epoch (splitmix64 of seed and epoch).
uint64_t epoch_seed(uint64_t seed, int64_t epoch) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (static_cast<uint64_t>(epoch) + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// One batch from rows, each row the concatenation of its examples.
TokenBatch collate_rows(const std::vector<std::vector<const Example*>>& rows, int32_t pad_id) {
  TokenBatch b;
  b.batch_size = static_cast<int64_t>(rows.size());
  bool classification = false;
  for (const auto& row : rows) {
    int64_t len = 0;
    for (const Example* ex : row) {
      len += static_cast<int64_t>(ex->input_ids.size());
      classification = classification || ex->class_label.has_value();
    }
    b.seq_len = std::max(b.seq_len, len);
  }
  const auto cells = static_cast<size_t>(b.batch_size * b.seq_len);
  b.input_ids.assign(cells, pad_id);
  b.attention_mask.assign(cells, 0);
  b.position_ids.assign(cells, 0);
  if (!classification) b.labels.assign(cells, kIgnoreIndex);
  for (size_t r = 0; r < rows.size(); ++r) {
    size_t at = r * static_cast<size_t>(b.seq_len);
    for (const Example* ex : rows[r]) {
      if (classification) {
        if (rows[r].size() != 1 || !ex->class_label) throw std::invalid_argument("classification rows hold one labelled example");
        b.class_labels.push_back(*ex->class_label);
      } else if (ex->labels.size() != ex->input_ids.size()) {
        throw std::invalid_argument("an example's labels and input_ids differ in length");
      }
      for (size_t t = 0; t < ex->input_ids.size(); ++t, ++at) {
        b.input_ids[at] = ex->input_ids[t];
        b.attention_mask[at] = 1;
        b.position_ids[at] = static_cast<int64_t>(t);
        if (classification) continue;
        // In a packed row, an example's first token would be predicted from the example before it.
        const bool after_another = t == 0 && ex != rows[r].front();
        b.labels[at] = after_another ? kIgnoreIndex : ex->labels[t];
        if (b.labels[at] != kIgnoreIndex) ++b.target_tokens;
      }
    }
  }
  return b;
}

}  // namespace

TokenBatch collate(const std::vector<const Example*>& examples, int32_t pad_id) {
  std::vector<std::vector<const Example*>> rows;
  for (const Example* ex : examples) rows.push_back({ex});
  return collate_rows(rows, pad_id);
}

DataLoader::DataLoader(const Dataset& data, LoaderOptions options) : data_(&data), options_(options) {
  if (options_.batch_size <= 0) throw std::invalid_argument("batch_size must be positive");
  const size_t n = data.size();
  std::vector<size_t> order = options_.shuffle ? shuffled_indices(n, options_.seed) : std::vector<size_t>();
  if (!options_.shuffle)
    for (size_t i = 0; i < n; ++i) order.push_back(i);
  if (options_.pack_length > 0) {
    if (data.format() == DataFormat::Classification)
      throw std::invalid_argument("packing does not apply to classification data");
    const auto cap = static_cast<size_t>(options_.pack_length);
    size_t row_len = 0;
    for (size_t i : order) {
      const size_t len = data[i].input_ids.size();
      if (len > cap)
        throw std::runtime_error("example " + std::to_string(i) + " has " + std::to_string(len) +
                                 " tokens, more than the packing length " + std::to_string(cap) +
                                 ": set max_length to at most the packing length");
      if (rows_.empty() || row_len + len > cap) {
        rows_.emplace_back();
        row_len = 0;
      }
      rows_.back().push_back(i);
      row_len += len;
    }
  } else {
    for (size_t i : order) rows_.push_back({i});
  }
  if (steps_per_epoch() == 0)
    throw std::runtime_error("no batch to train on: " + std::to_string(rows_.size()) + " rows, batch size " +
                             std::to_string(options_.batch_size) + (options_.drop_last ? " with drop_last" : ""));
}

int64_t DataLoader::steps_per_epoch() const {
  const auto rows = static_cast<int64_t>(rows_.size());
  const int64_t b = options_.batch_size;
  return options_.drop_last ? rows / b : (rows + b - 1) / b;
}

void DataLoader::set_position(LoaderPosition p) {
  if (p.epoch < 0 || p.step < 0 || p.step >= steps_per_epoch())
    throw std::out_of_range("loader position epoch " + std::to_string(p.epoch) + " step " + std::to_string(p.step) +
                            " is outside an epoch of " + std::to_string(steps_per_epoch()) + " steps");
  position_ = p;
}

std::vector<size_t> DataLoader::epoch_order(int64_t epoch) const {
  if (options_.shuffle) return shuffled_indices(rows_.size(), epoch_seed(options_.seed, epoch));
  std::vector<size_t> order(rows_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  return order;
}

TokenBatch DataLoader::batch(LoaderPosition p) const {
  if (p.step < 0 || p.step >= steps_per_epoch()) throw std::out_of_range("loader step outside the epoch");
  if (p.epoch != cached_epoch_) {  // one shuffle per epoch, not per batch
    cached_order_ = epoch_order(p.epoch);
    cached_epoch_ = p.epoch;
  }
  const std::vector<size_t>& order = cached_order_;
  const auto begin = static_cast<size_t>(p.step * options_.batch_size);
  const size_t end = std::min(order.size(), begin + static_cast<size_t>(options_.batch_size));
  std::vector<std::vector<const Example*>> rows;
  for (size_t k = begin; k < end; ++k) {
    rows.emplace_back();
    for (size_t i : rows_[order[k]]) rows.back().push_back(&(*data_)[i]);
  }
  return collate_rows(rows, data_->pad_id());
}

TokenBatch DataLoader::next() {
  TokenBatch b = batch(position_);
  advance(1);
  return b;
}

namespace {

LoaderPosition moved(LoaderPosition p, int64_t steps, int64_t per_epoch) {
  const int64_t at = p.step + steps;
  return {p.epoch + at / per_epoch, at % per_epoch};
}

}  // namespace

TokenBatch DataLoader::peek(int64_t offset) const {
  if (offset < 0) throw std::out_of_range("loader offset " + std::to_string(offset) + " is negative");
  return batch(moved(position_, offset, steps_per_epoch()));
}

void DataLoader::advance(int64_t steps) {
  if (steps < 0) throw std::out_of_range("loader steps " + std::to_string(steps) + " is negative");
  position_ = moved(position_, steps, steps_per_epoch());
}

}  // namespace peft
