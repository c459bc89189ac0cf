// Tokenizer tests: every reference encoding made with Rust tokenizers (ids, ids with special
// tokens, decoded text) must match exactly; plus component checks and error messages.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "peft/text/tokenizer.h"

using nlohmann::json;

namespace {

const std::string kFixtures = PEFT_TEST_DATA "/tokenizers";
const std::string kCache = PEFT_TEST_DATA "/../../.cache/tokenizers";

bool exists(const std::string& path) { return std::ifstream(path).good(); }

std::string tokenizer_path(const std::string& name) {
  std::string local = kFixtures + "/" + name + "/tokenizer.json";
  return exists(local) ? local : kCache + "/" + name + "/tokenizer.json";
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  return json::parse(in);
}

std::string show(const std::vector<int32_t>& ids) { return json(ids).dump(); }

class ReferenceEncodings : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceEncodings, MatchRustTokenizers) {
  const std::string name = GetParam();
  const std::string path = tokenizer_path(name);
  ASSERT_TRUE(exists(path)) << path << " is missing: run scripts/fetch-test-data.sh (make test does) to download it";
  peft::Tokenizer tok = peft::Tokenizer::from_file(path);
  json ref = read_json(kFixtures + "/" + name + ".encodings.json");
  const json& cases = ref["cases"];
  ASSERT_FALSE(cases.empty());

  size_t ids_ok = 0, special_ok = 0, decoded_ok = 0, reported = 0;
  for (const json& c : cases) {
    const std::string text = c["text"].get<std::string>();
    auto ids = tok.encode(text, false);
    auto with_special = tok.encode(text, true);
    auto expected = c["ids"].get<std::vector<int32_t>>();
    auto decoded = tok.decode(expected, false);
    bool a = ids == expected, b = with_special == c["ids_with_special"].get<std::vector<int32_t>>(),
         d = decoded == c["decoded"].get<std::string>();
    ids_ok += a;
    special_ok += b;
    decoded_ok += d;
    if ((!a || !b || !d) && reported++ < 5) {
      ADD_FAILURE() << name << ": mismatch for text " << json(text).dump() << "\n  ids      " << show(ids)
                    << "\n  expected " << c["ids"].dump() << "\n  with special " << show(with_special)
                    << "\n  expected     " << c["ids_with_special"].dump() << "\n  decoded  " << json(decoded).dump()
                    << "\n  expected " << c["decoded"].dump();
    }
  }
  std::cout << "[ tokenizer ] " << name << ": ids " << ids_ok << "/" << cases.size() << ", with special "
            << special_ok << "/" << cases.size() << ", decoded " << decoded_ok << "/" << cases.size() << "\n";
  EXPECT_EQ(ids_ok, cases.size());
  EXPECT_EQ(special_ok, cases.size());
  EXPECT_EQ(decoded_ok, cases.size());
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, ReferenceEncodings, ::testing::Values("llama3", "qwen3", "llama2", "bert_wp"),
                         [](const auto& info) { return info.param; });

TEST(Tokenizer, VocabularyAndSpecialTokens) {
  const std::string path = tokenizer_path("bert_wp");
  peft::Tokenizer tok = peft::Tokenizer::from_file(path);
  EXPECT_EQ(tok.vocab_size(), 3000);
  EXPECT_EQ(tok.token_to_id("[CLS]"), 2);
  EXPECT_EQ(tok.id_to_token(3), "[SEP]");
  EXPECT_FALSE(tok.token_to_id("no such token").has_value());
  EXPECT_FALSE(tok.id_to_token(-1).has_value());
  auto specials = tok.special_tokens();
  EXPECT_EQ(specials, (std::vector<std::string>{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}));
  // skip_special_tokens drops [CLS]/[SEP].
  auto ids = tok.encode("hello", true);
  EXPECT_EQ(tok.decode(ids, true).find("[CLS]"), std::string::npos);
}

// A tokenizer.json around a WordLevel vocabulary, with the given pipeline stages.
std::string word_level(const json& stages, const json& vocab) {
  json j = stages;
  j["version"] = "1.0";
  j["model"] = {{"type", "WordLevel"}, {"vocab", vocab}, {"unk_token", "<unk>"}};
  return j.dump();
}

std::vector<std::string> tokens_of(const peft::Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::vector<std::string> out;
  for (int32_t id : ids) out.push_back(tok.id_to_token(id).value_or("?"));
  return out;
}

