// `peft train`: fine-tunes a Hugging Face model with AdaLoRA, LoRA or in full from flags and/or a
// JSON recipe, as one process, as one of torchrun's, or as N it starts (--nproc-per-node). Ctrl-C
// (SIGINT) or SIGTERM writes a checkpoint and stops; --resume latest continues.
#include <ATen/Parallel.h>

#include <csignal>
#include <iostream>

#include "command.h"
#include "peft/core/flags.h"
#include "peft/core/runtime.h"
#include "peft/models/model.h"
#include "peft/train/distributed.h"
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

// This process alone, or one of a group: joins it, trains, and returns the exit code.
int train_here(const peft::TrainOptions& options, const peft::WorldEnv& env) {
  if (env.size > 1) at::set_num_threads(peft::threads_per_process(env));
  if (!options.quiet && env.rank == 0) {
    auto note = peft::shared_cores_note(at::get_num_threads());
    if (!note.empty()) std::cout << note << "\n";
  }
  const auto device = peft::load_options(options.dtype, options.device).device;
  auto world = peft::World::connect(env, device, std::chrono::milliseconds(static_cast<int64_t>(options.dist_timeout * 1000)));
  peft::Trainer trainer(options, world);
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  auto result = trainer.train();
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  if (result.stopped_on_nan) return 3;
  if (result.interrupted) return 128 + (stop_signal ? stop_signal : SIGINT);  // 130 for SIGINT, 143 for SIGTERM
  return 0;
}

int run_train(const std::vector<std::string>& args) {
  if (peft::Flags::asks_for_help(args)) {
    std::cout << peft::train_options_help();
    return 0;
  }
  auto options = peft::parse_train_options(args);
  const auto env = peft::parse_world_env();
  if (env.given && options.nproc_per_node > 0 && options.nproc_per_node != env.local_size) {
    throw std::invalid_argument("--nproc-per-node " + std::to_string(options.nproc_per_node) + ": this process is already one of " +
                                std::to_string(env.local_size) + " on this machine (LOCAL_WORLD_SIZE, WORLD_SIZE " +
                                std::to_string(env.size) + ") started by a launcher such as torchrun; leave --nproc-per-node out");
  }
  if (!env.given && options.nproc_per_node > 1) {  // start the processes, each of them runs train_here
    peft::WorldEnv local;
    local.size = local.local_size = static_cast<int>(options.nproc_per_node);
    const int threads = peft::threads_per_process(local);
    std::cerr << "peft train: " << options.nproc_per_node << " processes on this machine, " << threads << " thread"
              << (threads == 1 ? "" : "s") << " each; rank 0 prints\n";
    peft::LaunchOptions lo;
    lo.nprocs = static_cast<int>(options.nproc_per_node);
    lo.argv = {peft::this_program(), "train"};
    lo.argv.insert(lo.argv.end(), args.begin(), args.end());
    lo.timeout = std::chrono::milliseconds(static_cast<int64_t>(options.dist_timeout * 1000));
    return peft::launch_local(lo);
  }
  try {
    return train_here(options, env);
  } catch (const std::exception& e) {
    if (env.size > 1)  // say which process: each prints its own error
      throw std::runtime_error("rank " + std::to_string(env.rank) + " of " + std::to_string(env.size) + ": " + e.what());
    throw;
  }
}

}  // namespace

PEFT_COMMAND("train", "fine-tune a model with AdaLoRA, LoRA or in full (peft train --help)", run_train);
