// Tests for datasets and batching with a byte-level encoder (one id per byte), so every masked span
// can be computed independently from byte lengths and positions in the expected text.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "peft/data/data_loader.h"
#include "peft/data/dataset.h"

using namespace peft;

namespace {

constexpr int32_t kBos = 256, kEos = 257, kPad = 258;

TextEncoder byte_encoder() {
  TextEncoder e;
  e.encode = [](const std::string& s) {
    std::vector<int32_t> ids;
    for (unsigned char c : s) ids.push_back(c);
    return ids;
  };
  e.bos = kBos;
  e.eos = kEos;
  e.pad = kPad;
  return e;
}

std::vector<int32_t> bytes_u(const std::string& s) {
  std::vector<int32_t> v;
  for (unsigned char c : s) v.push_back(c);
  return v;
}

Dataset load(const std::string& jsonl, const DatasetOptions& options = {}) {
  return Dataset::from_jsonl_string(jsonl, "data.jsonl", byte_encoder(), options);
}

std::string error_of(const std::string& jsonl, const DatasetOptions& options = {}) {
  try {
    load(jsonl, options);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no error)";
}

std::string lines_of_text(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += "{\"text\": \"example " + std::to_string(i) + "\"}\n";
  return s;
}

// Identifies an example by its text bytes (between bos and eos).
std::string text_of(const Example& ex) {
  std::string s;
  for (int32_t id : ex.input_ids)
    if (id < 256) s += static_cast<char>(id);
  return s;
}

}  // namespace

TEST(Dataset, TextRecordsLearnEveryToken) {
  const Dataset d = load("{\"text\": \"hello\"}\n\n{\"text\": \"\\u4f60\"}\n");
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d.format(), DataFormat::Text);
  std::vector<int32_t> expected = {kBos, 'h', 'e', 'l', 'l', 'o', kEos};
  EXPECT_EQ(d[0].input_ids, expected);
  EXPECT_EQ(d[0].labels, expected);
  EXPECT_EQ(d[1].input_ids, (std::vector<int32_t>{kBos, 0xE4, 0xBD, 0xA0, kEos}));
  EXPECT_EQ(d.pad_id(), kPad);
}

TEST(Dataset, PromptTokensAreMaskedAndCompletionTokensAreNot) {
  const std::string prompt = "Q: \xE4\xBD\xA0\xE5\xA5\xBD? A:";  // 12 bytes, 8 characters
  const std::string completion = " hi";
  nlohmann::json line = {{"prompt", prompt}, {"completion", completion}, {"id", 7}};
  const Dataset d = load(line.dump() + "\n");
  ASSERT_EQ(d.size(), 1u);
  const Example& ex = d[0];
  ASSERT_EQ(ex.input_ids.size(), 1 + prompt.size() + completion.size() + 1);
  const size_t masked = 1 + prompt.size();  // bos and the prompt's bytes
  for (size_t i = 0; i < ex.labels.size(); ++i) {
    if (i < masked)
      EXPECT_EQ(ex.labels[i], kIgnoreIndex) << i;
    else
      EXPECT_EQ(ex.labels[i], ex.input_ids[i]) << i;
  }
  EXPECT_EQ(std::vector<int32_t>(ex.labels.begin() + masked, ex.labels.end()),
            (std::vector<int32_t>{' ', 'h', 'i', kEos}));
}

