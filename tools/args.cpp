// The flag table behind the `peft` subcommands' options: parsing, value checks with messages that
// name the flag, "did you mean" for typos, and --help text.
#include "args.h"

#include <algorithm>
#include <iostream>
#include <sstream>
#include <stdexcept>

namespace peft::cli {

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace

Args::Args(std::string command, std::string usage, std::string about, std::string example)
    : command_(std::move(command)), usage_(std::move(usage)), about_(std::move(about)), example_(std::move(example)) {}

void Args::flag(const std::string& name, const std::string& arg, const std::string& help, std::string* out) {
  flags_.push_back({name, arg, help, [out](const std::string& v) { *out = v; }});
}

void Args::flag(const std::string& name, const std::string& arg, const std::string& help, int64_t* out) {
  flags_.push_back({name, arg, help, [name, out](const std::string& v) {
                      size_t pos = 0;
                      try {
                        *out = std::stoll(v, &pos);
                      } catch (...) {
                        pos = 0;
                      }
                      if (pos == 0 || pos != v.size())
                        throw std::invalid_argument("--" + name + ": expected an integer, got \"" + v + "\"");
                    }});
}

void Args::flag(const std::string& name, const std::string& arg, const std::string& help, uint64_t* out) {
  flags_.push_back({name, arg, help, [name, out](const std::string& v) {
                      size_t pos = 0;
                      try {
                        if (!v.empty() && v[0] != '-') *out = std::stoull(v, &pos);
                      } catch (...) {
                        pos = 0;
                      }
                      if (pos == 0 || pos != v.size())
                        throw std::invalid_argument("--" + name + ": expected a non-negative integer, got \"" + v + "\"");
                    }});
}

void Args::flag(const std::string& name, const std::string& arg, const std::string& help, double* out) {
  flags_.push_back({name, arg, help, [name, out](const std::string& v) {
                      size_t pos = 0;
                      try {
                        *out = std::stod(v, &pos);
                      } catch (...) {
                        pos = 0;
                      }
                      if (pos == 0 || pos != v.size())
                        throw std::invalid_argument("--" + name + ": expected a number, got \"" + v + "\"");
                    }});
}

void Args::toggle(const std::string& name, const std::string& help, bool* out) {
  flags_.push_back({name, "", help, [name, out](const std::string& v) {
                      if (v.empty() || v == "true" || v == "1") *out = true;
                      else if (v == "false" || v == "0") *out = false;
                      else throw std::invalid_argument("--" + name + ": a switch; expected no value, true or false, got \"" + v + "\"");
                    }});
}

void Args::positional(const std::string& name, std::string* out) {
  positional_name_ = name;
  positional_ = out;
}

const Args::Flag* Args::find(const std::string& name) const {
  for (auto& f : flags_)
    if (f.name == name) return &f;
  return nullptr;
}

std::string Args::suggest(const std::string& name) const {
  std::string best;
  size_t best_d = 3;
  for (auto& f : flags_) {
    size_t d = edit_distance(name, f.name);
    if (d < best_d) best_d = d, best = f.name;
  }
  return best.empty() ? "" : " (did you mean --" + best + "?)";
}

bool Args::parse(const std::vector<std::string>& args) {
  const std::string see = "; see peft " + command_ + " --help";
  bool positional_seen = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::cout << help();
      return false;
    }
    if (a.rfind("--", 0) != 0 || a.size() == 2) {
      if (positional_ && !positional_seen) {
        *positional_ = a;
        positional_seen = true;
        continue;
      }
      throw std::invalid_argument("unexpected argument \"" + a + "\" (options start with --)" + see);
    }
    std::string name = a.substr(2), value;
    bool has_value = false;
    auto eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    const Flag* f = find(name);
    if (!f) throw std::invalid_argument("unknown option --" + name + suggest(name) + see);
    if (!has_value && !f->arg.empty()) {
      if (i + 1 >= args.size()) throw std::invalid_argument("--" + name + " needs a value (" + f->arg + ")" + see);
      value = args[++i];
    }
    f->set(value);
  }
  return true;
}

void Args::require(const std::string& name, const std::string& value) const {
  if (!value.empty()) return;
  const Flag* f = find(name);
  if (f) throw std::invalid_argument("--" + name + " " + f->arg + " is required: " + f->help + "; see peft " + command_ + " --help");
  throw std::invalid_argument("missing " + name + "; see peft " + command_ + " --help");
}

std::string Args::help() const {
  std::ostringstream os;
  os << "usage: " << usage_ << "\n\n" << about_ << "\n\n";
  os << "example:\n" << example_ << "\n";
  if (!flags_.empty()) {
    os << "\noptions:\n";
    for (auto& f : flags_) {
      std::string flag = "  --" + f.name + (f.arg.empty() ? "" : " " + f.arg);
      os << flag << std::string(flag.size() < 28 ? 28 - flag.size() : 1, ' ') << f.help << "\n";
    }
    os << "  --help                    this text\n";
  }
  return os.str();
}

}  // namespace peft::cli
