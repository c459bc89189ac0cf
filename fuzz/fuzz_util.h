// Helpers shared by the libFuzzer targets: a private scratch directory (in /dev/shm when there is one)
// for parsers that read files, and the check that stops a run on a broken invariant.
#pragma once
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

namespace peft_fuzz {

// A directory of this process's own, made once and kept for the whole run.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    std::string base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    std::string templ = base + "/peft-fuzz-XXXXXX";
    if (!mkdtemp(templ.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
    return templ;
  }();
  return dir;
}

inline void write_file(const std::string& path, const void* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out) {
    std::perror(path.c_str());
    std::abort();
  }
}

// A parser's output that breaks its documented contract is a finding, like a crash.
#define PEFT_FUZZ_CHECK(cond, what)                                                   \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "fuzz invariant failed: %s (%s)\n", #cond, std::string(what).c_str()); \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)

}  // namespace peft_fuzz
