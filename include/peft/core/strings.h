// String helpers every layer uses (C++17 has no std::string::starts_with/ends_with).
// Header-only, so the torch-free text and data layers use them too.
#pragma once

#include <string_view>

namespace peft {

inline bool starts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

inline bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace peft
