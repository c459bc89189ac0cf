// `peft train`: fine-tunes a Hugging Face model with AdaLoRA, LoRA or in full from flags and/or a
// JSON recipe. Ctrl-C (SIGINT) or SIGTERM writes a checkpoint and stops; --resume latest continues.
#include <csignal>
#include <iostream>

#include "command.h"
#include "peft/core/flags.h"
#include "peft/core/runtime.h"
#include "peft/train/trainer.h"

namespace {

volatile std::sig_atomic_t stop_signal = 0;

// SIGINT (Ctrl-C) and SIGTERM (what `timeout` and job schedulers send): checkpoint after the
// current step and stop; a second signal stops at once.
extern "C" void on_stop_signal(int sig) {
  if (peft::Trainer::interrupt_requested.load()) std::_Exit(128 + sig);
  stop_signal = sig;
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
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  auto result = trainer.train();
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  if (result.stopped_on_nan) return 3;
  if (result.interrupted) return 128 + (stop_signal ? stop_signal : SIGINT);  // 130 for SIGINT, 143 for SIGTERM
  return 0;
}

}  // namespace

PEFT_COMMAND("train", "fine-tune a model with AdaLoRA, LoRA or in full (peft train --help)", run_train);
