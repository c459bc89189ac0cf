// Tests for the TextEncoder over real tokenizers (llama2/3, qwen3 in .cache/tokenizers, fetched by
// scripts/fetch-test-data.sh): special-token ids, and chat datasets tokenized as whole renderings are.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "peft/data/dataset.h"
#include "peft/text/tokenizer.h"
#include "peft/text/tokenizer_config.h"

using namespace peft;

namespace {

const std::string kCache = PEFT_TEST_DATA "/../../.cache/tokenizers";

bool have(const std::string& name) {
  return std::filesystem::exists(kCache + "/" + name + "/tokenizer.json") &&
         std::filesystem::exists(kCache + "/" + name + "/tokenizer_config.json");
}

TokenizerConfig config_of(const std::string& name) {
  return read_tokenizer_config(kCache + "/" + name + "/tokenizer_config.json");
}

}  // namespace

TEST(TextEncoder, SpecialTokensOfLlama3AndQwen3) {
  ASSERT_TRUE(have("llama2") && have("llama3") && have("qwen3")) << "run scripts/fetch-test-data.sh";
  const auto llama2 = Tokenizer::from_file(kCache + "/llama2/tokenizer.json");
  const auto l2 = make_text_encoder(llama2, config_of("llama2"));
  EXPECT_EQ(l2.bos, 1);  // <s>, which its TemplateProcessing post-processor prepends
  EXPECT_EQ(l2.eos, 2);  // </s>, the config's eos_token
  EXPECT_EQ(l2.pad, 2);  // no pad_token: eos

  // This llama3 tokenizer.json's post-processor is ByteLevel alone: it adds no bos.
  const auto llama = Tokenizer::from_file(kCache + "/llama3/tokenizer.json");
  const auto e = make_text_encoder(llama, config_of("llama3"));
  EXPECT_FALSE(e.bos.has_value());
  EXPECT_EQ(e.eos, 128001);  // <|end_of_text|>
  EXPECT_EQ(e.encode("<|eot_id|>"), std::vector<int32_t>{128009});

  const auto qwen = Tokenizer::from_file(kCache + "/qwen3/tokenizer.json");
  const auto q = make_text_encoder(qwen, config_of("qwen3"));
  EXPECT_FALSE(q.bos.has_value());
  EXPECT_EQ(q.eos, 151645);  // <|im_end|>
  EXPECT_EQ(q.pad, 151643);  // <|endoftext|>
}

TEST(TextEncoder, ChatDatasetsMatchWholeRenderingTokenization) {
  std::ifstream in(std::string(PEFT_TEST_DATA) + "/tokenizers/chat_templates.json");
  const auto fixture = nlohmann::json::parse(in);
  int checked = 0;
  for (const std::string family : {"llama3", "qwen3"}) {
    if (!have(family)) continue;
    const auto tok = Tokenizer::from_file(kCache + "/" + family + "/tokenizer.json");
    const auto config = config_of(family);
    const TextEncoder enc = make_text_encoder(tok, config);
    DatasetOptions opt;
    opt.chat_format = ChatFormat::from_config(config);
    const std::string end = family == "llama3" ? "<|eot_id|>" : "<|im_end|>";
    for (const auto& c : fixture[family]) {
      bool has_assistant = false;
      std::vector<int32_t> learned;  // each assistant message's content and end marker, encoded alone
      for (const auto& m : c["messages"])
        if (m["role"] == "assistant") {
          has_assistant = true;
          for (int32_t id : tok.encode(m["content"].get<std::string>() + end)) learned.push_back(id);
        }
      if (c["gen"].get<bool>() || !has_assistant) continue;
      const Dataset d = Dataset::from_jsonl_string(nlohmann::json{{"messages", c["messages"]}}.dump(), "chat.jsonl",
                                                   enc, opt);
      EXPECT_EQ(d[0].input_ids, tok.encode(c["text"].get<std::string>(), false)) << family;
      std::vector<int32_t> unmasked;
      for (int32_t l : d[0].labels)
        if (l != kIgnoreIndex) unmasked.push_back(l);
      EXPECT_EQ(unmasked, learned) << family;
      ++checked;
    }
  }
  ASSERT_GT(checked, 0) << "run scripts/fetch-test-data.sh";
}
