// Entry point of the `peft` program: dispatches to the registered subcommands and prints help.
// Errors thrown by the library reach the user as one line on stderr and exit code 1.
#include <algorithm>
#include <exception>
#include <iostream>

#include "command.h"
#include "peft/core/runtime.h"

namespace peft::cli {
std::vector<Command>& commands() {
  static std::vector<Command> all;
  return all;
}
}  // namespace peft::cli

static void print_help() {
  std::cout << "peft: parameter-efficient fine-tuning (AdaLoRA, LoRA) of Hugging Face models\n\n"
               "usage: peft <command> [options]     (peft <command> --help for details)\n\ncommands:\n";
  auto cmds = peft::cli::commands();
  std::sort(cmds.begin(), cmds.end(), [](auto& a, auto& b) { return a.name < b.name; });
  for (auto& c : cmds) {
    std::cout << "  " << c.name << std::string(c.name.size() < 12 ? 12 - c.name.size() : 1, ' ')
              << c.summary << "\n";
  }
}

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" ||
      std::string(argv[1]) == "help") {
    print_help();
    return argc < 2 ? 2 : 0;
  }
  std::string name = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  for (auto& c : peft::cli::commands()) {
    if (c.name == name) {
      try {
        peft::init_runtime();
        return c.run(args);
      } catch (const std::exception& e) {
        std::cerr << "peft " << name << ": error: " << e.what() << "\n";
        return 1;
      }
    }
  }
  std::cerr << "peft: unknown command '" << name << "'\n\n";
  print_help();
  return 2;
}
