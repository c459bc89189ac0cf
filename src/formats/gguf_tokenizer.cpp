// tokenizer.json and tokenizer_config.json built from a GGUF file's tokenizer.ggml.* metadata: byte-level BPE
// (vocabulary respelled, merges, llama.cpp's pre-tokenizer) or SentencePiece BPE (merges from the scores, byte fallback).
#include "peft/formats/gguf_tokenizer.h"

#include <algorithm>
#include <optional>
#include <stdexcept>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "peft/text/byte_level.h"

namespace peft {
namespace {

using nlohmann::ordered_json;

// llama.cpp's token types.
constexpr int64_t kUnknown = 2, kControl = 3, kUserDefined = 4;
// U+2581, SentencePiece's spelling of a space.
const char* kSpace = "\u2581";

// The split patterns of the byte-level vocabularies llama.cpp names in tokenizer.ggml.pre (the same
// patterns as the models' own tokenizer.json files).
const char* kLlama3Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* kQwen2Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

ordered_json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", use_regex}};
}

ordered_json split_then_bytes(const char* pattern) {
  return {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}},
            byte_level(false)}}};
}

[[noreturn]] void fail(const GgufFile& f, const std::string& what) {
  throw std::runtime_error("gguf: " + f.path() + ": " + what);
}

// The pre-tokenizer for tokenizer.ggml.pre, and whether whole words found in the vocabulary skip the merges.
ordered_json pre_tokenizer(const GgufFile& f, const std::string& pre, bool& ignore_merges) {
  ignore_merges = false;
  if (pre == "default" || pre == "gpt2") return byte_level(true);
  if (pre == "smollm")  // every digit alone, then GPT-2's split
    return {{"type", "Sequence"},
            {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byte_level(true)}}};
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") {
    ignore_merges = true;
    return split_then_bytes(kLlama3Split);
  }
  if (pre == "qwen2") return split_then_bytes(kQwen2Split);
  fail(f, "metadata key \"tokenizer.ggml.pre\" is \"" + pre + "\", a pre-tokenizer peft.cpp does not know (known: " +
              gguf_supported_pre_tokenizers() + "); give the model's tokenizer.json in a directory instead");
}

ordered_json added_token(int64_t id, const std::string& content, bool special) {
  return {{"id", id},           {"content", content}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false},    {"normalized", false}, {"special", special}};
}

// llama.cpp's SentencePiece tokenizer merges, again and again, the adjacent pair whose concatenation is the
// token of highest score. As BPE merges: every split of every token into two tokens, ranked by the score of
// the whole (then the longer left part, the longer right part), in the order transformers' GGUF loader gives.
ordered_json scored_merges(const std::vector<std::string>& tokens, const std::vector<double>& scores) {
  std::unordered_map<std::string, size_t> id;
  for (size_t i = 0; i < tokens.size(); ++i) id[tokens[i]] = i;
  auto chars = [](const std::string& s, size_t from, size_t to) {
    return std::count_if(s.begin() + from, s.begin() + to, [](char c) { return (c & 0xC0) != 0x80; });
  };
  struct Merge {
    double score;
    std::ptrdiff_t left_chars, right_chars;
    size_t left, right;
  };
  std::vector<Merge> merges;
  for (size_t t = 0; t < tokens.size(); ++t) {
    const std::string& s = tokens[t];
    if (id.at(s) != t) continue;  // a repeated token counts once, at its last id
    const size_t first = merges.size();
    for (size_t k = 1; k < s.size(); ++k) {
      if ((s[k] & 0xC0) == 0x80) continue;  // inside a character
      auto l = id.find(s.substr(0, k)), r = id.find(s.substr(k));
      if (l != id.end() && r != id.end())
        merges.push_back({scores[t], chars(s, 0, k), chars(s, k, s.size()), l->second, r->second});
    }
    std::sort(merges.begin() + first, merges.end(),
              [](const Merge& a, const Merge& b) { return std::pair(a.left, a.right) < std::pair(b.left, b.right); });
  }
  std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) {
    return std::tuple(a.score, a.left_chars, a.right_chars) > std::tuple(b.score, b.left_chars, b.right_chars);
  });
  ordered_json out = ordered_json::array();
  for (const Merge& m : merges) out.push_back({tokens[m.left], tokens[m.right]});
  return out;
}

}  // namespace

