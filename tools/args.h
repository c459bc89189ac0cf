// Flag parsing for the `peft` subcommands: a table of --flags that parses, checks numbers, names a
// bad flag with the closest known one, and writes the --help text from the same table.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace peft::cli {

class Args {
 public:
  // usage: the synopsis line; about: what the command does; example: one or more command lines.
  Args(std::string command, std::string usage, std::string about, std::string example);

  void flag(const std::string& name, const std::string& arg, const std::string& help, std::string* out);
  void flag(const std::string& name, const std::string& arg, const std::string& help, int64_t* out);
  void flag(const std::string& name, const std::string& arg, const std::string& help, double* out);
  void flag(const std::string& name, const std::string& arg, const std::string& help, uint64_t* out);
  void toggle(const std::string& name, const std::string& help, bool* out);
  // A positional argument (at most one): its name in the usage line and where it goes.
  void positional(const std::string& name, std::string* out);

  // Parses `args`. Returns false when --help was asked for (the help is printed). Throws
  // std::invalid_argument naming the flag or value at fault and pointing to --help.
  bool parse(const std::vector<std::string>& args);
  // Throws naming the flag when it was not given.
  void require(const std::string& name, const std::string& value) const;
  std::string help() const;

 private:
  struct Flag {
    std::string name, arg, help;
    std::function<void(const std::string&)> set;
  };
  const Flag* find(const std::string& name) const;
  std::string suggest(const std::string& name) const;
  std::string command_, usage_, about_, example_;
  std::vector<Flag> flags_;
  std::string positional_name_;
  std::string* positional_ = nullptr;
};

}  // namespace peft::cli
