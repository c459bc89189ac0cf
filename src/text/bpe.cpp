// The BPE model: merges applied by rank with a priority queue (as tokenizers' Word::merge_all),
// unk/byte_fallback handling, subword prefix/suffix, ignore_merges, and a per-word result cache.
#include <cstdio>
#include <mutex>
#include <queue>
#include <stdexcept>
#include <unordered_map>

#include "pipeline.h"
#include "vocab.h"

namespace peft::text {

namespace {

class Bpe : public Model {
 public:
  Bpe(const json& j, const Where& w);

  void tokenize(const std::string& word, std::vector<int32_t>& ids) const override;
  std::optional<int32_t> token_to_id(const std::string& token) const override { return vocab_.find(token); }
  std::optional<std::string> id_to_token(int32_t id) const override { return vocab_.token(id); }
  size_t vocab_size() const override { return vocab_.ids.size(); }

 private:
  struct MergeInfo {
    uint32_t rank;
    int32_t new_id;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  const MergeInfo* find_merge(int32_t a, int32_t b) const {
    auto it = merges_.find(pair_key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  }
  // A word's symbols in the merge loop: a doubly linked list over a vector; merged-away symbols get len 0.
  struct Symbol {
    int32_t c;
    int prev, next;
    size_t len;
  };
  void merge_word(const std::string& word, std::vector<int32_t>& ids) const;
  // The word as characters (with continuing-subword prefix / end-of-word suffix), byte fallback or unk.
  std::vector<Symbol> initial_symbols(const std::string& word) const;
  // Applies the merges in rank order (leftmost first among equal ranks), as the Rust library does.
  void apply_merges(std::vector<Symbol>& symbols) const;

  Vocab vocab_;
  std::unordered_map<uint64_t, MergeInfo> merges_;
  std::optional<std::string> unk_token_, prefix_, suffix_;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;

  static constexpr size_t kCacheCapacity = 1 << 16;
  static constexpr size_t kMaxCachedWord = 256;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

Bpe::Bpe(const json& j, const Where& w) : vocab_(Vocab::from_json(require(j, "vocab", w), w.at("vocab"))) {
  unk_token_ = get_optional_string(j, "unk_token", w);
  prefix_ = get_optional_string(j, "continuing_subword_prefix", w);
  suffix_ = get_optional_string(j, "end_of_word_suffix", w);
  fuse_unk_ = get_bool(j, "fuse_unk", false, w);
  byte_fallback_ = get_bool(j, "byte_fallback", false, w);
  ignore_merges_ = get_bool(j, "ignore_merges", false, w);

  const json& merges = require(j, "merges", w);
  if (!merges.is_array()) w.at("merges").fail("expected an array");
  merges_.reserve(merges.size());
  size_t prefix_len = prefix_ ? prefix_->size() : 0;
  auto id_of = [&](const std::string& t, size_t rank) {
    auto it = vocab_.ids.find(t);
    if (it == vocab_.ids.end()) w.at("merges").at(rank).fail("token '" + t + "' is not in the vocabulary");
    return it->second;
  };
  std::string a, b;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const json& m = merges[rank];
    if (m.is_string()) {
      const auto& s = m.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        w.at("merges").at(rank).fail("expected two tokens separated by one space, got '" + s + "'");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      w.at("merges").at(rank).fail("expected \"a b\" or [\"a\", \"b\"]");
    }
    if (b.size() < prefix_len) w.at("merges").at(rank).fail("token '" + b + "' lacks the continuing subword prefix");
    int32_t ida = id_of(a, rank), idb = id_of(b, rank);
    int32_t merged = id_of(a + b.substr(prefix_len), rank);
    merges_[pair_key(ida, idb)] = {static_cast<uint32_t>(rank), merged};
  }
}

void Bpe::tokenize(const std::string& word, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  bool cacheable = word.size() < kMaxCachedWord;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  size_t first = ids.size();
  auto whole = ignore_merges_ ? vocab_.ids.find(word) : vocab_.ids.end();
  if (whole != vocab_.ids.end()) ids.push_back(whole->second);
  else merge_word(word, ids);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kCacheCapacity) cache_.clear();
    cache_.emplace(word, std::vector<int32_t>(ids.begin() + static_cast<std::ptrdiff_t>(first), ids.end()));
  }
}

std::vector<Bpe::Symbol> Bpe::initial_symbols(const std::string& word) const {
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&](int32_t c, size_t len) {
    int n = static_cast<int>(symbols.size());
    if (n) symbols.back().next = n;
    symbols.push_back({c, n - 1, -1, len});
  };
  auto unk_id = [&]() -> int32_t {
    auto it = vocab_.ids.find(*unk_token_);
    if (it == vocab_.ids.end()) throw std::runtime_error("BPE: unk_token '" + *unk_token_ + "' is not in the vocabulary");
    return it->second;
  };