std::string gguf_supported_pre_tokenizers() { return "gpt2, default, smollm, llama-bpe, llama3, llama-v3, qwen2"; }

GgufTokenizerFiles gguf_tokenizer_files(const GgufFile& f) {
  const std::string model = f.get_string("tokenizer.ggml.model");
  const bool spm = model == "llama";  // SentencePiece BPE: Llama 2, Mistral 7B v0.1, TinyLlama...
  if (model != "gpt2" && !spm)
    fail(f, "metadata key \"tokenizer.ggml.model\" is \"" + model +
                "\": peft.cpp reads byte-level BPE (\"gpt2\") and SentencePiece BPE (\"llama\") vocabularies from GGUF; "
                "give the model's tokenizer.json in a directory instead");
  const std::vector<std::string> tokens = f.get_string_array("tokenizer.ggml.tokens");
  std::vector<int64_t> types = f.has("tokenizer.ggml.token_type") ? f.get_int_array("tokenizer.ggml.token_type")
                                                                  : std::vector<int64_t>(tokens.size(), 1);
  if (types.size() != tokens.size())
    fail(f, "metadata key \"tokenizer.ggml.token_type\" has " + std::to_string(types.size()) + " entries for " +
                std::to_string(tokens.size()) + " tokens");

  struct Special {
    uint64_t id;
    std::string text;
  };
  // A SentencePiece vocabulary without the key has llama.cpp's defaults: <unk> 0, <s> 1, </s> 2.
  auto token_of = [&](const char* key, std::optional<uint64_t> spm_default) -> std::optional<Special> {
    auto id = f.find_uint(std::string("tokenizer.ggml.") + key);
    if (!id && spm && spm_default && *spm_default < tokens.size()) id = spm_default;
    if (!id) return std::nullopt;
    if (*id >= tokens.size())
      fail(f, "metadata key \"tokenizer.ggml." + std::string(key) + "\" is " + std::to_string(*id) + ", but there are " +
                  std::to_string(tokens.size()) + " tokens");
    return Special{*id, tokens[*id]};
  };
  const auto bos = token_of("bos_token_id", 1), eos = token_of("eos_token_id", 2);
  const auto unk = token_of("unknown_token_id", 0), pad = token_of("padding_token_id", std::nullopt);
  // llama.cpp (and transformers) add BOS to a SentencePiece vocabulary that does not say otherwise.
  const bool add_bos = f.find_bool("tokenizer.ggml.add_bos_token").value_or(spm);
  const bool add_eos = f.find_bool("tokenizer.ggml.add_eos_token").value_or(false);
  if (add_bos && !bos) fail(f, "tokenizer.ggml.add_bos_token is true but tokenizer.ggml.bos_token_id is missing");
  if (add_eos && !eos) fail(f, "tokenizer.ggml.add_eos_token is true but tokenizer.ggml.eos_token_id is missing");

  ordered_json vocab = ordered_json::object(), merges, added = ordered_json::array();
  ordered_json normalizer = nullptr, pre_tok = nullptr, decoder, post = nullptr;
  bool ignore_merges = false;
  if (spm) {
    // Pieces as stored (U+2581 for a space), merges from the scores, <0xNN> byte tokens for characters
    // outside the vocabulary; a space before the text and after every added token, as llama.cpp prefixes
    // one unless tokenizer.ggml.add_space_prefix is false.
    const std::vector<double> scores = f.get_float_array("tokenizer.ggml.scores");
    if (scores.size() != tokens.size())
      fail(f, "metadata key \"tokenizer.ggml.scores\" has " + std::to_string(scores.size()) + " entries for " +
                  std::to_string(tokens.size()) + " tokens");
    for (size_t i = 0; i < tokens.size(); ++i) vocab[tokens[i]] = i;
    merges = scored_merges(tokens, scores);
    // llama.cpp matches <unk> in the text like the control tokens.
    for (size_t i = 0; i < tokens.size(); ++i)
      if (types[i] == kControl || types[i] == kUnknown || types[i] == kUserDefined)
        added.push_back(added_token(i, tokens[i], types[i] != kUserDefined));
    const bool prefix = f.find_bool("tokenizer.ggml.add_space_prefix").value_or(true);
    ordered_json spaces = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}};
    normalizer = prefix ? ordered_json{{"type", "Sequence"},
                                       {"normalizers", {{{"type", "Prepend"}, {"prepend", kSpace}}, spaces}}}
                        : spaces;
    ordered_json steps = {{{"type", "Replace"}, {"pattern", {{"String", kSpace}}}, {"content", " "}},
                          {{"type", "ByteFallback"}},
                          {{"type", "Fuse"}}};
    if (prefix) steps.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
    decoder = {{"type", "Sequence"}, {"decoders", std::move(steps)}};
  } else {
    std::vector<std::string> spelled(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) {
      spelled[i] = is_byte_level_spelled(tokens[i]) ? tokens[i] : byte_level_spelling(tokens[i]);
      vocab[spelled[i]] = i;
    }
    const std::vector<std::string> pairs = f.get_string_array("tokenizer.ggml.merges");
    merges = ordered_json::array();
    for (size_t i = 0; i < pairs.size(); ++i) {
      const size_t sp = pairs[i].find(' ');
      if (sp == std::string::npos || pairs[i].find(' ', sp + 1) != std::string::npos)
        fail(f, "metadata key \"tokenizer.ggml.merges\", entry " + std::to_string(i) + ": \"" + pairs[i] +
                    "\" is not two tokens separated by one space");
      merges.push_back({pairs[i].substr(0, sp), pairs[i].substr(sp + 1)});
    }
    // Control tokens written outside the byte alphabet are llama.cpp mislabels of ordinary tokens.
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (types[i] == kControl && is_byte_level_spelled(tokens[i])) added.push_back(added_token(i, tokens[i], true));
      if (types[i] == kUserDefined) added.push_back(added_token(i, spelled[i], false));
    }
    pre_tok = pre_tokenizer(f, f.find_string("tokenizer.ggml.pre").value_or("default"), ignore_merges);
    post = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
    decoder = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  }

  // BOS/EOS around each sequence when the file asks for them, as llama.cpp adds them.
  if (add_bos || add_eos) {
    ordered_json single = ordered_json::array(), pair = ordered_json::array(), specials = ordered_json::object();
    auto frame = [&](ordered_json& out, const char* sequence) {
      if (add_bos) out.push_back({{"SpecialToken", {{"id", bos->text}, {"type_id", 0}}}});
      out.push_back({{"Sequence", {{"id", sequence}, {"type_id", 0}}}});
      if (add_eos) out.push_back({{"SpecialToken", {{"id", eos->text}, {"type_id", 0}}}});
    };
    frame(single, "A");
    frame(pair, "A");
    frame(pair, "B");
    for (const auto& [on, tok] : {std::pair{add_bos, bos}, std::pair{add_eos, eos}})
      if (on) specials[tok->text] = {{"id", tok->text}, {"ids", {tok->id}}, {"tokens", {tok->text}}};
    post = {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}};
  }

  GgufTokenizerFiles files;
  ordered_json& t = files.tokenizer;
  t["version"] = "1.0";
  t["truncation"] = nullptr;
  t["padding"] = nullptr;
  t["added_tokens"] = std::move(added);
  t["normalizer"] = std::move(normalizer);
  t["pre_tokenizer"] = std::move(pre_tok);
  t["post_processor"] = std::move(post);
  t["decoder"] = std::move(decoder);
  t["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", spm && unk ? ordered_json(unk->text) : ordered_json(nullptr)},
                {"continuing_subword_prefix", ""},
                {"end_of_word_suffix", ""},
                {"fuse_unk", spm},
                {"byte_fallback", spm},
                {"ignore_merges", ignore_merges},
                {"vocab", std::move(vocab)},
                {"merges", std::move(merges)}};

  ordered_json& c = files.tokenizer_config;
  c["tokenizer_class"] = "PreTrainedTokenizerFast";  // tokenizer.json as written (GPT2Tokenizer, LlamaTokenizer would rebuild theirs)
  c["add_bos_token"] = add_bos;
  c["add_eos_token"] = add_eos;
  auto text_of = [](const std::optional<Special>& s) { return s ? ordered_json(s->text) : ordered_json(nullptr); };
  c["bos_token"] = text_of(bos);
  c["eos_token"] = text_of(eos);
  c["unk_token"] = text_of(unk);
  c["pad_token"] = text_of(pad);
  c["clean_up_tokenization_spaces"] = false;
  if (auto tpl = f.find_string("tokenizer.chat_template")) c["chat_template"] = *tpl;
  return files;
}

}  // namespace peft
