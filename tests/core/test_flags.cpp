// peft::Flags, the parser of every subcommand: typed values and their error messages, switches,
// '_' == '-' in names, set() as recipes use it, "did you mean", the positional argument and --help.
#include <gtest/gtest.h>

#include <stdexcept>

#include "peft/core/flags.h"

using peft::Flags;

namespace {

// The message of the std::invalid_argument that `f` throws ("" when it throws none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

struct Bound {
  std::string model, file;
  int64_t steps = 1;
  uint64_t seed = 42;
  double lr = 1e-3;
  bool quiet = false, report = true;
  std::vector<std::string> modules;
  bool tinit_set = false;
  int64_t tinit = 0;
  Flags flags{"demo", "peft demo FILE --model DIR [options]", "Does nothing, carefully.", "  peft demo a.txt --model m"};
  Bound() {
    flags.positional("FILE", &file);
    flags.flag("model", "DIR", "the model", &model);
    flags.flag("max-steps", "N", "optimizer steps", &steps);
    flags.flag("seed", "N", "random seed", &seed);
    flags.flag("lr", "F", "learning rate", &lr);
    flags.flag("target_modules", "LIST", "modules", &modules);
    flags.flag("tinit", "N", "warm-up", [this](const std::string& v) { tinit = Flags::to_int64(v); tinit_set = true; });
    flags.toggle("quiet", "no progress", &quiet);
    flags.toggle("report", "write a report", &report);
  }
};

}  // namespace

