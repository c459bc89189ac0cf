// The flag table behind every `peft` subcommand and train's recipes: parsing, value checks with
// messages that name the flag, "did you mean" for typos, and --help text from the same table.
#include "peft/core/flags.h"
#include "peft/core/strings.h"

#include <algorithm>
#include <iostream>
#include <sstream>
#include <stdexcept>

namespace peft {


// ---- conversions ----

int64_t Flags::to_int64(const std::string& v) {
  size_t pos = 0;
  int64_t x = 0;
  try {
    x = std::stoll(v, &pos);
  } catch (...) {
    pos = 0;
  }
  if (pos == 0 || pos != v.size()) throw std::invalid_argument("expected an integer, got \"" + v + "\"");
  return x;
}

uint64_t Flags::to_uint64(const std::string& v) {
  size_t pos = 0;
  uint64_t x = 0;
  try {
    auto first = v.find_first_not_of(" \t");
    if (first != std::string::npos && v[first] != '-') x = std::stoull(v, &pos);
  } catch (...) {
    pos = 0;
  }
  if (pos == 0 || pos != v.size()) throw std::invalid_argument("expected a non-negative integer, got \"" + v + "\"");
  return x;
}

double Flags::to_double(const std::string& v) {
  size_t pos = 0;
  double x = 0;
  try {
    x = std::stod(v, &pos);
  } catch (...) {
    pos = 0;
  }
  if (pos == 0 || pos != v.size()) throw std::invalid_argument("expected a number, got \"" + v + "\"");
  return x;
}

bool Flags::to_bool(const std::string& v) {
  if (v.empty() || v == "true" || v == "1" || v == "yes") return true;
  if (v == "false" || v == "0" || v == "no") return false;
  throw std::invalid_argument("a switch: expected no value, true/false, yes/no or 1/0, got \"" + v + "\"");
}

std::vector<std::string> Flags::to_list(const std::string& v) {
  std::vector<std::string> out;
  std::stringstream ss(v);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

std::string Flags::normalise(std::string name) {
  for (auto& c : name)
    if (c == '_') c = '-';
  return name;
}

bool Flags::asks_for_help(const std::vector<std::string>& args) {
  return std::any_of(args.begin(), args.end(), [](const std::string& a) { return a == "--help" || a == "-h"; });
}

// ---- the table ----

Flags::Flags(std::string command, std::string usage, std::string about, std::string example)
    : command_(std::move(command)), usage_(std::move(usage)), about_(std::move(about)), example_(std::move(example)) {}

void Flags::flag(const std::string& name, const std::string& arg, const std::string& help, std::string* out) {
  flags_.push_back({name, arg, help, [out](const std::string& v) { *out = v; }, [out] { return nlohmann::json(*out); }, {}});
}

void Flags::flag(const std::string& name, const std::string& arg, const std::string& help, int64_t* out) {
  flags_.push_back({name, arg, help, [out](const std::string& v) { *out = to_int64(v); }, [out] { return nlohmann::json(*out); }, {}});
}

void Flags::flag(const std::string& name, const std::string& arg, const std::string& help, uint64_t* out) {
  flags_.push_back({name, arg, help, [out](const std::string& v) { *out = to_uint64(v); }, [out] { return nlohmann::json(*out); }, {}});
}

void Flags::flag(const std::string& name, const std::string& arg, const std::string& help, double* out) {
  flags_.push_back({name, arg, help, [out](const std::string& v) { *out = to_double(v); }, [out] { return nlohmann::json(*out); }, {}});
}

void Flags::flag(const std::string& name, const std::string& arg, const std::string& help, std::vector<std::string>* out) {
  flags_.push_back({name, arg, help, [out](const std::string& v) { *out = to_list(v); }, [out] { return nlohmann::json(*out); }, {}});
}

void Flags::flag(const std::string& name, const std::string& arg, const std::string& help, Setter set, Getter get) {
  flags_.push_back({name, arg, help, std::move(set), std::move(get), {}});
}

nlohmann::json Flags::values() const {
  nlohmann::json j = nlohmann::json::object();
  for (auto& f : flags_)
    if (f.get) j[f.name] = f.get();
  return j;
}

void Flags::toggle(const std::string& name, const std::string& help, bool* out) {
  flags_.push_back({name, "", help, [out](const std::string& v) { *out = to_bool(v); }, [out] { return nlohmann::json(*out); }, {}});
}

void Flags::positional(const std::string& name, std::string* out) { positionals_.push_back({name, out}); }

void Flags::options_note(std::string note) { options_note_ = std::move(note); }

void Flags::alias(const std::string& name, const std::string& other) {
  for (auto& f : flags_)
    if (f.name == name) {
      f.aliases.push_back(other);
      return;
    }
  throw std::logic_error("Flags::alias: no flag --" + name);
}

const Flags::Flag* Flags::find(const std::string& name) const {
  auto n = normalise(name);
  for (auto& f : flags_) {
    if (normalise(f.name) == n) return &f;
    for (auto& a : f.aliases)
      if (normalise(a) == n) return &f;
  }
  return nullptr;
}

bool Flags::has(const std::string& name) const { return find(name) != nullptr; }

std::string Flags::suggest(const std::string& name) const {
  auto n = normalise(name);
  std::string best;
  size_t best_d = 3;  // at most two edits away
  for (auto& f : flags_) {
    size_t d = edit_distance(n, normalise(f.name));
    if (d < best_d) best_d = d, best = f.name;
  }
  if (best.empty() && n.size() >= 3) {  // else the first flag the name begins ("--warmup" -> --warmup-steps)
    for (auto& f : flags_) {
      if (normalise(f.name).rfind(n, 0) == 0) {
        best = f.name;
        break;
      }
    }
  }
  return best.empty() ? "" : "--" + best;
}

std::string Flags::see() const { return "; see peft " + command_ + " --help"; }

void Flags::apply(const Flag& f, const std::string& given_name, const std::string& value) const {
  try {
    f.set(value);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("--" + given_name + ": " + e.what());
  }
}

void Flags::unknown(const std::string& name) const {
  auto s = suggest(name);
  throw std::invalid_argument("unknown option --" + name + (s.empty() ? "" : " (did you mean " + s + "?)") + see());
}

void Flags::set(const std::string& name, const std::string& value) {
  const Flag* f = find(name);
  if (!f) unknown(name);
  apply(*f, name, value);
}

bool Flags::parse(const std::vector<std::string>& args) {
  size_t positionals_seen = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::cout << help();
      return false;
    }
    if (a.size() > 1 && a[0] == '-' && a[1] != '-') {  // "-x": a flag with one dash ("-" alone is an argument)
      auto s = suggest(a.substr(1));
      throw std::invalid_argument("unknown option " + a + " (options start with --" +
                                  (s.empty() ? "" : "; did you mean " + s + "?") + ")" + see());
    }
    if (a.rfind("--", 0) != 0 || a.size() == 2) {
      if (positionals_seen < positionals_.size()) {
        *positionals_[positionals_seen++].second = a;
        continue;
      }
      if (!positionals_.empty())
        throw std::invalid_argument("unexpected argument \"" + a + "\": " + positionals_.back().first + " is already \"" +
                                    *positionals_.back().second + "\" (options start with --)" + see());
      throw std::invalid_argument("unexpected argument \"" + a + "\" (options start with --)" + see());
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
    if (!f) unknown(name);
    if (!has_value && !f->arg.empty()) {
      if (i + 1 >= args.size()) throw std::invalid_argument("--" + name + " needs a value (" + f->arg + ")" + see());
      value = args[++i];
    }
    apply(*f, name, value);
  }
  return true;
}

void Flags::require(const std::string& name, const std::string& value) const {
  if (!value.empty()) return;
  const Flag* f = find(name);
  if (f) throw std::invalid_argument("--" + name + " " + f->arg + " is required: " + f->help + see());
  throw std::invalid_argument("missing " + name + see());
}

std::string Flags::help() const {
  std::ostringstream os;
  os << "usage: " << usage_ << "\n\n" << about_ << "\n\n";
  os << "example:\n" << example_ << "\n";
  if (!flags_.empty()) {
    size_t width = 28;  // the help column; wider when a flag and its argument need it (3 spaces after the longest)
    for (auto& f : flags_) width = std::max(width, 2 + 2 + f.name.size() + (f.arg.empty() ? 0 : 1 + f.arg.size()) + 3);
    os << "\noptions" << (options_note_.empty() ? "" : " (" + options_note_ + ")") << ":\n";
    for (auto& f : flags_) {
      std::string flag = "  --" + f.name + (f.arg.empty() ? "" : " " + f.arg);
      std::string also;
      for (auto& a : f.aliases) also += (also.empty() ? " (also --" : ", --") + a;
      os << flag << std::string(width - flag.size(), ' ') << f.help << (also.empty() ? "" : also + ")") << "\n";
    }
    std::string flag = "  --help";
    os << flag << std::string(width - flag.size(), ' ') << "this text\n";
  }
  return os.str();
}

}  // namespace peft