TEST(Tokenizer, SplitBehaviors) {
  json vocab = {{"<unk>", 0}, {"the", 1}, {"-", 2}, {"final", 3}, {"countdown", 4}, {"the-", 5}, {"final-", 6},
                {"-final", 7}, {"-countdown", 8}, {"--", 9}};
  auto run = [&](const char* behavior) {
    json stages = {{"pre_tokenizer",
                    {{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", behavior}, {"invert", false}}}};
    auto tok = peft::Tokenizer::from_json_string(word_level(stages, vocab));
    return tokens_of(tok, tok.encode("the-final--countdown"));
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(run("Removed"), (V{"the", "final", "countdown"}));
  EXPECT_EQ(run("Isolated"), (V{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(run("MergedWithPrevious"), (V{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(run("MergedWithNext"), (V{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(run("Contiguous"), (V{"the", "-", "final", "--", "countdown"}));
}

TEST(Tokenizer, MetaspaceAndUnigram) {
  json j = {{"version", "1.0"},
            {"pre_tokenizer", {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "first"}, {"split", true}}},
            {"decoder", {{"type", "Metaspace"}, {"replacement", "\u2581"}, {"prepend_scheme", "first"}, {"split", true}}},
            {"added_tokens", json::array({{{"id", 5}, {"content", "<s>"}, {"special", true}, {"normalized", false}}})},
            {"model",
             {{"type", "Unigram"},
              {"unk_id", 0},
              {"vocab", json::array({json::array({"<unk>", 0.0}), json::array({"\u2581hello", -1.0}),
                                     json::array({"\u2581", -2.0}), json::array({"hello", -1.5}),
                                     json::array({"\u2581world", -1.0}), json::array({"<s>", 0.0})})}}}};
  auto tok = peft::Tokenizer::from_json_string(j.dump());
  // "first": only the piece at the start of the input gets the prefix.
  EXPECT_EQ(tok.encode("hello world"), (std::vector<int32_t>{1, 4}));
  EXPECT_EQ(tok.encode("<s>hello"), (std::vector<int32_t>{5, 3}));
  EXPECT_EQ(tok.encode("hello!"), (std::vector<int32_t>{1, 0}));
  EXPECT_EQ(tok.decode({1, 4}), "hello world");
}

TEST(Tokenizer, WhitespaceDigitsAndLowercase) {
  json stages = {{"normalizer", {{"type", "Lowercase"}}},
                 {"pre_tokenizer",
                  {{"type", "Sequence"},
                   {"pretokenizers", json::array({{{"type", "Whitespace"}}, {{"type", "Digits"}, {"individual_digits", true}}})}}}};
  json vocab = {{"<unk>", 0}, {"hello", 1}, {"1", 2}, {"2", 3}, {"!?", 4}, {"x", 5}};
  auto tok = peft::Tokenizer::from_json_string(word_level(stages, vocab));
  EXPECT_EQ(tok.encode("HeLLo  12!?x"), (std::vector<int32_t>{1, 2, 3, 4, 5}));
}

TEST(Tokenizer, EmptyInputGivesOnlySpecialTokens) {
  auto tok = peft::Tokenizer::from_file(tokenizer_path("bert_wp"));
  EXPECT_TRUE(tok.encode("").empty());
}

TEST(Tokenizer, UnsupportedComponentIsNamed) {
  json j = {{"model", {{"type", "BPE"}, {"vocab", json::object()}, {"merges", json::array()}}},
            {"pre_tokenizer", {{"type", "Foo"}}}};
  try {
    peft::Tokenizer::from_json_string(j.dump(), "my/tokenizer.json");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("my/tokenizer.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find("pre_tokenizer type 'Foo' is not supported; supported: "), std::string::npos) << msg;
  }
  json nested = {{"model", {{"type", "BPE"}, {"vocab", json::object()}, {"merges", json::array()}}},
                 {"normalizer", {{"type", "Sequence"}, {"normalizers", json::array({{{"type", "Unheard"}}})}}}};
  try {
    peft::Tokenizer::from_json_string(nested.dump(), "t.json");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("normalizer type 'Unheard' is not supported"), std::string::npos) << msg;
    EXPECT_NE(msg.find("normalizer.normalizers[0]"), std::string::npos) << msg;
  }
  json model = {{"model", {{"type", "Magic"}}}};
  EXPECT_THROW(peft::Tokenizer::from_json_string(model.dump(), "t.json"), std::runtime_error);
}

TEST(Tokenizer, MalformedFilesAreReported) {
  auto message = [](const std::string& text) {
    try {
      peft::Tokenizer::from_json_string(text, "bad.json");
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  std::string truncated = message("{\"model\": {\"type\": \"BPE\"");
  EXPECT_NE(truncated.find("bad.json"), std::string::npos) << truncated;
  EXPECT_NE(truncated.find("malformed JSON"), std::string::npos) << truncated;
  std::string no_model = message("{\"normalizer\": null}");
  EXPECT_NE(no_model.find("missing field 'model'"), std::string::npos) << no_model;
  std::string bad_merge =
      message(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}})");
  EXPECT_NE(bad_merge.find("model.merges[0]"), std::string::npos) << bad_merge;
  std::string bad_vocab = message(R"({"model": {"type": "BPE", "vocab": [1, 2], "merges": []}})");
  EXPECT_NE(bad_vocab.find("model.vocab"), std::string::npos) << bad_vocab;
  std::string bad_regex = message(
      R"({"model": {"type": "WordLevel", "vocab": {}, "unk_token": "x"}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "("}, "behavior": "Isolated", "invert": false}})");
  EXPECT_NE(bad_regex.find("pre_tokenizer.pattern"), std::string::npos) << bad_regex;
  EXPECT_THROW(peft::Tokenizer::from_file("/nonexistent/tokenizer.json"), std::runtime_error);
}

TEST(Tokenizer, OutOfRangeNumbersAndPaddingAreReported) {
  auto message = [](const std::string& text) {
    try {
      peft::Tokenizer::from_json_string(text, "bad.json");
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string model = R"("model": {"type": "WordLevel", "vocab": {"a": 0, "b": 1}, "unk_token": "a"})";
  // A number beyond double's range is an out_of_range error of the JSON library, not a parse_error.
  std::string huge = message("{" + model + R"(, "x": 1e400})");
  EXPECT_NE(huge.find("bad.json: malformed JSON"), std::string::npos) << huge;
  for (const char* pad_id : {"1e300", "2.5", "-1", "4294967296"}) {
    std::string bad_pad = message("{" + model + R"(, "padding": {"strategy": "BatchLongest", "pad_id": )" + pad_id + "}}");
    EXPECT_NE(bad_pad.find("padding.pad_id: expected a token id"), std::string::npos) << pad_id << ": " << bad_pad;
  }
  std::string fixed = message("{" + model + R"(, "padding": {"strategy": {"Fixed": 18446744073709551615}}})");
  EXPECT_NE(fixed.find("padding.strategy.Fixed: padding to 18446744073709551615 tokens"), std::string::npos) << fixed;
  std::string multiple = message("{" + model + R"(, "padding": {"strategy": "BatchLongest", "pad_to_multiple_of": 9007199254740993}})");
  EXPECT_NE(multiple.find("padding.pad_to_multiple_of"), std::string::npos) << multiple;
  // In range, the padding still applies.
  auto tok = peft::Tokenizer::from_json_string(
      "{" + model + R"(, "pre_tokenizer": {"type": "Whitespace"}, "padding": {"strategy": {"Fixed": 4}, "pad_id": 1}})");
  EXPECT_EQ(tok.encode("a a"), (std::vector<int32_t>{0, 0, 1, 1}));
}

TEST(Tokenizer, LongTextsEncodeInLinearTime) {
  // BertPreTokenizer splits every word again at its punctuation, into more pieces than the words:
  // 40000 words of 6 pieces took minutes when each split copied all pieces so far.
  auto tok = peft::Tokenizer::from_file(tokenizer_path("bert_wp"));
  std::string text;
  for (int i = 0; i < 40000; ++i) text += "a.a.a. ";
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = tok.encode(text);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(ids.size(), 240000u);
  EXPECT_LT(seconds, 20.0) << "encoding " << text.size() << " bytes";
}

TEST(Tokenizer, InvalidUtf8InputThrows) {
  auto tok = peft::Tokenizer::from_file(tokenizer_path("bert_wp"));
  EXPECT_THROW(tok.encode(std::string("abc\xff")), std::runtime_error);
}

}  // namespace
