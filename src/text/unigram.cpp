// The Unigram model (SentencePiece): the Viterbi best segmentation over a byte trie of the
// vocabulary, unknown characters scored below the worst piece and fused, optional byte fallback.
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <unordered_map>

#include "pipeline.h"

namespace peft::text {

namespace {

class Unigram : public Model {
 public:
  Unigram(const json& j, const Where& w) {
    const json& vocab = require(j, "vocab", w);
    if (!vocab.is_array()) w.at("vocab").fail("expected an array of [token, score] pairs");
    pieces_.reserve(vocab.size());
    for (size_t i = 0; i < vocab.size(); ++i) {
      const json& e = vocab[i];
      if (!e.is_array() || e.size() != 2 || !e[0].is_string() || !e[1].is_number())
        w.at("vocab").at(i).fail("expected [token, score]");
      pieces_.push_back({e[0].get<std::string>(), e[1].get<double>()});
      ids_[pieces_.back().first] = static_cast<int32_t>(i);
      min_score_ = std::min(min_score_, pieces_.back().second);
    }
    for (auto& [token, score] : pieces_) insert(token, ids_[token]);
    if (j.contains("unk_id") && !j["unk_id"].is_null()) {
      int64_t unk = get_int(j, "unk_id", w);
      if (unk < 0 || static_cast<size_t>(unk) >= pieces_.size()) w.at("unk_id").fail("unk_id is outside the vocabulary");
      unk_id_ = static_cast<int32_t>(unk);
    }
    byte_fallback_ = get_bool(j, "byte_fallback", false, w);
  }

  void tokenize(const std::string& s, std::vector<int32_t>& ids) const override {
    if (s.empty()) return;
    struct Best {
      double score = 0;
      int64_t start = -1;  // -1: not reached yet
      int32_t id = 0;
    };
    const double unk_score = min_score_ - 10.0;
    std::vector<Best> best(s.size() + 1);
    for (size_t at = 0; at < s.size();) {
      size_t mblen = char_len(static_cast<unsigned char>(s[at]));
      double here = best[at].score;
      bool single = false;
      int node = 0;
      for (size_t k = at; k < s.size(); ++k) {
        node = child(node, static_cast<unsigned char>(s[k]));
        if (node < 0) break;
        int32_t id = node_ids_[node];
        if (id < 0) continue;
        double cand = here + pieces_[id].second;
        Best& t = best[k + 1];
        if (t.start < 0 || cand > t.score) t = {cand, static_cast<int64_t>(at), id};
        if (k + 1 - at == mblen) single = true;
      }
      if (!single) {
        Best& t = best[at + mblen];
        double cand = here + unk_score;
        if (t.start < 0 || cand > t.score) {
          if (!unk_id_) throw std::runtime_error("Unigram: an unknown character needs unk_id, which is missing");
          t = {cand, static_cast<int64_t>(at), *unk_id_};
        }
      }
      at += mblen;
    }
    // Walk back the best path; adjacent unknown pieces are fused into one.
    std::vector<std::pair<size_t, size_t>> spans;
    std::vector<bool> unknown;
    for (size_t end = s.size(); end > 0;) {
      const Best& b = best[end];
      auto start = static_cast<size_t>(b.start);
      bool unk = unk_id_ && b.id == *unk_id_;
      if (unk && !unknown.empty() && unknown.back()) spans.back().first = start;
      else {
        spans.emplace_back(start, end);
        unknown.push_back(unk);
      }
      end = start;
    }
    for (size_t i = spans.size(); i-- > 0;) {
      std::string piece = s.substr(spans[i].first, spans[i].second - spans[i].first);
      auto it = ids_.find(piece);
      if (it != ids_.end()) {
        ids.push_back(it->second);
        continue;
      }
      if (byte_fallback_ && append_bytes(piece, ids)) continue;
      if (!unk_id_) throw std::runtime_error("Unigram: an unknown piece needs unk_id, which is missing");
      ids.push_back(*unk_id_);
    }
  }
  std::optional<int32_t> token_to_id(const std::string& token) const override {
    auto it = ids_.find(token);
    if (it == ids_.end()) return std::nullopt;
    return it->second;
  }
  std::optional<std::string> id_to_token(int32_t id) const override {
    if (id < 0 || static_cast<size_t>(id) >= pieces_.size()) return std::nullopt;
    return pieces_[id].first;
  }
  size_t vocab_size() const override { return pieces_.size(); }

 private:
  // Byte trie of the vocabulary: node -> token id, (node, byte) -> child node.
  int child(int node, unsigned char b) const {
    auto it = edges_.find((static_cast<uint64_t>(node) << 8) | b);
    return it == edges_.end() ? -1 : it->second;
  }
  void insert(const std::string& token, int32_t id) {
    int node = 0;
    for (unsigned char b : token) {
      int next = child(node, b);
      if (next < 0) {
        next = static_cast<int>(node_ids_.size());
        node_ids_.push_back(-1);
        edges_[(static_cast<uint64_t>(node) << 8) | b] = next;
      }
      node = next;
    }
    if (node != 0) node_ids_[node] = id;
  }
  bool append_bytes(const std::string& piece, std::vector<int32_t>& ids) const {
    std::vector<int32_t> bytes;
    char code[8];
    for (unsigned char b : piece) {
      std::snprintf(code, sizeof code, "<0x%02X>", b);
      auto it = ids_.find(code);
      if (it == ids_.end()) return false;
      bytes.push_back(it->second);
    }
    ids.insert(ids.end(), bytes.begin(), bytes.end());
    return true;
  }

  std::vector<std::pair<std::string, double>> pieces_;
  std::unordered_map<std::string, int32_t> ids_;
  std::vector<int32_t> node_ids_{-1};
  std::unordered_map<uint64_t, int> edges_;
  double min_score_ = INFINITY;
  std::optional<int32_t> unk_id_;
  bool byte_fallback_ = false;
};

}  // namespace

std::unique_ptr<Model> make_unigram(const json& j, const Where& w) { return std::make_unique<Unigram>(j, w); }

}  // namespace peft::text
