// A token <-> id vocabulary read from a tokenizer.json "vocab" object, shared by the models that
// store their vocabulary that way (BPE, WordPiece, WordLevel).
#pragma once
#include <algorithm>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "pipeline.h"

namespace peft::text {

struct Vocab {
  std::unordered_map<std::string, int32_t> ids;

  Vocab() = default;
  Vocab(Vocab&&) = default;  // moving keeps the map's nodes, so the pointers below stay valid
  Vocab(const Vocab&) = delete;

  // Reads {"token": id, ...}; throws naming the file and field on anything else.
  static Vocab from_json(const json& j, const Where& w) {
    if (!j.is_object()) w.fail("expected an object mapping tokens to ids");
    Vocab v;
    v.ids.reserve(j.size());
    int32_t max_id = -1;
    for (auto it = j.begin(); it != j.end(); ++it) {
      const json& id = it.value();
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
        w.fail("id of token '" + it.key() + "' is not a valid id");
      auto n = static_cast<int32_t>(id.get<int64_t>());
      v.ids[it.key()] = n;
      max_id = std::max(max_id, n);
    }
    // Tokens by id: a table when ids are dense (they always are in practice), else a map.
    bool dense = static_cast<size_t>(max_id) < 4 * v.ids.size() + 1024;
    if (dense) v.by_id_.assign(static_cast<size_t>(max_id + 1), nullptr);
    for (auto& [token, id] : v.ids) {
      if (dense) v.by_id_[id] = &token;
      else v.sparse_[id] = &token;
    }
    return v;
  }
  std::optional<int32_t> find(const std::string& token) const {
    auto it = ids.find(token);
    if (it == ids.end()) return std::nullopt;
    return it->second;
  }
  std::optional<std::string> token(int32_t id) const {
    if (id >= 0 && static_cast<size_t>(id) < by_id_.size() && by_id_[id]) return *by_id_[id];
    auto it = sparse_.find(id);
    if (it == sparse_.end()) return std::nullopt;
    return *it->second;
  }

 private:
  std::vector<const std::string*> by_id_;  // points at the keys of `ids`
  std::unordered_map<int32_t, const std::string*> sparse_;
};

}  // namespace peft::text