  bool have_unk = false;
  int32_t unk = 0;
  size_t unk_len = 0;
  std::string s;
  for (size_t i = 0; i < word.size();) {
    size_t start = i;
    i += char_len(static_cast<unsigned char>(word[i]));
    size_t byte_len = i - start;
    s.clear();
    if (start > 0 && prefix_) s += *prefix_;
    s.append(word, start, byte_len);
    if (i >= word.size() && suffix_) s += *suffix_;

    auto it = vocab_.ids.find(s);
    if (it != vocab_.ids.end()) {
      if (have_unk) {
        add(unk, unk_len);
        have_unk = false;
      }
      add(it->second, byte_len);
      continue;
    }
    if (byte_fallback_) {
      std::vector<int32_t> bytes;
      bool all = true;
      char code[8];
      for (unsigned char b : s) {
        std::snprintf(code, sizeof code, "<0x%02X>", b);
        auto bt = vocab_.ids.find(code);
        if (bt == vocab_.ids.end()) {
          all = false;
          break;
        }
        bytes.push_back(bt->second);
      }
      if (all) {
        for (int32_t b : bytes) add(b, 1);
        continue;
      }
    }
    if (unk_token_) {
      if (have_unk && fuse_unk_) {
        unk_len += byte_len;
      } else {
        if (have_unk) add(unk, unk_len);
        unk = unk_id();
        unk_len = byte_len;
        have_unk = true;
      }
    }
  }
  if (have_unk) add(unk, unk_len);
  return symbols;
}

void Bpe::apply_merges(std::vector<Symbol>& symbols) const {
  struct Merge {
    size_t pos;
    uint32_t rank;
    int32_t new_id;
  };
  auto later = [](const Merge& x, const Merge& y) { return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos; };
  std::priority_queue<Merge, std::vector<Merge>, decltype(later)> queue(later);
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (auto m = find_merge(symbols[i].c, symbols[i + 1].c)) queue.push({i, m->rank, m->new_id});
  }
  while (!queue.empty()) {
    Merge top = queue.top();
    queue.pop();
    Symbol& cur = symbols[top.pos];
    if (cur.len == 0 || cur.next == -1) continue;
    auto next_pos = static_cast<size_t>(cur.next);
    Symbol right = symbols[next_pos];
    auto m = find_merge(cur.c, right.c);
    if (!m || m->new_id != top.new_id) continue;  // stale entry
    cur.c = top.new_id;
    cur.len += right.len;
    cur.next = right.next;
    symbols[next_pos].len = 0;
    if (right.next > -1 && static_cast<size_t>(right.next) < symbols.size()) symbols[right.next].prev = static_cast<int>(top.pos);
    if (cur.prev >= 0) {
      if (auto pm = find_merge(symbols[cur.prev].c, cur.c))
        queue.push({static_cast<size_t>(cur.prev), pm->rank, pm->new_id});
    }
    if (cur.next >= 0 && static_cast<size_t>(cur.next) < symbols.size()) {
      if (auto nm = find_merge(cur.c, symbols[cur.next].c)) queue.push({top.pos, nm->rank, nm->new_id});
    }
  }
}

void Bpe::merge_word(const std::string& word, std::vector<int32_t>& ids) const {
  std::vector<Symbol> symbols = initial_symbols(word);
  apply_merges(symbols);
  for (auto& sym : symbols)
    if (sym.len) ids.push_back(sym.c);
}

}  // namespace

std::unique_ptr<Model> make_bpe(const json& j, const Where& w) { return std::make_unique<Bpe>(j, w); }

}  // namespace peft::text
