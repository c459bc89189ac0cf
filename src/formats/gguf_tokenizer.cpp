// tokenizer.json and tokenizer_config.json built from a GGUF file's tokenizer.ggml.* metadata: the
// vocabulary respelled in the byte-level alphabet, merges, added tokens, and the pre-tokenizer llama.cpp applies.
#include "peft/formats/gguf_tokenizer.h"

#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

#include "peft/text/byte_level.h"

namespace peft {
namespace {

using nlohmann::ordered_json;

// llama.cpp's token types.
constexpr int64_t kControl = 3, kUserDefined = 4;

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

}  // namespace

std::string gguf_supported_pre_tokenizers() { return "gpt2, default, smollm, llama-bpe, llama3, llama-v3, qwen2"; }

GgufTokenizerFiles gguf_tokenizer_files(const GgufFile& f) {
  const std::string model = f.get_string("tokenizer.ggml.model");
  if (model != "gpt2")
    fail(f, "metadata key \"tokenizer.ggml.model\" is \"" + model +
                "\": only byte-level BPE (\"gpt2\") vocabularies are read from GGUF; give the model's tokenizer.json in a "
                "directory instead");
  const std::vector<std::string> tokens = f.get_string_array("tokenizer.ggml.tokens");
  const std::vector<std::string> merges = f.get_string_array("tokenizer.ggml.merges");
  std::vector<int64_t> types = f.has("tokenizer.ggml.token_type") ? f.get_int_array("tokenizer.ggml.token_type")
                                                                  : std::vector<int64_t>(tokens.size(), 1);
  if (types.size() != tokens.size())
    fail(f, "metadata key \"tokenizer.ggml.token_type\" has " + std::to_string(types.size()) + " entries for " +
                std::to_string(tokens.size()) + " tokens");

  ordered_json vocab = ordered_json::object();
  std::vector<std::string> spelled(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    spelled[i] = is_byte_level_spelled(tokens[i]) ? tokens[i] : byte_level_spelling(tokens[i]);
    vocab[spelled[i]] = i;
  }
  ordered_json merge_pairs = ordered_json::array();
  for (size_t i = 0; i < merges.size(); ++i) {
    const size_t sp = merges[i].find(' ');
    if (sp == std::string::npos || merges[i].find(' ', sp + 1) != std::string::npos)
      fail(f, "metadata key \"tokenizer.ggml.merges\", entry " + std::to_string(i) + ": \"" + merges[i] +
                  "\" is not two tokens separated by one space");
    merge_pairs.push_back({merges[i].substr(0, sp), merges[i].substr(sp + 1)});
  }
  // Control tokens written outside the byte alphabet are llama.cpp mislabels of ordinary tokens.
  ordered_json added = ordered_json::array();
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (types[i] == kControl && is_byte_level_spelled(tokens[i])) added.push_back(added_token(i, tokens[i], true));
    if (types[i] == kUserDefined) added.push_back(added_token(i, spelled[i], false));
  }

  const std::string pre = f.find_string("tokenizer.ggml.pre").value_or("default");
  bool ignore_merges = false;
  ordered_json pre_tok = pre_tokenizer(f, pre, ignore_merges);

  struct Special {
    uint64_t id;
    std::string text;
  };
  auto token_of = [&](const char* key) -> std::optional<Special> {
    auto id = f.find_uint(std::string("tokenizer.ggml.") + key);
    if (!id) return std::nullopt;
    if (*id >= tokens.size())
      fail(f, "metadata key \"tokenizer.ggml." + std::string(key) + "\" is " + std::to_string(*id) + ", but there are " +
                  std::to_string(tokens.size()) + " tokens");
    return Special{*id, tokens[*id]};
  };
  const auto bos = token_of("bos_token_id"), eos = token_of("eos_token_id");
  const auto unk = token_of("unknown_token_id"), pad = token_of("padding_token_id");
  const bool add_bos = f.find_bool("tokenizer.ggml.add_bos_token").value_or(false);
  const bool add_eos = f.find_bool("tokenizer.ggml.add_eos_token").value_or(false);
  if (add_bos && !bos) fail(f, "tokenizer.ggml.add_bos_token is true but tokenizer.ggml.bos_token_id is missing");
  if (add_eos && !eos) fail(f, "tokenizer.ggml.add_eos_token is true but tokenizer.ggml.eos_token_id is missing");

  // BOS/EOS around each sequence when the file asks for them, as llama.cpp adds them.
  ordered_json post = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
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
  t["normalizer"] = nullptr;
  t["pre_tokenizer"] = std::move(pre_tok);
  t["post_processor"] = std::move(post);
  t["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  t["model"] = {{"type", "BPE"},       {"dropout", nullptr},           {"unk_token", nullptr},
                {"continuing_subword_prefix", ""}, {"end_of_word_suffix", ""}, {"fuse_unk", false},
                {"byte_fallback", false},          {"ignore_merges", ignore_merges}, {"vocab", std::move(vocab)},
                {"merges", std::move(merge_pairs)}};

  ordered_json& c = files.tokenizer_config;
  c["tokenizer_class"] = "PreTrainedTokenizerFast";  // tokenizer.json as written (GPT2Tokenizer would rebuild its own split)
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