TEST(Dataset, ChatMessagesLearnOnlyAssistantTurns) {
  std::ifstream in(std::string(PEFT_TEST_DATA) + "/tokenizers/chat_templates.json");
  const auto fixture = nlohmann::json::parse(in);
  for (const auto& [family, cases] : fixture.items()) {
    std::string jsonl;
    std::vector<nlohmann::json> with_assistant;
    for (const auto& c : cases) {
      if (c["gen"].get<bool>()) continue;
      jsonl += nlohmann::json{{"messages", c["messages"]}}.dump() + "\n";
      bool any = false;
      for (const auto& m : c["messages"]) any = any || m["role"] == "assistant";
      if (any) with_assistant.push_back(c);
    }
    DatasetOptions opt;
    opt.chat_format = ChatFormat::by_name(family);
    const Dataset d = load(jsonl, opt);
    EXPECT_EQ(d.format(), DataFormat::Messages);
    // Conversations without an assistant turn have nothing to learn and are dropped.
    EXPECT_EQ(d.stats().dropped_examples, 3 - static_cast<int64_t>(with_assistant.size())) << family;
    ASSERT_EQ(d.size(), with_assistant.size()) << family;
    for (size_t k = 0; k < d.size(); ++k) {
      const std::string text = with_assistant[k]["text"];
      EXPECT_EQ(d[k].input_ids, bytes_u(text)) << family;  // no bos/eos added around a chat
      // Learned bytes: each assistant message's content and its end-of-turn marker, found in order
      // in the reference rendering.
      const std::string end = family == "llama3" ? "<|eot_id|>" : family == "qwen3" ? "<|im_end|>" : "<end_of_turn>";
      std::vector<int32_t> expected(text.size(), kIgnoreIndex);
      size_t cursor = 0;
      for (const auto& m : with_assistant[k]["messages"]) {
        if (m["role"] != "assistant") continue;
        const std::string learned = m["content"].get<std::string>() + end;
        const size_t at = text.find(learned, cursor);
        ASSERT_NE(at, std::string::npos);
        for (size_t i = at; i < at + learned.size(); ++i) expected[i] = static_cast<unsigned char>(text[i]);
        cursor = at + learned.size();
      }
      EXPECT_EQ(d[k].labels, expected) << family;
    }
  }
}

TEST(Dataset, ConversationalPromptCompletionLearnsOnlyTheCompletion) {
  const nlohmann::json record = {
      {"prompt", {{{"role", "user"}, {"content", "U1"}}, {{"role", "assistant"}, {"content", "A1"}},
                  {{"role", "user"}, {"content", "U2"}}}},
      {"completion", {{{"role", "assistant"}, {"content", "A2"}}}}};
  DatasetOptions opt;
  opt.chat_format = ChatFormat::by_name("chatml");
  const Dataset d = load(record.dump(), opt);
  const std::string text =
      "<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n"
      "<|im_start|>assistant\nA2<|im_end|>\n";
  ASSERT_EQ(d[0].input_ids, bytes_u(text));
  const std::string learned = "A2<|im_end|>";
  const size_t at = text.rfind(learned);
  for (size_t i = 0; i < text.size(); ++i)
    EXPECT_EQ(d[0].labels[i], i >= at && i < at + learned.size() ? d[0].input_ids[i] : kIgnoreIndex) << i;
  // Without a chat format, conversational records cannot be read.
  EXPECT_NE(error_of(record.dump()).find("data.jsonl:1: conversational records need a chat format"), std::string::npos);
  nlohmann::json mixed = record;
  mixed["completion"] = "A2";
  EXPECT_EQ(error_of(mixed.dump(), opt), "data.jsonl:1: expected a non-empty list of {\"role\", \"content\"} objects in \"completion\"");
}

TEST(Dataset, WholeSequenceLossOptions) {
  DatasetOptions opt;
  opt.completion_only_loss = false;
  const Dataset pc = load("{\"prompt\": \"ab\", \"completion\": \"c\"}", opt);
  EXPECT_EQ(pc[0].labels, pc[0].input_ids);
  opt.assistant_only_loss = false;
  opt.chat_format = ChatFormat::by_name("qwen3");
  const Dataset chat = load(R"({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]})", opt);
  EXPECT_EQ(chat[0].labels, chat[0].input_ids);
}

TEST(Dataset, ClassificationRecordsCarryTheirLabel) {
  const Dataset d = load("{\"text\": \"ab\", \"label\": 2}\n{\"text\": \"c\", \"label\": 0}\n");
  EXPECT_EQ(d.format(), DataFormat::Classification);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].input_ids, (std::vector<int32_t>{kBos, 'a', 'b', kEos}));
  EXPECT_TRUE(d[0].labels.empty());
  EXPECT_EQ(d[0].class_label, 2);
  EXPECT_EQ(d.num_classes(), 3);
  const TokenBatch b = collate({&d[0], &d[1]}, d.pad_id());
  EXPECT_EQ(b.class_labels, (std::vector<int64_t>{2, 0}));
  EXPECT_TRUE(b.labels.empty());
}

