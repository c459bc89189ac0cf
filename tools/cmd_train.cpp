// `peft train`: fine-tunes a Hugging Face model with AdaLoRA, LoRA or in full from flags and/or a
// JSON recipe. Ctrl-C writes a checkpoint and stops; --resume latest continues exactly.
#include <csignal>
#include <iostream>

#include "command.h"
#include "peft/flags.h"
#include "peft/runtime.h"
#include "peft/trainer.h"

namespace {

extern "C" void on_sigint(int) {
  if (peft::Trainer::interrupt_requested.load()) std::_Exit(130);  // a second Ctrl-C stops at once
  peft::Trainer::interrupt_requested.store(true);
}

int run_train(const std::vector<std::string>& args) {
  if (peft::Flags::asks_for_help(args)) {
    std::cout << peft::train_options_help();
    return 0;
  }
  auto options = peft::parse_train_options(args);
  if (!options.quiet) {
    auto note = peft::shared_cores_note(peft::init_runtime());
    if (!note.empty()) std::cout << note << "\n";
  }
  peft::Trainer trainer(options);
  std::signal(SIGINT, on_sigint);
  auto result = trainer.train();
  std::signal(SIGINT, SIG_DFL);
  if (result.stopped_on_nan) return 3;
  if (result.interrupted) return 130;
  return 0;
}

}  // namespace

PEFT_COMMAND("train", "fine-tune a model with AdaLoRA, LoRA or in full (peft train --help)", run_train);
