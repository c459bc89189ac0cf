// Reference figures for evaluation tests, computed independently of src/evaluate.cpp: one example
// at a time, log-softmax in float64, summed by hand (causal LM) or argmax per example (classification).
#pragma once
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "peft/text/tokenizer.h"

namespace peft::test {

struct ReferenceEval {
  double loss_sum = 0;  // summed negative log-likelihood (LM: per token, classification: per example)
  int64_t count = 0;    // tokens predicted (LM) or examples (classification)
  int64_t correct = 0;  // classification: argmax == label
  double loss() const { return count ? loss_sum / static_cast<double>(count) : 0; }
  double accuracy() const { return count ? static_cast<double>(correct) / static_cast<double>(count) : 0; }
};

// logits_of: input ids (1, T) -> logits, (1, T, vocab) for a causal LM or (1, num_labels).
using LogitsFn = std::function<at::Tensor(const at::Tensor& input_ids)>;

inline std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

inline at::Tensor ids_tensor(const std::vector<int32_t>& ids32) {
  std::vector<int64_t> ids(ids32.begin(), ids32.end());
  return at::tensor(ids, at::kLong).unsqueeze(0);
}

// Every {"text"} record of `jsonl`, tokenized without special tokens: token t+1 predicted from 0..t.
inline ReferenceEval reference_causal_loss(const LogitsFn& logits_of, const Tokenizer& tok, const std::string& jsonl) {
  ReferenceEval r;
  for (auto& rec : read_jsonl(jsonl)) {
    auto ids = tok.encode(rec["text"].get<std::string>());
    auto lp = at::log_softmax(logits_of(ids_tensor(ids)).to(at::kDouble)[0], -1);
    for (size_t i = 0; i + 1 < ids.size(); ++i) r.loss_sum -= lp[i][ids[i + 1]].item<double>();
    r.count += static_cast<int64_t>(ids.size()) - 1;
  }
  return r;
}

// Every {"text", "label"} record of `jsonl`: cross-entropy and argmax of the class logits.
inline ReferenceEval reference_classification(const LogitsFn& logits_of, const Tokenizer& tok, const std::string& jsonl) {
  ReferenceEval r;
  for (auto& rec : read_jsonl(jsonl)) {
    auto logits = logits_of(ids_tensor(tok.encode(rec["text"].get<std::string>()))).to(at::kDouble)[0];
    int64_t label = rec["label"].get<int64_t>();
    r.loss_sum -= at::log_softmax(logits, -1)[label].item<double>();
    r.correct += logits.argmax().item<int64_t>() == label;
    ++r.count;
  }
  return r;
}

}  // namespace peft::test