TEST(Dataset, OutOfRangeNumbersAndLabelsAreLineErrors) {
  // A number beyond double's range is an out_of_range error of the JSON library, not a parse_error.
  EXPECT_EQ(error_of("{\"text\": \"a\"}\n{\"text\": \"a\", \"x\": 1e400}\n").rfind("data.jsonl:2: malformed JSON", 0), 0u);
  // Labels that do not fit an int64 class index (the class count is label + 1).
  EXPECT_EQ(error_of("{\"text\": \"a\", \"label\": 18446744073709551615}\n"),
            "data.jsonl:1: \"label\" 18446744073709551615 is too large for a class index");
  EXPECT_EQ(error_of("{\"text\": \"a\", \"label\": 9223372036854775807}\n"),
            "data.jsonl:1: \"label\" 9223372036854775807 is too large for a class index");
  const Dataset d = load("{\"text\": \"a\", \"label\": 9223372036854775806}\n");
  EXPECT_EQ(d.num_classes(), std::numeric_limits<int64_t>::max());
  DatasetOptions skip;
  skip.skip_bad_lines = true;
  EXPECT_EQ(load("{\"text\": \"a\", \"label\": 1}\n{\"text\": \"b\", \"label\": 1e400}\n", skip).stats().skipped_lines, 1);
}

TEST(Dataset, BosAndEosFollowTheEncoderAndOptions) {
  TextEncoder e = byte_encoder();
  e.bos.reset();
  EXPECT_EQ(Dataset::from_jsonl_string("{\"text\": \"x\"}", "d", e)[0].input_ids, (std::vector<int32_t>{'x', kEos}));
  DatasetOptions opt;
  opt.add_eos = false;
  EXPECT_EQ(load("{\"text\": \"x\"}", opt)[0].input_ids, (std::vector<int32_t>{kBos, 'x'}));
}

TEST(Dataset, ErrorsNameFileLineAndWhatWasExpected) {
  std::string jsonl;
  for (int i = 1; i < 17; ++i) jsonl += "{\"prompt\": \"p\", \"completion\": \"c\"}\n";
  const std::string bad = jsonl + "{\"prompt\": \"p\", \"completion\": 5}\n";
  EXPECT_EQ(error_of(bad), "data.jsonl:17: expected a string in \"completion\"");
  EXPECT_EQ(error_of(jsonl + "{\"prompt\": \"p\"}\n"), "data.jsonl:17: missing field \"completion\"");
  EXPECT_EQ(error_of("{\"text\": \"a\"}\n{\"text\": \"a\"\n").rfind("data.jsonl:2: malformed JSON", 0), 0u);
  EXPECT_EQ(error_of("[1, 2]\n"), "data.jsonl:1: expected a JSON object");
  EXPECT_EQ(error_of("{\"body\": \"x\"}\n"),
            "data.jsonl:1: expected a \"text\", \"prompt\"/\"completion\" or \"messages\" field");
  EXPECT_EQ(error_of("{\"text\": \"a\", \"label\": \"pos\"}\n"),
            "data.jsonl:1: expected a non-negative integer in \"label\"");
  EXPECT_EQ(error_of("{\"text\": \"a\"}\n{\"prompt\": \"p\", \"completion\": \"c\"}\n"),
            "data.jsonl:2: expected a {\"text\"} record like line 1, found a {\"prompt\", \"completion\"} record");
  DatasetOptions chat;
  chat.chat_format = ChatFormat::by_name("chatml");
  EXPECT_EQ(error_of("{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\"}]}\n", chat),
            "data.jsonl:1: missing field \"messages[1].content\"");
  EXPECT_EQ(error_of("{\"messages\": []}\n", chat),
            "data.jsonl:1: expected a non-empty list of {\"role\", \"content\"} objects in \"messages\"");
  DatasetOptions gemma;
  gemma.chat_format = ChatFormat::by_name("gemma3");
  EXPECT_NE(error_of("{\"messages\": [{\"role\": \"assistant\", \"content\": \"a\"}]}\n", gemma)
                .find("data.jsonl:1: gemma3 chat format: Conversation roles must alternate"),
            std::string::npos);
  // Conversational data without a chat format is a setup error, whatever the line.
  EXPECT_NE(error_of("{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}\n").find("--chat-format"),
            std::string::npos);
}

