// Subcommand registry of the `peft` program: each tools/cmd_*.cpp registers one subcommand
// with PEFT_COMMAND, so adding a subcommand touches only its own file.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace peft::cli {

using CommandFn = std::function<int(const std::vector<std::string>& args)>;

struct Command {
  std::string name;
  std::string summary;  // one line for `peft --help`
  CommandFn run;        // receives the arguments after the subcommand name; returns the exit code
};

std::vector<Command>& commands();

struct Registrar {
  Registrar(std::string name, std::string summary, CommandFn fn) {
    commands().push_back({std::move(name), std::move(summary), std::move(fn)});
  }
};

}  // namespace peft::cli

#define PEFT_COMMAND(name, summary, fn) \
  static ::peft::cli::Registrar peft_command_registrar_##fn(name, summary, fn)
