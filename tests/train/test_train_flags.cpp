// peft train's command line as transformers users write it: TrainingArguments names as aliases,
// --bf16, --eval-batch-size and fractional epochs (the plan's total_step from them).
#include <gtest/gtest.h>

#include <regex>
#include <string>

#include "peft/train/train_options.h"
#include "test_util.h"

using namespace peft;
using namespace peft::test;

namespace {

// total_step as `peft train` plans it for `extra` flags on the tiny fixture (64 examples), read from
// its "plan:" line (the tiny run itself takes about a second).
int64_t planned_steps(const TempDir& tmp, const std::string& name, const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"train", "--model", fixture("tiny"), "--data", fixture("tiny") + "/train.jsonl",
                                   "--output-dir", tmp.str(name), "--method", "lora", "--report=false",
                                   "--batch-size", "8", "--lr", "1e-3"};
  args.insert(args.end(), extra.begin(), extra.end());
  auto r = run_cli(args);
  std::smatch m;
  if (!std::regex_search(r.out, m, std::regex("plan: total_step (\\d+)"))) {
    ADD_FAILURE() << r.out;
    return -1;
  }
  return std::stoll(m[1]);
}

}  // namespace

TEST(TrainFlags, TrainingArgumentsNamesAreAliases) {
  auto o = parse_train_options({"--learning_rate", "0.01", "--num_train_epochs", "0.5", "--per_device_train_batch_size",
                                "3", "--per_device_eval_batch_size", "5", "--gradient_accumulation_steps", "2",
                                "--lr_scheduler_type", "cosine", "--warmup_ratio", "0.1", "--logging_steps", "7",
                                "--save_steps", "9", "--eval_steps", "11", "--output_dir", "x", "--bf16"});
  EXPECT_DOUBLE_EQ(o.lr, 0.01);
  EXPECT_DOUBLE_EQ(o.epochs, 0.5);
  EXPECT_EQ(o.batch_size, 3);
  EXPECT_EQ(o.eval_batch_size, 5);
  EXPECT_EQ(o.grad_accum, 2);
  EXPECT_EQ(o.lr_scheduler, "cosine");
  EXPECT_DOUBLE_EQ(o.warmup_ratio, 0.1);
  EXPECT_EQ(o.logging_steps, 7);
  EXPECT_EQ(o.save_steps, 9);
  EXPECT_EQ(o.eval_steps, 11);
  EXPECT_EQ(o.output_dir, "x");
  EXPECT_EQ(o.dtype, "bfloat16");
  EXPECT_EQ(parse_train_options({"--bf16=false"}).dtype, "float32");
  // An alias's errors name it as the user wrote it.
  try {
    parse_train_options({"--learning_rate", "fast"});
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()), "--learning_rate: expected a number, got \"fast\"");
  }
}

TEST(TrainFlags, HelpListsEachAliasOnceBesideItsFlag) {
  const std::string help = train_options_help();
  for (const char* alias : {"--learning_rate", "--num_train_epochs", "--per_device_train_batch_size",
                            "--per_device_eval_batch_size", "--gradient_accumulation_steps", "--lr_scheduler_type"}) {
    const auto at = help.find(alias);
    ASSERT_NE(at, std::string::npos) << alias;
    EXPECT_EQ(help.find(alias, at + 1), std::string::npos) << alias << " listed twice";
  }
  EXPECT_NE(help.find("peak learning rate (default 1e-3) (also --learning_rate)"), std::string::npos) << help;
  EXPECT_NE(help.find("--bf16"), std::string::npos);
}

TEST(TrainFlags, EpochValuesAreChecked) {
  for (const char* bad : {"0", "-1", "nan", "1e7"}) {
    try {
      parse_train_options({"--epochs", bad});
      ADD_FAILURE() << bad << " accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("--epochs"), std::string::npos) << e.what();
    }
  }
  try {
    parse_train_options({"--eval-batch-size", "-2"});
    ADD_FAILURE() << "-2 accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("--eval-batch-size -2"), std::string::npos) << e.what();
  }
}

TEST(TrainFlags, AFractionOfAnEpochPlansThatShareOfTheSteps) {
  TempDir tmp;
  // 64 examples in batches of 8: 8 micro-batches per epoch.
  EXPECT_EQ(planned_steps(tmp, "one", {"--epochs", "1", "--save-steps", "1000"}), 8);
  EXPECT_EQ(planned_steps(tmp, "half", {"--num_train_epochs", "0.5"}), 4);
  EXPECT_EQ(planned_steps(tmp, "third", {"--epochs", "0.3"}), 3);  // 2.4 rounds up, as transformers does
  EXPECT_EQ(planned_steps(tmp, "accum", {"--epochs", "1.5", "--gradient_accumulation_steps", "4"}), 3);
}