TEST(Dataset, FileErrorsNameThePath) {
  const auto dir = std::filesystem::temp_directory_path() / "peft_dataset_test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "data.jsonl").string();
  std::ofstream(path) << "{\"text\": \"a\"}\r\n\r\n{\"text\": 3}\r\n";
  try {
    Dataset::from_jsonl(path, byte_encoder());
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), path + ":3: expected a string in \"text\"");
  }
  std::ofstream(path) << "\xEF\xBB\xBF{\"text\": \"a\"}\r\n";
  EXPECT_EQ(Dataset::from_jsonl(path, byte_encoder())[0].input_ids, (std::vector<int32_t>{kBos, 'a', kEos}));
  EXPECT_THROW(Dataset::from_jsonl((dir / "missing.jsonl").string(), byte_encoder()), std::runtime_error);
  std::filesystem::remove_all(dir);
}

TEST(Dataset, BadLinesCanBeSkippedAndCounted) {
  DatasetOptions opt;
  opt.skip_bad_lines = true;
  const Dataset d = load("{\"text\": \"a\"}\nnot json\n{\"text\": 1}\n{\"text\": \"b\"}\n", opt);
  EXPECT_EQ(d.size(), 2u);
  EXPECT_EQ(d.stats().lines, 4);
  EXPECT_EQ(d.stats().skipped_lines, 2);
  EXPECT_EQ(d.stats().first_skip_reason.rfind("data.jsonl:2: malformed JSON", 0), 0u);
}

TEST(Dataset, EmptyDatasetsAreErrors) {
  EXPECT_EQ(error_of(""), "data.jsonl: no examples (0 non-blank lines)");
  EXPECT_EQ(error_of("\n  \n"), "data.jsonl: no examples (0 non-blank lines)");
  DatasetOptions skip;
  skip.skip_bad_lines = true;
  EXPECT_EQ(error_of("oops\n", skip), "data.jsonl: no examples (1 non-blank lines, 1 skipped as bad)");
  DatasetOptions short_;
  short_.max_length = 2;  // bos and one prompt byte: nothing of the completion is left
  EXPECT_EQ(error_of("{\"prompt\": \"pp\", \"completion\": \"c\"}\n", short_),
            "data.jsonl: no examples (1 non-blank lines, 1 with no token to learn after truncation)");
}

TEST(Dataset, TruncationCutsToMaxLengthAndCounts) {
  DatasetOptions opt;
  opt.max_length = 4;
  const Dataset d = load("{\"text\": \"abcdef\"}\n{\"text\": \"ab\"}\n{\"text\": \"abc\"}\n", opt);
  EXPECT_EQ(d[0].input_ids, (std::vector<int32_t>{kBos, 'a', 'b', 'c'}));
  EXPECT_EQ(d[0].labels.size(), 4u);
  EXPECT_EQ(d[1].input_ids.size(), 4u);
  EXPECT_EQ(d.stats().truncated_examples, 2);
  EXPECT_EQ(d.stats().truncated_tokens, (8 - 4) + (5 - 4));
}

