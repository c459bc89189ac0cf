// The one flag parser of every `peft` subcommand (and of train's JSON recipes): a table of --flags
// bound to variables that parses, checks values, names a mistyped flag's closest match, and writes --help.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace peft {

// A table of flags. Each entry binds a name ("batch-size"; '_' and '-' are the same letter when
// matching, so --init_r and --init-r name one flag) to a variable or a setter. Values come as
// `--name value`, `--name=value`, or from set(name, value) (a recipe file). Errors are
// std::invalid_argument naming the flag and the value at fault.
class Flags {
 public:
  using Setter = std::function<void(const std::string& value)>;
  using Getter = std::function<nlohmann::json()>;

  // command: the subcommand ("eval"); usage: the synopsis line(s) after "usage: "; about: what the
  // command does; example: one or more indented command lines.
  Flags(std::string command, std::string usage, std::string about, std::string example);

  // Flags with a value (`arg` names it in --help: "DIR", "N").
  void flag(const std::string& name, const std::string& arg, const std::string& help, std::string* out);
  void flag(const std::string& name, const std::string& arg, const std::string& help, int64_t* out);
  void flag(const std::string& name, const std::string& arg, const std::string& help, uint64_t* out);
  void flag(const std::string& name, const std::string& arg, const std::string& help, double* out);
  // A comma-separated list; empty items are dropped.
  void flag(const std::string& name, const std::string& arg, const std::string& help, std::vector<std::string>* out);
  // Anything else: `set` receives the value and throws std::invalid_argument (without the flag's
  // name, which is prepended) when it is bad; the to_* helpers below convert with those messages.
  // `get`, when given, reads the value back for values().
  void flag(const std::string& name, const std::string& arg, const std::string& help, Setter set, Getter get = {});
  // A switch: `--name` alone sets true; `--name=V` (or a recipe value) takes true/false, yes/no, 1/0.
  void toggle(const std::string& name, const std::string& help, bool* out);
  // Another spelling of the flag `name`, defined before (transformers' "learning_rate" for "lr"): it
  // sets the same value, in flags and recipe files; --help lists it once, after the flag's help.
  void alias(const std::string& name, const std::string& other);
  // A positional argument, in the order given: its name in messages ("DIR") and where it goes.
  void positional(const std::string& name, std::string* out);
  // Shown in --help as "options (NOTE):".
  void options_note(std::string note);

  // Parses `args`. Returns false when --help or -h was given (the help is printed on stdout).
  // Throws std::invalid_argument for an unknown flag (with the closest name), a missing or bad
  // value, or an unexpected argument; messages end by pointing to `peft COMMAND --help`.
  bool parse(const std::vector<std::string>& args);
  // Sets one flag by name, as `--name=value` would (for recipe files). Throws like parse.
  void set(const std::string& name, const std::string& value);
  bool has(const std::string& name) const;
  // The known flag closest to `name` ("--lr-scheduler" for "lr-schedular"), or "" when none is close.
  std::string suggest(const std::string& name) const;
  // Throws naming the flag (or the positional argument) when `value` is empty.
  void require(const std::string& name, const std::string& value) const;
  std::string help() const;
  // The current value of every flag that can be read back (all but setters given without a getter),
  // by name: the one list of a command's settings (e.g. what a checkpoint records of its run).
  nlohmann::json values() const;

  // Whether --help or -h is among `args` (for callers that print help before parsing).
  static bool asks_for_help(const std::vector<std::string>& args);
  // '_' -> '-': the form flag names are compared in.
  static std::string normalise(std::string name);

  // Value conversions; they throw std::invalid_argument("expected ..., got \"V\"").
  static int64_t to_int64(const std::string& v);
  static uint64_t to_uint64(const std::string& v);
  static double to_double(const std::string& v);
  static bool to_bool(const std::string& v);
  static std::vector<std::string> to_list(const std::string& v);

 private:
  struct Flag {
    std::string name, arg, help;
    Setter set;
    Getter get;
    std::vector<std::string> aliases;
  };
  const Flag* find(const std::string& name) const;
  [[noreturn]] void unknown(const std::string& name) const;
  void apply(const Flag& f, const std::string& given_name, const std::string& value) const;
  std::string see() const;
  std::string command_, usage_, about_, example_, options_note_;
  std::vector<Flag> flags_;
  std::vector<std::pair<std::string, std::string*>> positionals_;  // name in messages, destination
};

}  // namespace peft
