// Golden replay: each reference run of PEFT is re-trained step by step and must match its trace,
// final adapter, rank_pattern and logits within the tolerances of the golden README.
#include <gtest/gtest.h>

#include "peft/train/replay.h"
#include "test_util.h"

using namespace peft;

static void expect_replay(const std::string& name) {
  auto rep = replay_golden(test::golden(name), nullptr);
  std::cout << "[ replay ] " << name << ": " << rep.to_json().dump() << "\n";
  EXPECT_TRUE(rep.has_trace);
  EXPECT_TRUE(rep.has_final);
  EXPECT_TRUE(rep.has_logits);
  EXPECT_LE(rep.max_loss_rel, 1e-4) << rep.first_failure;
  EXPECT_EQ(rep.budget_mismatches, 0) << rep.first_failure;
  EXPECT_EQ(rep.rank_pattern_mismatches, 0) << rep.first_failure;
  EXPECT_LE(rep.max_adapter_rel, 1e-3) << rep.first_failure;
  EXPECT_LE(rep.max_logits_abs, 1e-4) << rep.first_failure;
  EXPECT_TRUE(rep.ok) << rep.first_failure;
}

TEST(Replay, LlamaAdaLoraWholeSchedule) { expect_replay("llama_a"); }
TEST(Replay, GPT2AdaLoraConv1D) { expect_replay("gpt2_a"); }
TEST(Replay, BertAdaLoraClassifier) { expect_replay("bert_a"); }
TEST(Replay, LlamaLora) { expect_replay("llama_lora"); }