TEST(Batching, PaddingIsMaskedInLabelsAndAttention) {
  const Dataset d = load("{\"prompt\": \"ab\", \"completion\": \"c\"}\n{\"prompt\": \"a\", \"completion\": \"bcde\"}\n");
  const TokenBatch b = collate({&d[0], &d[1]}, d.pad_id());
  ASSERT_EQ(b.batch_size, 2);
  ASSERT_EQ(b.seq_len, 7);  // bos + 1 + 4 + eos
  const int64_t I = kIgnoreIndex;
  EXPECT_EQ(b.input_ids, (std::vector<int64_t>{kBos, 'a', 'b', 'c', kEos, kPad, kPad,  //
                                               kBos, 'a', 'b', 'c', 'd', 'e', kEos}));
  EXPECT_EQ(b.attention_mask, (std::vector<int64_t>{1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1}));
  EXPECT_EQ(b.labels, (std::vector<int64_t>{I, I, I, 'c', kEos, I, I,  //
                                            I, I, 'b', 'c', 'd', 'e', kEos}));
  EXPECT_EQ(b.position_ids, (std::vector<int64_t>{0, 1, 2, 3, 4, 0, 0, 0, 1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(b.target_tokens, 2 + 5);
}

TEST(Shuffle, IsTheSameWithEveryStandardLibrary) {
  // Independently computed with a reference MT19937-64 and the same Fisher-Yates with rejection.
  EXPECT_EQ(shuffled_indices(10, 42), (std::vector<size_t>{1, 7, 9, 0, 3, 8, 4, 2, 5, 6}));
  EXPECT_EQ(shuffled_indices(10, 7), (std::vector<size_t>{0, 7, 4, 9, 3, 1, 2, 8, 6, 5}));
  EXPECT_EQ(shuffled_indices(20, 0),
            (std::vector<size_t>{15, 1, 17, 9, 5, 4, 3, 6, 16, 7, 10, 2, 19, 11, 8, 12, 0, 18, 13, 14}));
  EXPECT_TRUE(shuffled_indices(0, 1).empty());
  EXPECT_EQ(shuffled_indices(1, 1), std::vector<size_t>{0});
}

TEST(Shuffle, DeterministicForASeedAndDifferentForAnother) {
  const auto a = shuffled_indices(1000, 3), b = shuffled_indices(1000, 3), c = shuffled_indices(1000, 4);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(std::set<size_t>(a.begin(), a.end()).size(), 1000u);
  EXPECT_EQ(*std::max_element(a.begin(), a.end()), 999u);
}

TEST(Split, HoldsOutADisjointSeededEvalSet) {
  const Dataset d = load(lines_of_text(20));
  const auto s = split_train_eval(d, 0.25, 9);
  EXPECT_EQ(s.eval.size(), 5u);
  EXPECT_EQ(s.train.size(), 15u);
  std::set<std::string> seen;
  for (const auto& ex : s.train.examples()) seen.insert(text_of(ex));
  for (const auto& ex : s.eval.examples()) EXPECT_TRUE(seen.insert(text_of(ex)).second);
  EXPECT_EQ(seen.size(), 20u);
  // The held-out examples are those the seed's shuffle puts first.
  auto order = shuffled_indices(20, 9);
  std::set<std::string> expected_eval;
  for (size_t k = 0; k < 5; ++k) expected_eval.insert("example " + std::to_string(order[k]));
  std::set<std::string> eval;
  for (const auto& ex : s.eval.examples()) eval.insert(text_of(ex));
  EXPECT_EQ(eval, expected_eval);
  EXPECT_EQ(split_train_eval(load(lines_of_text(3)), 0.01, 1).eval.size(), 1u);
  EXPECT_THROW(split_train_eval(load(lines_of_text(1)), 0.5, 1), std::runtime_error);
  EXPECT_THROW(split_train_eval(d, 1.0, 1), std::invalid_argument);
}

TEST(Loader, EachEpochVisitsEveryExampleOnceInANewOrder) {
  const Dataset d = load(lines_of_text(10));
  LoaderOptions opt;
  opt.batch_size = 3;
  opt.seed = 5;
  DataLoader loader(d, opt);
  EXPECT_EQ(loader.steps_per_epoch(), 4);  // 3 + 3 + 3 + 1
  std::vector<std::vector<std::string>> epochs(2);
  for (int e = 0; e < 2; ++e) {
    for (int s = 0; s < 4; ++s) {
      const TokenBatch b = loader.next();
      for (int64_t r = 0; r < b.batch_size; ++r) {
        std::string t;
        for (int64_t k = 0; k < b.seq_len; ++k) {
          const int64_t id = b.input_ids[static_cast<size_t>(r * b.seq_len + k)];
          if (id < 256) t += static_cast<char>(id);
        }
        epochs[e].push_back(t);
      }
    }
  }
  EXPECT_EQ(loader.position().epoch, 2);
  EXPECT_EQ(loader.position().step, 0);
  for (const auto& ep : epochs) EXPECT_EQ(std::set<std::string>(ep.begin(), ep.end()).size(), 10u);
  EXPECT_NE(epochs[0], epochs[1]);
  LoaderOptions same = opt;
  same.shuffle = false;
  DataLoader ordered(d, same);
  EXPECT_EQ(text_of(d[0]), "example 0");
  EXPECT_EQ(ordered.next().input_ids[1], 'e');
}

TEST(Loader, RestoredPositionResumesTheSameSequence) {
  const Dataset d = load(lines_of_text(11));
  LoaderOptions opt;
  opt.batch_size = 2;
  opt.seed = 77;
  DataLoader first(d, opt);
  std::vector<TokenBatch> run;
  std::vector<LoaderPosition> positions;
  for (int i = 0; i < 20; ++i) {
    positions.push_back(first.position());
    run.push_back(first.next());
  }
  // Resume at step 4 of epoch 1 (the 11th batch: an epoch has 6 steps).
  ASSERT_EQ(positions[10].epoch, 1);
  ASSERT_EQ(positions[10].step, 4);
  DataLoader resumed(d, opt);
  resumed.set_position({1, 4});
  for (int i = 10; i < 20; ++i) {
    const TokenBatch b = resumed.next();
    EXPECT_EQ(b.input_ids, run[i].input_ids) << i;
    EXPECT_EQ(b.labels, run[i].labels) << i;
  }
  EXPECT_THROW(resumed.set_position({0, 6}), std::out_of_range);
}

TEST(Loader, NoBatchIsAnError) {
  const Dataset d = load(lines_of_text(3));
  LoaderOptions opt;
  opt.batch_size = 4;
  opt.drop_last = true;
  EXPECT_THROW(DataLoader(d, opt), std::runtime_error);
  opt.drop_last = false;
  EXPECT_EQ(DataLoader(d, opt).steps_per_epoch(), 1);
}

TEST(Loader, PackingFillsRowsAndIsolatesExamples) {
  // Lengths with bos and eos: 4, 5, 3, 6.
  const Dataset d = load("{\"text\": \"ab\"}\n{\"text\": \"abc\"}\n{\"text\": \"a\"}\n{\"text\": \"abcd\"}\n");
  LoaderOptions opt;
  opt.batch_size = 8;
  opt.shuffle = false;
  opt.pack_length = 9;
  DataLoader loader(d, opt);
  ASSERT_EQ(loader.num_rows(), 2);  // [4 + 5], [3 + 6]
  const TokenBatch b = loader.next();
  ASSERT_EQ(b.batch_size, 2);
  ASSERT_EQ(b.seq_len, 9);
  const int64_t I = kIgnoreIndex;
  EXPECT_EQ(b.input_ids, (std::vector<int64_t>{kBos, 'a', 'b', kEos, kBos, 'a', 'b', 'c', kEos,  //
                                               kBos, 'a', kEos, kBos, 'a', 'b', 'c', 'd', kEos}));
  EXPECT_EQ(b.position_ids, (std::vector<int64_t>{0, 1, 2, 3, 0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(b.labels, (std::vector<int64_t>{kBos, 'a', 'b', kEos, I, 'a', 'b', 'c', kEos,  //
                                            kBos, 'a', kEos, I, 'a', 'b', 'c', 'd', kEos}));
  EXPECT_EQ(b.attention_mask, std::vector<int64_t>(18, 1));
  opt.pack_length = 5;
  EXPECT_THROW(DataLoader(d, opt), std::runtime_error);  // a 6-token example does not fit
}