TEST(Flags, BindsTypedValuesInBothForms) {
  Bound b;
  ASSERT_TRUE(b.flags.parse({"in.txt", "--model", "m", "--max-steps=7", "--seed", "3", "--lr", "2e-3",
                             "--target_modules", "q_proj,,v_proj", "--tinit=5", "--quiet"}));
  EXPECT_EQ(b.file, "in.txt");
  EXPECT_EQ(b.model, "m");
  EXPECT_EQ(b.steps, 7);
  EXPECT_EQ(b.seed, 3u);
  EXPECT_DOUBLE_EQ(b.lr, 2e-3);
  EXPECT_EQ(b.modules, (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_EQ(b.tinit, 5);
  EXPECT_TRUE(b.tinit_set);
  EXPECT_TRUE(b.quiet);
}

TEST(Flags, UnderscoreAndDashAreTheSameInNames) {
  Bound b;
  ASSERT_TRUE(b.flags.parse({"--max_steps", "9", "--target-modules", "k_proj"}));
  EXPECT_EQ(b.steps, 9);
  EXPECT_EQ(b.modules, std::vector<std::string>{"k_proj"});
  EXPECT_TRUE(b.flags.has("max_steps"));
  EXPECT_TRUE(b.flags.has("target-modules"));
  EXPECT_FALSE(b.flags.has("max"));
}

TEST(Flags, SwitchesTakeNoValueOrAnExplicitOne) {
  for (auto [arg, want] : std::vector<std::pair<std::string, bool>>{
           {"--report", true}, {"--report=true", true}, {"--report=1", true}, {"--report=yes", true},
           {"--report=false", false}, {"--report=0", false}, {"--report=no", false}}) {
    Bound b;
    b.report = !want;
    ASSERT_TRUE(b.flags.parse({arg}));
    EXPECT_EQ(b.report, want) << arg;
  }
  Bound b;
  auto m = error_of([&] { b.flags.parse({"--quiet=maybe"}); });
  EXPECT_NE(m.find("--quiet: a switch"), std::string::npos) << m;
  EXPECT_NE(m.find("\"maybe\""), std::string::npos) << m;
  // A switch does not take the next argument as its value: it is the positional argument.
  ASSERT_TRUE(b.flags.parse({"--quiet", "false"}));
  EXPECT_TRUE(b.quiet);
  EXPECT_EQ(b.file, "false");
}

TEST(Flags, BadValuesNameTheFlagAsGivenAndTheValue) {
  Bound b;
  EXPECT_EQ(error_of([&] { b.flags.parse({"--max-steps", "many"}); }), "--max-steps: expected an integer, got \"many\"");
  EXPECT_EQ(error_of([&] { b.flags.parse({"--max_steps", "12x"}); }), "--max_steps: expected an integer, got \"12x\"");
  EXPECT_EQ(error_of([&] { b.flags.parse({"--lr", "fast"}); }), "--lr: expected a number, got \"fast\"");
  EXPECT_EQ(error_of([&] { b.flags.parse({"--seed", "-1"}); }), "--seed: expected a non-negative integer, got \"-1\"");
  EXPECT_EQ(error_of([&] { b.flags.parse({"--tinit", "soon"}); }), "--tinit: expected an integer, got \"soon\"");
  EXPECT_EQ(error_of([&] { b.flags.parse({"--model"}); }), "--model needs a value (DIR); see peft demo --help");
}

TEST(Flags, UnknownFlagsSuggestTheClosestName) {
  Bound b;
  EXPECT_EQ(error_of([&] { b.flags.parse({"--modle", "x"}); }),
            "unknown option --modle (did you mean --model?); see peft demo --help");
  // Edit distance is measured on normalised names: max_stesp is two edits from max-steps.
  EXPECT_NE(error_of([&] { b.flags.parse({"--max_stesp", "3"}); }).find("did you mean --max-steps?"), std::string::npos);
  // A beginning of a name points to the flag it begins.
  EXPECT_NE(error_of([&] { b.flags.parse({"--target"}); }).find("did you mean --target_modules?"), std::string::npos);
  EXPECT_EQ(error_of([&] { b.flags.parse({"--zzzzzzzz"}); }), "unknown option --zzzzzzzz; see peft demo --help");
  EXPECT_EQ(error_of([&] { b.flags.parse({"-quiet"}); }),
            "unknown option -quiet (options start with --; did you mean --quiet?); see peft demo --help");
  EXPECT_EQ(b.flags.suggest("lr_"), "--lr");
}

TEST(Flags, SetAppliesValuesByNameLikeTheCommandLine) {
  Bound b;
  b.flags.set("max_steps", "11");
  b.flags.set("quiet", "true");
  b.flags.set("target-modules", "a,b");
  EXPECT_EQ(b.steps, 11);
  EXPECT_TRUE(b.quiet);
  EXPECT_EQ(b.modules, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(error_of([&] { b.flags.set("max_steps", "1.5"); }), "--max_steps: expected an integer, got \"1.5\"");
  EXPECT_EQ(error_of([&] { b.flags.set("lrr", "1"); }), "unknown option --lrr (did you mean --lr?); see peft demo --help");
}

TEST(Flags, PositionalAndRequired) {
  Bound b;
  EXPECT_EQ(error_of([&] { b.flags.parse({"a", "b"}); }),
            "unexpected argument \"b\": FILE is already \"a\" (options start with --); see peft demo --help");
  Bound c;
  ASSERT_TRUE(c.flags.parse({"--quiet"}));
  EXPECT_EQ(error_of([&] { c.flags.require("FILE", c.file); }), "missing FILE; see peft demo --help");
  EXPECT_EQ(error_of([&] { c.flags.require("model", c.model); }),
            "--model DIR is required: the model; see peft demo --help");
  Flags none("x", "peft x", "about", "  peft x");
  EXPECT_EQ(error_of([&] { none.parse({"stray"}); }), "unexpected argument \"stray\" (options start with --); see peft x --help");
}

TEST(Flags, HelpListsUsageAboutExampleAndOptions) {
  Bound b;
  auto h = b.flags.help();
  EXPECT_EQ(h.rfind("usage: peft demo FILE --model DIR [options]\n\nDoes nothing, carefully.\n\nexample:\n  peft demo a.txt --model m\n\noptions:\n", 0), 0u) << h;
  EXPECT_NE(h.find("  --model DIR               the model\n"), std::string::npos) << h;
  EXPECT_NE(h.find("  --quiet                   no progress\n"), std::string::npos) << h;
  EXPECT_NE(h.find("  --help                    this text\n"), std::string::npos) << h;
  b.flags.options_note("recipe keys are the same names");
  EXPECT_NE(b.flags.help().find("\noptions (recipe keys are the same names):\n"), std::string::npos);
  testing::internal::CaptureStdout();
  EXPECT_FALSE(b.flags.parse({"--model", "m", "-h"}));
  EXPECT_EQ(testing::internal::GetCapturedStdout(), b.flags.help());
  EXPECT_TRUE(Flags::asks_for_help({"x", "--help"}));
  EXPECT_FALSE(Flags::asks_for_help({"x", "--helpful"}));
}
