// Values of the wrong kind in adapter_config.json, config.json and tokenize's input: each is refused
// with an error naming the key (or line) and the value, never converted silently or crashed on.
#include <gtest/gtest.h>

#include <string>

#include "peft/formats/adapter_config.h"
#include "peft/models/model.h"
#include "peft/models/model_family.h"
#include "test_util.h"

using namespace peft;
using namespace peft::test;

namespace {

// The message from_json (then validate) throws for `j`, or "" when it is accepted.
std::string adapter_error(const nlohmann::json& j) {
  try {
    AdapterConfig::from_json(j, "a/adapter_config.json").validate();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

nlohmann::json adalora(const nlohmann::json& extra) {
  nlohmann::json j = {{"peft_type", "ADALORA"}, {"init_r", 8}, {"target_r", 4}, {"total_step", 100},
                      {"tinit", 10}, {"tfinal", 20}};
  j.update(extra);
  return j;
}

}  // namespace

TEST(AdapterConfigValues, ARankWrittenAsAFractionIsRefusedNotTruncated) {
  auto e = adapter_error({{"peft_type", "LORA"}, {"r", 2.5}});
  EXPECT_NE(e.find("a/adapter_config.json: key \"r\" must be an integer, got 2.5"), std::string::npos) << e;
  e = adapter_error(adalora({{"init_r", 8.0}}));
  EXPECT_NE(e.find("key \"init_r\" must be an integer, got 8.0"), std::string::npos) << e;
}

TEST(AdapterConfigValues, NumbersBeyondInt64AreRefused) {
  auto e = adapter_error(adalora({{"total_step", 1e300}}));
  EXPECT_NE(e.find("key \"total_step\" must be an integer"), std::string::npos) << e;
  e = adapter_error(adalora({{"tinit", nlohmann::json(uint64_t{18446744073709551615ull})}}));
  EXPECT_NE(e.find("key \"tinit\" must be an integer below 2^63"), std::string::npos) << e;
}

TEST(AdapterConfigValues, ALoraRankPatternValueNamesItsModule) {
  auto e = adapter_error({{"peft_type", "LORA"}, {"r", 8}, {"rank_pattern", {{"q_proj", 4}, {"v_proj", 1.5}}}});
  EXPECT_NE(e.find("key \"rank_pattern\": \"v_proj\" must be an integer, got 1.5"), std::string::npos) << e;
}

TEST(AdapterConfigValues, RanksLargerThanAnyLayerAreRefused) {
  auto e = adapter_error(adalora({{"init_r", int64_t{1} << 40}}));
  EXPECT_NE(e.find("init_r (1099511627776) is larger than any layer"), std::string::npos) << e;
  e = adapter_error({{"peft_type", "LORA"}, {"r", 4}, {"rank_pattern", {{"q_proj", int64_t{1} << 21}}}});
  EXPECT_NE(e.find("rank_pattern[\"q_proj\"] (2097152) is larger than any layer"), std::string::npos) << e;
  EXPECT_EQ(adapter_error(adalora({{"init_r", 4096}, {"target_r", 1024}})), "");
}

TEST(AdapterConfigValues, PeftOptionsThatChangeTheComputationAreRefusedNotIgnored) {
  const nlohmann::json lora = {{"peft_type", "LORA"}, {"r", 4}};
  auto with = [&](const nlohmann::json& extra) {
    nlohmann::json j = lora;
    j.update(extra);
    return adapter_error(j);
  };
  EXPECT_NE(with({{"use_dora", true}}).find("use_dora: DoRA"), std::string::npos);
  EXPECT_NE(with({{"lora_bias", true}}).find("lora_bias:"), std::string::npos);
  EXPECT_NE(with({{"layers_to_transform", {0, 1}}}).find("layers_to_transform: adapting only some layers"),
            std::string::npos);
  EXPECT_NE(with({{"layers_pattern", "layers"}}).find("layers_pattern:"), std::string::npos);
  EXPECT_NE(with({{"trainable_token_indices", {1, 2}}}).find("trainable_token_indices:"), std::string::npos);
  // PEFT writes these keys unset in every adapter: accepted
  EXPECT_EQ(with({{"use_dora", false}, {"lora_bias", false}, {"layers_to_transform", nullptr}, {"layers_pattern", nullptr},
                  {"use_qalora", false}, {"layer_replication", nullptr}, {"trainable_token_indices", nullptr},
                  {"target_parameters", nullptr}, {"alora_invocation_tokens", nullptr}, {"use_bdlora", nullptr}}),
            "");
}

TEST(AdapterConfig, RankAndAlphaPatternsAreLookedUpAsPeftDoes) {
  auto c = AdapterConfig::from_json({{"peft_type", "LORA"}, {"r", 8}, {"lora_alpha", 16},
                                     {"rank_pattern", {{"model.layers.0.self_attn.q_proj", 2}, {"v_proj", 4}}},
                                     {"alpha_pattern", {{"layers\\.1\\..*", 3.0}}}});
  EXPECT_EQ(c.rank_of("model.layers.0.self_attn.q_proj"), 2);   // the exact key
  EXPECT_EQ(c.rank_of("model.layers.3.self_attn.v_proj"), 4);   // (.*\.)?(v_proj) matches the whole path
  EXPECT_EQ(c.rank_of("model.layers.3.self_attn.xv_proj"), 8);  // not a whole-name match: r
  EXPECT_EQ(c.alpha_of("model.layers.1.mlp.up_proj"), 3.0);
  EXPECT_EQ(c.alpha_of("model.layers.11.mlp.up_proj"), 16.0);
}

TEST(ModelConfigValues, AnInitializerRangeThatIsNotANumberNamesTheKey) {
  nlohmann::json j = {{"model_type", "llama"}, {"vocab_size", 32}, {"hidden_size", 8}, {"intermediate_size", 16},
                      {"num_hidden_layers", 1}, {"num_attention_heads", 2}, {"initializer_range", "0.02"}};
  try {
    build_model(parse_model_config(j));
    FAIL() << "a string initializer_range was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("key \"initializer_range\": expected a number, got \"0.02\""),
              std::string::npos)
        << e.what();
  }
}

TEST(TokenizeInput, EveryBadLineIsNamedAndNothingCrashes) {
  const std::string tok = fixture("tiny/tokenizer.json");
  struct Case {
    std::string input, flag, expected;
  };
  for (const Case& c : {Case{"\"ok\"\n1e400", "", "stdin line 2: not valid JSON"},
                        Case{"[1, -1]", "--decode", "stdin line 1: expected a JSON array of token ids"},
                        Case{"[4294967296]", "--decode", "stdin line 1: expected a JSON array of token ids"},
                        Case{"[1.5]", "--decode", "stdin line 1: expected a JSON array of token ids"}}) {
    const std::string cmd = "printf '%s\\n' " + shell_quote(c.input) + " | " + shell_quote(PEFT_CLI) +
                            " tokenize " + shell_quote(tok) + (c.flag.empty() ? "" : " " + c.flag);
    auto r = run_shell(cmd);
    EXPECT_EQ(r.code, 1) << c.input << ": " << r.out;
    EXPECT_NE(r.out.find(c.expected), std::string::npos) << c.input << ": " << r.out;
  }
}
